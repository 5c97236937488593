"""The pose add-on end to end: poses in the training batches, bad pose files, learning and determinism."""

import os
import shutil

import jax
import numpy as np
import pytest

from configs import pose as pose_config
from hal_jax import errors
from hal_jax.tasks import segmentation as segmentation_task
from hal_jax import main
from hal_jax import train
from hal_jax.data import formats
from hal_jax.data import segmentation_formats
from hal_jax.data import poses
from hal_jax.data import synthetic


def _config(data_dir="", arg="test", **overrides):
  config = pose_config.get_config(arg)
  with config.unlocked():
    config.update(data_dir=data_dir, progress=False, tensorboard=False, **overrides)
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return synthetic.generate(tmp_path_factory.mktemp("pose") / "data", synthetic.PRESETS["pose_test"])


def test_training_batches_carry_aligned_poses(data_dir, tmp_path):
  data = segmentation_task.load(_config(data_dir), str(tmp_path))
  pipeline = data.train_pipeline
  batch = pipeline.batch(1, 0)
  b, t = batch["frame_mask"].shape
  assert batch["pose_keypoints"].shape == (b, t, 17, 2) and batch["pose_scores"].shape == (b, t, 17)
  assert set(pipeline.batch_spec()) == set(batch)
  assert not batch["pose_scores"][~batch["frame_mask"]].any()
  has_pose = batch["pose_scores"].max(-1) > 0
  # Sample rate 2, a pose every 5 raw frames: a step has one when its frame is within 1 of a pose frame (3 in 5).
  assert 0.4 < has_pose[batch["frame_mask"]].mean() < 0.8
  row = 0
  video = int(batch["video_index"][row])
  track = poses.read_pose_file(os.path.join(data_dir, "poses", f"{data.train.videos[video].name}.npz"))
  frames = pipeline.feature_rows(1, video)
  expected, _ = poses.align_to_steps(track, frames, pipeline.sample_rate)
  np.testing.assert_array_equal(batch["pose_keypoints"][row, :len(frames)], expected)
  assert "pose_keypoints" not in data.test_pipeline.batch(0, 0)  # inference is RGB only


def _corrupt(path, case):
  with np.load(path) as stored:
    arrays = dict(stored)
  if case == "missing":
    os.remove(path)
    return "no pose file"
  if case == "nan":
    arrays["keypoints"][2, 3, 0] = np.nan
    message = "NaN or inf"
  elif case == "unsorted":
    arrays["frame_index"][[1, 2]] = arrays["frame_index"][[2, 1]]
    message = "strictly increasing"
  elif case == "outside":
    arrays["frame_index"][-1] = 10**6
    message = "must lie in"
  else:  # K different from the layout
    arrays["keypoints"], arrays["scores"] = arrays["keypoints"][:, :16], arrays["scores"][:, :16]
    message = "16 keypoints per pose, but layout 'coco17' has 17"
  np.savez(path, **arrays)
  return message


@pytest.mark.parametrize("case", ["missing", "nan", "unsorted", "outside", "keypoints"])
def test_bad_pose_file_is_one_error_naming_it_before_training(data_dir, tmp_path, capsys, case):
  copy = str(tmp_path / "data")
  shutil.copytree(data_dir, copy)
  video = formats.read_split_list(segmentation_formats.split_path(copy, "train", 1))[1]
  path = os.path.join(copy, "poses", f"{video}.npz")
  message = _corrupt(path, case)
  with pytest.raises(errors.DataError, match=message) as info:
    segmentation_task.load(_config(copy), str(tmp_path / "work"))
  assert info.value.where == path
  if case == "nan":  # Through the command line once: one line, exit status 2, nothing trained.
    workdir = tmp_path / "cli"
    with pytest.raises(SystemExit) as exit_info:
      main.execute(_config(copy), str(workdir), "train")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: {info.value.what}"]
    assert not os.path.exists(workdir / "checkpoints")


def test_baseline_needs_no_pose_files(data_dir, tmp_path):
  copy = str(tmp_path / "data")
  shutil.copytree(data_dir, copy)
  shutil.rmtree(os.path.join(copy, "poses"))
  data = segmentation_task.load(_config(copy, arg="test,loss=none"), str(tmp_path / "work"))
  assert "pose_scores" not in data.train_pipeline.batch(0, 0)


def test_a_host_reading_poses_gets_them_in_every_split(data_dir, tmp_path):
  data = segmentation_task.load(_config(data_dir, arg="test,loss=none,input=concat"), str(tmp_path / "work"))
  for pipeline in (data.train_pipeline, data.test_pipeline, data.train_eval_pipeline):
    assert pipeline.batch(0, 0)["pose_scores"].max() > 0
  copy = str(tmp_path / "data")
  shutil.copytree(data_dir, copy)
  video = formats.read_split_list(segmentation_formats.split_path(copy, "test", 1))[0]
  os.remove(os.path.join(copy, "poses", f"{video}.npz"))
  with pytest.raises(errors.DataError, match="no pose file"):  # test videos need poses too
    segmentation_task.load(_config(copy, arg="test,loss=none,input=concat"), str(tmp_path / "work2"))
  segmentation_task.load(_config(copy), str(tmp_path / "work3"))  # the add-on alone reads none


def _majority_accuracy(data_dir):
  train_split = segmentation_formats.load_mstcn_split(data_dir, "train")
  test_split = segmentation_formats.load_mstcn_split(data_dir, "test")
  majority = np.bincount(np.concatenate([v.labels for v in train_split.videos])).argmax()
  return 100 * np.mean(np.concatenate([v.labels for v in test_split.videos]) == majority)


@pytest.mark.slow
def test_pose_run_learns_and_two_runs_are_bitwise_equal(data_dir, tmp_path):
  # 3 steps per epoch, logs every 2 steps: a logging window spans the stage switch at step 6 + 3.
  config = _config(data_dir, arg="test,mode=online", stage_epoch=3, eval_every_epochs=4)
  first = train.train_and_evaluate(config, str(tmp_path / "a"))
  second = train.train_and_evaluate(config, str(tmp_path / "b"))
  for a, b in zip(jax.tree.leaves(first.state.params), jax.tree.leaves(second.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert first.eval_metrics == {**second.eval_metrics, "seconds": first.eval_metrics["seconds"]}
  majority_accuracy = _majority_accuracy(data_dir)
  assert first.eval_metrics["mof"] > majority_accuracy + 5, (first.eval_metrics["mof"], majority_accuracy)
