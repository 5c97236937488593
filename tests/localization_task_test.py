"""Tests for hal_jax.tasks.localization: loading (with synthetic generation), scoring, prediction files, boundary F1."""

import dataclasses
import os

import numpy as np
import pytest

from configs import ahlm as ahlm_config
from hal_jax import errors
from hal_jax import evaluate
from hal_jax import peer_formats
from hal_jax.tasks import common
from hal_jax.tasks import localization as localization_task
from tests.peer_formats_test import activitynet_parse


def make_config(**overrides):
  config = ahlm_config.get_config("test")
  config.unlock()
  config.update(overrides)
  config.lock()
  return config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return localization_task.load(make_config(), str(tmp_path_factory.mktemp("workdir")))


def oracle(data):
  """A postprocess that returns the ground truth (score 1) and the true boundaries of every real row."""
  def postprocess(batch, outputs):
    del outputs
    results = []
    for row, real in enumerate(batch["batch_mask"]):
      if not real:
        results.append(None)
        continue
      video = data.test.videos[int(batch["video_index"][row])]
      snippets = video.segments * video.feature_fps
      detections = np.column_stack([video.labels, np.ones(len(video.labels)), snippets])
      boundaries = localization_task.true_boundaries(video)
      results.append({"detections": detections, "change_points": boundaries,
                      "raw_change_points": np.arange(1, len(video.features))})
    return results
  return postprocess


def pairs(data):
  pipeline = data.test_pipeline
  return [(pipeline.batch(0, i), {}) for i in range(pipeline.num_batches_per_epoch)]


def test_load_generates_the_synthetic_preset_and_builds_both_pipelines(data):
  assert os.path.isfile(os.path.join(data.data_dir, "gt.json"))
  assert data.label_map.num_classes == 4  # synthetic preset "thumos_test"
  assert len(data.train.videos) == 8 and len(data.test.videos) == 4
  assert data.train_pipeline.train and not data.test_pipeline.train and not data.train_eval_pipeline.train
  assert data.train_eval_pipeline.num_videos == 8
  assert data.has_true_latents  # the synthetic generator stores latents/<video>.npz
  assert data.train_pipeline.batch(0, 0)["features"].shape == (4, 48, 16)
  assert data.tiou_thresholds == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
  assert callable(data.postprocess)


def test_oracle_detections_score_100_and_oracle_change_points_f1_100(data):
  scores = dataclasses.replace(data, postprocess=oracle(data)).score(pairs(data))
  assert scores["average_map"] == pytest.approx(100.0)
  assert scores["map@0.70"] == pytest.approx(100.0)
  assert scores["change_point_f1"] == pytest.approx(100.0)
  # Every snippet as a change point: full recall, low precision.
  assert scores["change_point_recall_raw"] == pytest.approx(100.0)
  assert scores["change_point_precision_raw"] < 50.0
  assert scores["change_points_per_100_raw"] > 90.0


def test_written_predictions_score_the_same_through_the_evaluate_cli_code(data, tmp_path):
  oracle_data = dataclasses.replace(data, postprocess=oracle(data))
  assert oracle_data.write_predictions(pairs(data), str(tmp_path)) == 4
  path = str(tmp_path / localization_task.DETECTIONS_FILE)
  from_file = evaluate.evaluate_localization_files(os.path.join(data.data_dir, "gt.json"), path, subset="test")
  assert from_file["average_map"] == pytest.approx(100.0)


def test_detections_are_converted_to_seconds_and_clipped(data):
  video = data.test.videos[0]

  def postprocess(batch, outputs):
    del outputs
    return [{"detections": np.array([[1, 0.5, 2, 6], [0, 0.1, 0, 10 ** 6]])} if real else None
            for real in batch["batch_mask"]]

  detections, results = dataclasses.replace(data, postprocess=postprocess).localize(pairs(data))
  first = detections[video.name]
  assert first[0].label == data.label_map.names[1] and first[0].score == 0.5
  assert first[0].segment == (2 / video.feature_fps, 6 / video.feature_fps)
  assert first[1].segment == (0.0, video.duration)
  assert set(results) == {v.name for v in data.test.videos}
  scores = dataclasses.replace(data, postprocess=postprocess).score(pairs(data))
  assert "change_point_f1" not in scores and 0.0 <= scores["average_map"] < 100.0


def test_a_missing_test_video_is_an_error(data):
  (batch, outputs), = pairs(data)
  batch = dict(batch, batch_mask=np.array([True, False, True, True]))
  with pytest.raises(ValueError, match="no prediction for 1 videos of subset .test."):
    dataclasses.replace(data, postprocess=oracle(data)).score([(batch, outputs)])


def test_boundary_matches_are_one_to_one_within_the_tolerance():
  assert localization_task.boundary_matches(np.array([10, 11, 30]), np.array([10, 33]), 2) == 1
  assert localization_task.boundary_matches(np.array([10, 11, 31]), np.array([10, 33]), 2) == 2
  # Greedy by distance: 12 takes 13 (distance 1) so 10 can take 9.
  assert localization_task.boundary_matches(np.array([10, 12]), np.array([9, 13]), 2) == 2
  assert localization_task.boundary_matches(np.zeros([0], int), np.array([4]), 2) == 0


