"""Synthetic hierarchical data sets: presets, generation, calibration and the command line.

The data follow HAL's hierarchical causal process (synthetic_process.py): slow action latents with deterministic
pseudo-state drift, fast visual latents with time-delayed parents and the action latent as hierarchical parent,
features through an invertible random mixing network, plus visual bursts inside segments. They are written in the
real formats, so the same readers and pipeline run on them, with the true latents beside them:

* segmentation (synthetic_segmentation.py): an MS-TCN directory (features stored [D, T]);
* localization (synthetic_localization.py): ActivityNet-style gt.json plus [T, D] features.

Usage::

  python -m hal_jax.data.synthetic --out=/tmp/hal_synthetic --preset=default
  python -m hal_jax.data.synthetic --out=/tmp/thumos_like --preset=thumos --seed=3
  python -m hal_jax.data.synthetic --out=/tmp/hard --preset=default --difficulty=0.75 --calibrate

`--difficulty` moves a segmentation preset along the one-parameter family of synthetic_difficulty.py.

Everything is a pure function of the preset and the seed: the same command writes the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from hal_jax.data import formats
from hal_jax.data import segmentation_formats
from hal_jax.data import staging as staging_lib
from hal_jax.data import synthetic_difficulty
from hal_jax.data import synthetic_localization
from hal_jax.data import synthetic_poses
from hal_jax.data import synthetic_recognition
from hal_jax.data import synthetic_segmentation
from hal_jax.data.synthetic_localization import LocalizationConfig
from hal_jax.data.synthetic_process import ProcessConfig
from hal_jax.data.synthetic_recognition import RecognitionConfig
from hal_jax.data.synthetic_segmentation import SegmentationConfig
from hal_jax.errors import ConfigError, DataError, exit_on_bad_input

Config = SegmentationConfig | LocalizationConfig | RecognitionConfig

_TINY_PROCESS = ProcessConfig(action_dim=4, visual_dim=8, feature_dim=16, burst_length=(3, 6), burst_rate=0.01)

# Named configurations for the command line and for configs/ (plain values, not functions: a preset is data).
PRESETS: dict[str, Config] = {
    # Breakfast-like but small: 10 activities over 20 actions + background, 120 train / 40 test videos of
    # 300-1500 frames, D = 64.
    "default": SegmentationConfig(),
    # Tiny, for unit and end-to-end tests: 12 train / 4 test videos of about 100 frames, 6 actions, D = 16.
    "test": SegmentationConfig(num_train=12, num_test=4, num_activities=3, num_actions=6, actions_per_activity=(2, 4),
                               duration_range=(10, 40), background_duration=8, min_segment=4, process=_TINY_PROCESS),
    # Real transcripts and relative durations of split 1 (one synthetic video per real one), time scaled to a
    # few hundred frames per video. Add --feature_dim=2048 for I3D-sized features.
    "breakfast": SegmentationConfig(num_train=None, num_test=None, background="SIL", source="breakfast",
                                    length_scale=0.25),
    "gtea": SegmentationConfig(num_train=None, num_test=None, background="background", source="gtea",
                               length_scale=4.0),
    "50salads": SegmentationConfig(num_train=None, num_test=None, background=None, source="50salads",
                                   length_scale=0.08),
    # "default" and "test" with a 17-joint pose every 5 raw frames in poses/ (the pose-aware segmentation add-on);
    # their features, labels and latents are those of the presets without poses.
    "pose": synthetic_poses.PoseSegmentationConfig(),
    "pose_test": synthetic_poses.PoseSegmentationConfig(
        num_train=12, num_test=4, num_activities=3, num_actions=6, actions_per_activity=(2, 4),
        duration_range=(10, 40), background_duration=8, min_segment=4, process=_TINY_PROCESS),
    # THUMOS-like: 10 flat classes, 1-2 per video, 100 train / 40 test untrimmed videos of 100-600 steps.
    "thumos": LocalizationConfig(),
    # FineGym-like: 16 fine classes under 4 coarse ones; a video is one coarse event with 1-3 of its fine classes.
    "finegym": LocalizationConfig(num_classes=16, num_coarse=4, classes_per_video=(1, 3), instances_per_video=(2, 8)),
    "thumos_test": LocalizationConfig(num_train=8, num_test=4, num_classes=4, instances_per_video=(1, 3),
                                      duration_range=(3, 10), length_range=(30, 80), process=_TINY_PROCESS),
    "finegym_test": LocalizationConfig(num_train=8, num_test=4, num_classes=6, num_coarse=2, instances_per_video=(1, 3),
                                       duration_range=(3, 10), length_range=(30, 80), process=_TINY_PROCESS),
    # Recognition (trimmed clips along a taxonomy): hal_jax/data/synthetic_recognition.py.
    **synthetic_recognition.PRESETS,
}


def generate(out_dir: str | os.PathLike[str], config: Config, *, overwrite: bool = False) -> str:
  """Generates the data set of `config` into `out_dir` (atomically: all of it or nothing).

  Args:
    out_dir: the output directory; it must be absent or empty unless `overwrite`.
    config: the settings; a SegmentationConfig makes a segmentation data set, a LocalizationConfig a localization one.
    overwrite: replace a non-empty `out_dir`.

  Returns:
    The absolute path of the data set.
  """
  kind = {SegmentationConfig: synthetic_segmentation, synthetic_poses.PoseSegmentationConfig: synthetic_segmentation,
          LocalizationConfig: synthetic_localization, RecognitionConfig: synthetic_recognition}[type(config)]
  world = kind.build_world(config)  # Validates the config before anything is written.
  with staging_lib.staged_directory(out_dir, overwrite) as staging:
    kind.write_dataset(staging, world)
    if isinstance(config, synthetic_poses.PoseSegmentationConfig):
      synthetic_poses.write_poses(staging, world)
  return os.path.abspath(os.fspath(out_dir))


def _config_json(config: Config) -> dict:
  """The config as synthetic.json stores it (tuples become lists)."""
  return json.loads(json.dumps(dataclasses.asdict(config)))


def ensure_generated(out_dir: str | os.PathLike[str], config: Config) -> str:
  """Returns `out_dir` after generating it if needed: reuses a data set made with the same config.

  Several processes may call this at once (multi-host jobs): each one generates into its own staging directory and
  the first to finish publishes; the others then find the published data set and use it.

  Raises:
    DataError: `out_dir` holds something else (other settings, or not a synthetic data set).
  """
  out_dir = os.path.abspath(os.fspath(out_dir))
  settings_path = os.path.join(out_dir, "synthetic.json")

  def matches() -> bool:
    if not (os.path.isdir(out_dir) and os.listdir(out_dir)):
      return False
    if not os.path.isfile(settings_path):
      raise DataError(out_dir, "exists, is not empty and is not a synthetic data set (no synthetic.json)")
    try:
      stored = json.loads(formats.read_text(settings_path)).get("config")
    except (json.JSONDecodeError, AttributeError):
      raise DataError(settings_path, "not a synthetic.json (not a JSON object)") from None
    wanted = _config_json(config)
    if stored != wanted:
      keys = sorted(k for k in wanted if not isinstance(stored, dict) or stored.get(k) != wanted[k])
      raise DataError(settings_path, f"the data set there was generated with other settings (differing: {keys}); "
                      "remove it or choose another directory")
    return True

  if matches():
    return out_dir
  try:
    return generate(out_dir, config)
  except DataError:
    if matches():  # Another process published the same data set first.
      return out_dir
    raise


@dataclasses.dataclass(frozen=True)
class Calibration:
  """How hard a segmentation data set is for a frame-wise linear classifier.

  Attributes:
    probe_accuracy: test frame accuracy of a fully supervised linear probe (ridge one-vs-all on the train frames).
    majority_accuracy: test frame accuracy of always predicting the most frequent train class.
    burst_accuracy: the probe's accuracy on test frames inside visual bursts (NaN when there are none).
    segments_ratio: predicted / true number of segments of the probe's frame-wise argmax over the test videos.
    smoothed_segments_ratio: the same after a 15-frame moving average of the probe's scores, which removes
      frame-level noise but not the longer bursts.
  """
  probe_accuracy: float
  majority_accuracy: float
  burst_accuracy: float
  segments_ratio: float
  smoothed_segments_ratio: float


def _moving_average(scores: np.ndarray, width: int) -> np.ndarray:
  """Centred moving average over time of scores: [T, C] (edges padded by repetition)."""
  padded = np.pad(scores, ((width // 2, width - 1 - width // 2), (0, 0)), mode="edge")
  cumulative = np.concatenate([np.zeros([1, scores.shape[1]]), np.cumsum(padded, axis=0)])
  return (cumulative[width:] - cumulative[:-width]) / width


def calibrate(out_dir: str | os.PathLike[str], *, ridge: float = 1.0, smoothing: int = 15) -> Calibration:
  """Measures the difficulty of the segmentation data set in `out_dir` (split 1) with a linear probe.

  The probe standardises the features with the train statistics and solves ridge regression of one-hot labels
  (least squares, one-vs-all) on every train frame; the prediction is the argmax.
  """
  train = segmentation_formats.load_mstcn_split(out_dir, "train")
  test = segmentation_formats.load_mstcn_split(out_dir, "test")
  num_classes = train.label_map.num_classes
  features = np.concatenate([v.features for v in train.videos]).astype(np.float64)
  labels = np.concatenate([v.labels for v in train.videos])
  mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6

  def design(x: np.ndarray) -> np.ndarray:
    return np.concatenate([(x - mean) / std, np.ones([x.shape[0], 1])], axis=1)

  inputs = design(features)
  weights = np.linalg.solve(inputs.T @ inputs + ridge * np.eye(inputs.shape[1]),
                            inputs.T @ np.eye(num_classes)[labels])
  majority = np.bincount(labels, minlength=num_classes).argmax()
  correct, majority_correct, burst_correct = [], [], []
  segments = np.zeros(3)  # true, predicted, predicted after smoothing
  for video in test.videos:
    scores = design(np.asarray(video.features)) @ weights
    predicted = scores.argmax(axis=1)
    hit = predicted == video.labels
    with np.load(os.path.join(out_dir, "latents", f"{video.name}.npz")) as latents:
      burst_correct.append(hit[latents["burst"][:len(hit)]])
    correct.append(hit)
    majority_correct.append(video.labels == majority)
    segments += [len(segmentation_formats.labels_to_segments(video.labels)),
                 len(segmentation_formats.labels_to_segments(predicted)),
                 len(segmentation_formats.labels_to_segments(_moving_average(scores, smoothing).argmax(axis=1)))]
  bursts = np.concatenate(burst_correct)
  return Calibration(float(np.concatenate(correct).mean()), float(np.concatenate(majority_correct).mean()),
                     float(bursts.mean()) if bursts.size else float("nan"), float(segments[1] / segments[0]),
                     float(segments[2] / segments[0]))


def _with_overrides(config: Config, seed: int | None, feature_dim: int | None,
                    difficulty: float | None = None) -> Config:
  if difficulty is not None:
    if not isinstance(config, SegmentationConfig):
      raise ConfigError("--difficulty", "applies to segmentation presets only")
    config = synthetic_difficulty.at_difficulty(config, difficulty)
  if seed is not None:
    config = dataclasses.replace(config, seed=seed)
  if feature_dim is not None:
    config = dataclasses.replace(config, process=dataclasses.replace(config.process, feature_dim=feature_dim))
  return config


def main(argv: Sequence[str] | None = None) -> None:
  """The command line: generates a preset (see the module docstring)."""
  parser = argparse.ArgumentParser(prog="python -m hal_jax.data.synthetic", description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="output directory (absent or empty unless --overwrite)")
  parser.add_argument("--preset", default="default", choices=sorted(PRESETS), help="which data set")
  parser.add_argument("--seed", type=int, default=None, help="override the preset's seed")
  parser.add_argument("--feature_dim", type=int, default=None, help="override the feature dimension D")
  parser.add_argument("--difficulty", type=float, default=None,
                      help="segmentation presets: move along the difficulty family, 0 (easy) .. 1 (hard)")
  parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
  parser.add_argument("--calibrate", action="store_true",
                      help="also print the linear-probe calibration (segmentation presets)")
  parser.add_argument("--verbose", action="store_true", help="print the traceback of input errors")
  args = parser.parse_args(argv)
  if args.calibrate and not isinstance(PRESETS[args.preset], SegmentationConfig):
    parser.error("--calibrate needs a segmentation preset")
  with exit_on_bad_input(args.verbose):
    config = _with_overrides(PRESETS[args.preset], args.seed, args.feature_dim, args.difficulty)
    start = time.perf_counter()
    out_dir = generate(args.out, config, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    with open(os.path.join(out_dir, "synthetic.json"), encoding="utf-8") as f:
      settings = json.load(f)
    print(f"wrote {out_dir}: preset {args.preset}, {settings['kind']}, videos {settings['num_videos']}, "
          f"{settings['num_classes']} classes, D={settings['feature_dim']} ({elapsed:.1f} s)")
    if args.calibrate:
      print(json.dumps(dataclasses.asdict(calibrate(out_dir))))


if __name__ == "__main__":
  main(sys.argv[1:])
