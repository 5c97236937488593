"""Tests of the synthetic hierarchical data generator (hal_jax/data/synthetic*.py)."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hal_jax.data import localization_formats
from hal_jax.data import formats
from hal_jax.data import segmentation_formats
from hal_jax.data import synthetic
from hal_jax.data import synthetic_localization
from hal_jax.data import synthetic_process
from hal_jax.data import synthetic_segmentation
from hal_jax.errors import ConfigError, DataError

TEST = synthetic.PRESETS["test"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _with_process(config, **changes):
  return dataclasses.replace(config, process=dataclasses.replace(config.process, **changes))


def _files(root):
  """Relative path -> bytes of every file under root."""
  found = {}
  for directory, _, names in os.walk(root):
    for name in names:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, root)] = f.read()
  return found


def _latents(root, video):
  with np.load(os.path.join(root, "latents", f"{video}.npz")) as data:
    return {key: data[key] for key in data.files}


def test_same_seed_writes_the_same_bytes_and_another_seed_differs(tmp_path):
  first = _files(synthetic.generate(tmp_path / "a", TEST))
  second = _files(synthetic.generate(tmp_path / "b", TEST))
  assert first.keys() == second.keys()
  assert all(first[k] == second[k] for k in first)
  other = _files(synthetic.generate(tmp_path / "c", dataclasses.replace(TEST, seed=1)))
  features = [k for k in first if k.startswith("features/")]
  assert features and not any(first[k] == other.get(k) for k in features)


def test_a_video_does_not_depend_on_how_many_are_generated(tmp_path):
  few = synthetic.generate(tmp_path / "few", dataclasses.replace(TEST, num_train=3, num_test=2))
  many = synthetic.generate(tmp_path / "many", dataclasses.replace(TEST, num_train=7, num_test=2))
  names = formats.read_split_list(segmentation_formats.split_path(few, "train", 1))
  assert names == formats.read_split_list(segmentation_formats.split_path(many, "train", 1))[:3]
  for name in names:
    for sub in ("groundTruth", "transcripts"):
      assert formats.read_text(os.path.join(few, sub, f"{name}.txt")) == formats.read_text(
          os.path.join(many, sub, f"{name}.txt"))
    a, b = _latents(few, name), _latents(many, name)
    np.testing.assert_array_equal(a["action"], b["action"])
    np.testing.assert_array_equal(a["burst"], b["burst"])
    # Matrix products over a different batch of videos may round differently in the last bit, nothing more.
    np.testing.assert_allclose(a["visual"], b["visual"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(formats.read_features(os.path.join(few, "features", f"{name}.npy")),
                               formats.read_features(os.path.join(many, "features", f"{name}.npy")),
                               rtol=1e-5, atol=1e-5)


def test_segmentation_output_reads_back_with_the_format_readers(tmp_path):
  root = synthetic.generate(tmp_path / "data", TEST)
  settings = json.loads(formats.read_text(os.path.join(root, "synthetic.json")))
  assert settings["kind"] == "segmentation"
  assert settings["feature_layout"] == "DT"
  assert settings["background"] == "background"
  assert settings["config"]["seed"] == TEST.seed
  label_map = formats.read_mapping(os.path.join(root, "mapping.txt"))
  assert label_map.names[0] == "background" and label_map.num_classes == TEST.num_actions + 1
  for split, count in (("train", TEST.num_train), ("test", TEST.num_test)):
    dataset = segmentation_formats.load_mstcn_split(root, split, feature_layout=settings["feature_layout"],
                                       feature_dim=settings["feature_dim"])
    assert len(dataset.videos) == count
    for video in dataset.videos:
      latents = _latents(root, video.name)
      length = video.features.shape[0]
      assert latents["action"].shape == (length, TEST.process.action_dim)
      assert latents["visual"].shape == (length, TEST.process.visual_dim)
      assert latents["action"].dtype == latents["visual"].dtype == np.float32
      np.testing.assert_array_equal(video.transcript, segmentation_formats.collapse_runs(video.labels))
  # The DT layout is really [D, T] on disk.
  name = dataset.videos[0].name
  stored = np.load(os.path.join(root, "features", f"{name}.npy"))
  assert stored.shape == (TEST.process.feature_dim, dataset.videos[0].features.shape[0])


def test_action_latent_is_constant_within_segments_up_to_the_pseudo_state_drift(tmp_path):
  root = synthetic.generate(tmp_path / "data", TEST)
  process = synthetic_segmentation.build_world(TEST).process
  drift = TEST.process.drift
  dataset = segmentation_formats.load_mstcn_split(root, "train")
  for video in dataset.videos:
    action = _latents(root, video.name)["action"].astype(np.float64)
    segments = segmentation_formats.labels_to_segments(video.labels)
    for label, start, end in segments:
      inside = action[start:end]
      if end - start >= 3:  # A straight line: second differences vanish.
        np.testing.assert_allclose(np.diff(inside, 2, axis=0), 0, atol=1e-5)
      if end - start >= 2:  # Over the segment it moves by exactly δ along its class direction.
        np.testing.assert_allclose(inside[-1] - inside[0], drift * process.drift_directions[label], atol=1e-5)
    for (_, _, end), _ in zip(segments[:-1], segments[1:]):
      # At a boundary it jumps far more than one drift step.
      assert np.linalg.norm(action[end] - action[end - 1]) > 10 * drift / (end - 1)


def test_visual_latent_follows_its_lagged_parents_and_the_action_latent(tmp_path):
  quiet = _with_process(TEST, visual_noise=0.0, style_noise=0.0, burst_rate=0.0, observation_noise=0.0)
  root = synthetic.generate(tmp_path / "data", quiet)
  process = synthetic_segmentation.build_world(quiet).process
  lags = quiet.process.lags
  leak = np.eye(quiet.process.visual_dim) - process.transitions.sum(axis=0)
  for name in formats.read_split_list(segmentation_formats.split_path(root, "train", 1)):
    latents = _latents(root, name)
    action, visual = latents["action"].astype(np.float64), latents["visual"].astype(np.float64)
    predicted = (action @ process.emission.T) @ leak.T
    for lag in range(1, lags + 1):
      predicted[lags:] += visual[lags - lag:-lag] @ process.transitions[lag - 1].T
    np.testing.assert_allclose(visual[lags:], predicted[lags:], atol=1e-4)
    # Without observation noise the features are g(v) and g inverts.
    features = formats.read_features(os.path.join(root, "features", f"{name}.npy"))
    np.testing.assert_allclose(synthetic_process.unmix(process, features), visual, atol=1e-3)


def test_the_action_latent_explains_most_of_the_visual_latent(tmp_path):
  root = synthetic.generate(tmp_path / "data", TEST)
  names = formats.read_split_list(segmentation_formats.split_path(root, "train", 1))
  latents = [_latents(root, name) for name in names]
  action = np.concatenate([l["action"] for l in latents])
  visual = np.concatenate([l["visual"] for l in latents])
  design = np.c_[action, np.ones(len(action))]
  residual = visual - design @ np.linalg.lstsq(design, visual, rcond=None)[0]
  explained = 1 - residual.var() / visual.var()
  shuffled = np.random.default_rng(0).permutation(action)  # Same marginal, no link to the frames.
  design = np.c_[shuffled, np.ones(len(action))]
  residual = visual - design @ np.linalg.lstsq(design, visual, rcond=None)[0]
  assert explained > 0.6
  assert 1 - residual.var() / visual.var() < 0.2


def test_bursts_lie_strictly_inside_segments(tmp_path):
  root = synthetic.generate(tmp_path / "data", _with_process(TEST, burst_rate=0.05))
  total = 0
  for video in segmentation_formats.load_mstcn_split(root, "train").videos:
    burst = _latents(root, video.name)["burst"]
    total += burst.sum()
    for _, start, end in segmentation_formats.labels_to_segments(video.labels):
      assert not burst[start] and not burst[end - 1]
  assert total > 0


def test_mixing_is_invertible():
  process = synthetic_segmentation.build_world(synthetic.PRESETS["default"]).process
  visual = 2 * np.random.default_rng(0).standard_normal([50, process.config.visual_dim])
  np.testing.assert_allclose(synthetic_process.unmix(process, synthetic_process.mix(process, visual)), visual,
                             atol=1e-4)


def test_calibration_leaves_room_between_majority_and_perfect(tmp_path):
  calibration = synthetic.calibrate(synthetic.generate(tmp_path / "data", TEST))
  assert calibration.majority_accuracy < 0.3
  assert calibration.majority_accuracy + 0.3 < calibration.probe_accuracy < 0.97
  assert calibration.burst_accuracy < calibration.probe_accuracy  # Bursts fool a frame-wise classifier.
  assert calibration.segments_ratio > 1.0  # ...which over-segments.


def _write_source(root):
  """A tiny real-annotation folder in the third_party layout."""
  os.makedirs(os.path.join(root, "splits"))
  formats.write_mapping(os.path.join(root, "mapping.txt"), formats.LabelMap(("SIL", "cut", "pour")))
  segmentation_formats.write_segments_tsv(os.path.join(root, "segments.tsv"), {
      "real_a": [(0, 10, "SIL"), (10, 50, "cut"), (50, 90, "pour"), (90, 100, "SIL")],
      "real_b": [(0, 30, "pour"), (30, 40, "cut")],
      "real_c": [(0, 20, "cut"), (20, 60, "SIL")],
  })
  formats.write_split_list(os.path.join(root, "splits", "split1.train"), ["real_a", "real_b", "unannotated"])
  formats.write_split_list(os.path.join(root, "splits", "split1.test"), ["real_c"])


def test_source_mode_copies_real_transcripts_and_scaled_durations(tmp_path):
  _write_source(tmp_path / "toy")
  config = dataclasses.replace(TEST, source="toy", source_root=str(tmp_path), num_train=None, num_test=None,
                               background="SIL", length_scale=0.5)
  root = synthetic.generate(tmp_path / "data", config)
  train = segmentation_formats.load_mstcn_split(root, "train")
  assert [v.name for v in train.videos] == ["train0000_real_a", "train0001_real_b"]  # Unannotated ones skipped.
  assert train.label_map.names == ("SIL", "cut", "pour")
  first = train.videos[0]
  assert segmentation_formats.labels_to_segments(first.labels) == [(0, 0, 5), (1, 5, 25), (2, 25, 45), (0, 45, 50)]
  assert json.loads(formats.read_text(os.path.join(root, "synthetic.json")))["background"] == "SIL"
  sampled = synthetic.generate(tmp_path / "sampled", dataclasses.replace(config, num_train=5, num_test=2))
  for video in segmentation_formats.load_mstcn_split(sampled, "train").videos:
    assert video.name.split("_", 1)[1] in ("real_a", "real_b")
  with pytest.raises(DataError, match="not in mapping.txt"):
    synthetic_segmentation.build_world(dataclasses.replace(config, background="background"))
  with pytest.raises(DataError, match="not found"):
    synthetic_segmentation.build_world(dataclasses.replace(config, source="missing"))


def test_real_source_presets_mirror_their_split_lists():
  for name, real_train in (("gtea", 14), ("50salads", 40), ("breakfast", 1456)):
    world = synthetic_segmentation.build_world(synthetic.PRESETS[name])
    assert synthetic_segmentation.num_videos(world, "train") == real_train
    assert world.background is None or world.label_map.names[world.background] in ("SIL", "background")


@pytest.mark.parametrize("preset", ["thumos_test", "finegym_test"])
def test_localization_output_reads_back_and_segments_lie_within_durations(tmp_path, preset):
  config = synthetic.PRESETS[preset]
  root = synthetic.generate(tmp_path / "data", config)
  ground_truth = localization_formats.read_detection_ground_truth(os.path.join(root, "gt.json"), strict_bounds=True)
  assert len(ground_truth) == config.num_train + config.num_test
  settings = json.loads(formats.read_text(os.path.join(root, "synthetic.json")))
  assert settings["kind"] == "localization" and settings["feature_layout"] == "TD"
  for subset in ("train", "test"):
    dataset = localization_formats.load_localization_split(root, subset, feature_dim=config.process.feature_dim,
                                                        strict_bounds=True)
    for video in dataset.videos:
      assert len(video.labels) >= 1
      assert np.all(video.segments[:, 0] >= 0) and np.all(video.segments[:, 1] <= video.duration)
      assert np.all(video.segments[:, 0] < video.segments[:, 1])
      assert np.all(video.segments[1:, 0] > video.segments[:-1, 1])  # Separated by background.
      labels = _latents(root, video.name)["labels"]
      steps = np.round(video.segments * video.feature_fps).astype(int)
      expected = np.full(video.features.shape[0], -1)
      for label, (start, end) in zip(video.labels, steps):
        expected[start:end] = label
      np.testing.assert_array_equal(labels, expected)
      if config.num_coarse:
        assert len({dataset.fine_to_coarse[int(label)] for label in video.labels}) == 1  # One coarse event.
  if config.num_coarse:
    coarse = formats.read_mapping(os.path.join(root, "coarse_classes.txt"))
    assert coarse.num_classes == config.num_coarse == len(set(dataset.fine_to_coarse.values()))


def test_refuses_a_non_empty_directory_unless_overwrite(tmp_path):
  out = tmp_path / "data"
  out.mkdir()
  (out / "keep.txt").write_text("x")
  with pytest.raises(DataError) as error:
    synthetic.generate(out, TEST)
  assert error.value.where == str(out)
  assert (out / "keep.txt").exists()
  synthetic.generate(out, TEST, overwrite=True)
  assert not (out / "keep.txt").exists() and (out / "synthetic.json").exists()
  assert sorted(os.listdir(tmp_path)) == ["data"]  # No staging or retired directories left behind.


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
  def fail(root, world):
    del world
    os.makedirs(os.path.join(root, "features"))
    raise RuntimeError("disk full")
  monkeypatch.setattr(synthetic_segmentation, "write_dataset", fail)
  with pytest.raises(RuntimeError):
    synthetic.generate(tmp_path / "data", TEST)
  assert os.listdir(tmp_path) == []


def test_ensure_generated_reuses_the_same_config_and_rejects_another(tmp_path):
  out = synthetic.ensure_generated(tmp_path / "data", TEST)
  stamp = os.path.getmtime(os.path.join(out, "synthetic.json"))
  assert synthetic.ensure_generated(out, TEST) == out
  assert os.path.getmtime(os.path.join(out, "synthetic.json")) == stamp
  with pytest.raises(DataError, match="seed"):
    synthetic.ensure_generated(out, dataclasses.replace(TEST, seed=5))


def test_impossible_settings_raise_config_errors_naming_the_key():
  with pytest.raises(ConfigError, match="process.feature_dim"):
    synthetic_segmentation.build_world(_with_process(TEST, feature_dim=4))
  with pytest.raises(ConfigError, match="num_train"):
    synthetic_segmentation.build_world(dataclasses.replace(TEST, num_train=None))  # None needs a real source.
  with pytest.raises(ConfigError, match="classes_per_video"):
    synthetic_localization.build_world(dataclasses.replace(synthetic.PRESETS["finegym_test"],
                                                           classes_per_video=(1, 4)))


def test_command_line_writes_a_preset_and_refuses_to_overwrite(tmp_path):
  out = tmp_path / "cli"
  command = [sys.executable, "-m", "hal_jax.data.synthetic", f"--out={out}", "--preset=thumos_test"]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr
  assert {"gt.json", "video_info.tsv", "classes.txt", "features", "latents", "synthetic.json"} <= set(
      os.listdir(out))
  again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert again.returncode == 2
  assert again.stderr.strip() == f"error: {out}: output directory exists and is not empty (pass --overwrite to " \
                                 "replace it)"