def test_true_boundaries_are_annotated_starts_and_ends_inside_the_video(data):
  video = data.test.videos[0]
  boundaries = localization_task.true_boundaries(video)
  expected = {round(x * video.feature_fps) for x in video.segments.reshape(-1)} - {0, len(video.features)}
  assert set(boundaries) == expected and np.all(np.diff(boundaries) > 0)


def test_bad_configs_are_reported_before_training(tmp_path):
  with pytest.raises(errors.ConfigError, match="data_dir"):
    localization_task.load(make_config(synthetic_preset=""), str(tmp_path))
  with pytest.raises(errors.ConfigError, match="synthetic_preset"):
    localization_task.load(make_config(synthetic_preset="test"), str(tmp_path))  # a segmentation preset
  with pytest.raises(errors.DataError, match="does not exist"):
    localization_task.load(make_config(data_dir=str(tmp_path / "missing")), str(tmp_path))


def _split(count):
  from hal_jax.data import localization_formats  # pylint: disable=import-outside-toplevel
  videos = tuple(localization_formats.LocalizationVideo(f"v{i}", "train", 1.0, 1.0, np.zeros([1, 1], np.float32),
                                                     np.zeros([0, 2]), np.zeros([0], np.int32)) for i in range(count))
  return localization_formats.LocalizationDataset("root", None, videos, None)


def test_hold_out_validation_is_seeded_disjoint_and_keeps_order():
  train, validation = common.hold_out_validation(_split(20), 0.25, seed=3)
  names = [v.name for v in train.videos]
  held = [v.name for v in validation.videos]
  assert len(held) == 5 and len(names) == 15 and not set(names) & set(held)
  assert names == sorted(names, key=lambda n: int(n[1:])) and held == sorted(held, key=lambda n: int(n[1:]))
  again = common.hold_out_validation(_split(20), 0.25, seed=3)[1]
  other = common.hold_out_validation(_split(20), 0.25, seed=4)[1]
  assert [v.name for v in again.videos] == held
  assert [v.name for v in other.videos] != held
  split = _split(20)
  kept, none = common.hold_out_validation(split, 0.0, seed=3)
  assert kept is split and none is None


@pytest.mark.parametrize("fraction, fragment", [(1.0, "must be in [0, 1)"), (-0.1, "must be in [0, 1)"),
                                                (0.9, "leaves none to train on")])
def test_hold_out_validation_rejects_impossible_fractions(fraction, fragment):
  with pytest.raises(errors.ConfigError, match=fragment.replace("[", r"\[").replace(")", r"\)")):
    common.hold_out_validation(_split(2), fraction, seed=0)


def test_coarse_scores_relabel_detections_and_ground_truth(data):
  """Oracle fine detections score 100 at the coarse level too; detections with the wrong fine class but the right
  coarse class score 0 at the fine level and 100 at the coarse level."""
  hierarchy = {0: 0, 1: 0, 2: 1, 3: 1}  # Four synthetic classes under two coarse ones.
  coarse = dataclasses.replace(
      data, train=dataclasses.replace(data.train, fine_to_coarse=hierarchy),
      coarse_ground_truth=localization_task.coarse_ground_truth(data.ground_truth, data.label_map, hierarchy))
  scores = dataclasses.replace(coarse, postprocess=oracle(data)).score(pairs(data))
  assert scores["average_map"] == pytest.approx(100.0) and scores["coarse_average_map"] == pytest.approx(100.0)

  sibling = {0: 1, 1: 0, 2: 3, 3: 2}  # The other fine class of the same coarse class.
  def swapped(batch, outputs):
    results = oracle(data)(batch, outputs)
    for result in results:
      if result is not None:
        result["detections"][:, 0] = [sibling[int(c)] for c in result["detections"][:, 0]]
    return results
  scores = dataclasses.replace(coarse, postprocess=swapped).score(pairs(data))
  assert scores["average_map"] == pytest.approx(0.0) and scores["coarse_average_map"] == pytest.approx(100.0)


def test_coarse_names_follow_the_hierarchy(data):
  names = localization_task.coarse_names(data.label_map, {0: 1, 1: 0, 2: 1, 3: 0})
  assert [names[n] for n in data.label_map.names] == ["coarse_1", "coarse_0", "coarse_1", "coarse_0"]


def test_peer_format_predictions_are_read_by_the_activitynet_evaluator(data, tmp_path):
  oracle_data = dataclasses.replace(data, postprocess=oracle(data))
  assert oracle_data.write_predictions(pairs(data), str(tmp_path), peer_formats=True) == 4
  ground_truth, prediction = activitynet_parse(os.path.join(data.data_dir, "gt.json"),
                                               tmp_path / peer_formats.ACTIVITYNET_FILE, data.test_subset)
  assert sorted(p[:4] for p in prediction) == sorted(ground_truth)  # The oracle's detections are the annotations.
  assert {p[0] for p in prediction} == {v.name for v in data.test.videos}
