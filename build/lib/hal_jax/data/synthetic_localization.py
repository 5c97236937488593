"""Synthetic temporal action localization data sets (see synthetic_process.py for the latent process).

Untrimmed videos: background with a few action instances, labelled only at video level for training (the ground
truth JSON holds the instances for evaluation). Two class structures:

* flat (THUMOS-like, `num_coarse=0`): `num_classes` classes; a video shows 1-2 of them, a few instances each;
* coarse -> fine (FineGym-like, `num_coarse>0`): the `num_classes` fine classes are split into `num_coarse` contiguous
  blocks; a video is one coarse event and shows fine classes of that event only. A fine prototype is its coarse
  prototype plus a smaller offset, so coarse classes are easier to tell apart than fine ones.

Output directory (read by `localization_formats.load_localization_split`; subsets are "train" and "test"):

  gt.json                  ActivityNet-style ground truth, seconds, subsets "train" / "test"
  features/<video>.npy     [T, D] float32 ("TD"), one step per 1 / feature_fps seconds
  video_info.tsv           video subset duration_s feature_fps num_features
  classes.txt              "<id> <name>" (fine classes in the hierarchical case)
  coarse_classes.txt, fine_to_coarse.json   hierarchical case only
  latents/<video>.npz      action [T, da], visual [T, dv] float32, burst [T] bool, labels [T] int32 (-1 background)
  synthetic.json           the generator settings, "kind": "localization", "feature_layout": "TD", ...

Step t covers [t / fps, (t + 1) / fps), so an instance on steps [s, e) is the segment [s / fps, e / fps] seconds.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from hal_jax.data import localization_formats
from hal_jax.data import hierarchy_formats
from hal_jax.data import formats
from hal_jax.data import synthetic_process as process_lib
from hal_jax.errors import ConfigError

SUBSETS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class LocalizationConfig:
  """Settings of a synthetic localization data set.

  Attributes:
    seed: the only seed.
    num_train: videos of subset "train".
    num_test: videos of subset "test".
    num_classes: action classes (the fine classes when `num_coarse > 0`).
    num_coarse: 0 for flat classes; else the number of coarse classes of the hierarchy.
    fine_spread: std of a fine prototype around its coarse prototype, relative to process.prototype_scale.
    classes_per_video: (min, max) distinct classes in a video, inclusive.
    instances_per_video: (min, max) action instances in a video, inclusive (at least one per class shown).
    duration_range: (min, max) of the per-class mean instance length in feature steps.
    duration_jitter: sigma of the log-normal factor on each instance's length.
    foreground_fraction: (min, max) share of the video covered by instances; the video length follows from it.
    length_range: (min, max) video length in feature steps.
    feature_fps: feature steps per second.
    process: the latent process and mixing.
  """
  seed: int = 0
  num_train: int = 100
  num_test: int = 40
  num_classes: int = 10
  num_coarse: int = 0
  fine_spread: float = 0.5
  classes_per_video: tuple[int, int] = (1, 2)
  instances_per_video: tuple[int, int] = (1, 6)
  duration_range: tuple[int, int] = (8, 40)
  duration_jitter: float = 0.3
  foreground_fraction: tuple[float, float] = (0.2, 0.5)
  length_range: tuple[int, int] = (100, 600)
  feature_fps: float = 2.0
  process: process_lib.ProcessConfig = process_lib.ProcessConfig()

  def validate(self) -> None:
    """Raises ConfigError naming the first impossible setting."""
    def check(ok: bool, name: str, what: str) -> None:
      if not ok:
        raise ConfigError(name, f"{what}, got {getattr(self, name)!r}")
    check(self.num_train >= 1, "num_train", "must be >= 1")
    check(self.num_test >= 1, "num_test", "must be >= 1")
    check(self.num_classes >= 1, "num_classes", "must be >= 1")
    check(0 <= self.num_coarse <= self.num_classes, "num_coarse", f"must be in [0, num_classes={self.num_classes}]")
    check(self.fine_spread >= 0, "fine_spread", "must be >= 0")
    smallest_pool = self.num_classes // self.num_coarse if self.num_coarse else self.num_classes
    low, high = self.classes_per_video
    check(1 <= low <= high <= smallest_pool, "classes_per_video",
          f"must be (min, max) with 1 <= min <= max <= {smallest_pool} (the classes a video can choose from)")
    low_instances, high_instances = self.instances_per_video
    check(high >= 1 and low_instances <= high_instances and high <= high_instances, "instances_per_video",
          f"must be (min, max) with min <= max and max >= classes_per_video max ({high})")
    low, high = self.duration_range
    check(1 <= low <= high, "duration_range", "must be (min, max) with 1 <= min <= max")
    check(self.duration_jitter >= 0, "duration_jitter", "must be >= 0")
    low, high = self.foreground_fraction
    check(0 < low <= high < 1, "foreground_fraction", "must be (min, max) with 0 < min <= max < 1")
    low, high = self.length_range
    check(1 <= low <= high, "length_range", "must be (min, max) with 1 <= min <= max")
    check(high >= 2 * self.instances_per_video[1], "length_range",
          f"max must be >= 2 * instances_per_video max ({2 * self.instances_per_video[1]}) to fit the instances")
    check(self.feature_fps > 0, "feature_fps", "must be > 0")
    self.process.validate("process")


@dataclasses.dataclass(frozen=True)
class LocalizationWorld:
  """Everything the videos of a data set share.

  Attributes:
    config: the settings.
    label_map: the (fine) classes.
    coarse_map: the coarse classes, or None when flat.
    fine_to_coarse: [C] int coarse id of each class (all 0 when flat).
    mean_durations: [C] mean instance length per class, in feature steps.
    process: the latent process; states 0..C-1 are the classes, state C is background.
  """
  config: LocalizationConfig
  label_map: formats.LabelMap
  coarse_map: formats.LabelMap | None
  fine_to_coarse: np.ndarray
  mean_durations: np.ndarray
  process: process_lib.Process

  @property
  def background_state(self) -> int:
    return self.label_map.num_classes


def build_world(config: LocalizationConfig) -> LocalizationWorld:
  """Validates `config` and draws what all videos share."""
  config.validate()
  rng = process_lib.rng_for(config.seed, process_lib.WORLD_STRUCTURE)
  low, high = config.duration_range
  means = np.exp(rng.uniform(np.log(low), np.log(high), size=config.num_classes))
  scale, dim = config.process.prototype_scale, config.process.action_dim
  rng = process_lib.rng_for(config.seed, process_lib.WORLD_PROTOTYPES)
  if config.num_coarse == 0:
    names = tuple(f"class{i:02d}" for i in range(config.num_classes))
    coarse_map, parents = None, np.zeros([config.num_classes], int)
    prototypes = scale * rng.standard_normal([config.num_classes + 1, dim])
  else:
    # Contiguous blocks of nearly equal size, like FineGym's fine ids grouped by event.
    parents = np.arange(config.num_classes) * config.num_coarse // config.num_classes
    coarse_map = formats.LabelMap(tuple(f"coarse{k:02d}" for k in range(config.num_coarse)))
    names = tuple(f"coarse{k:02d}_fine{int(np.sum(parents[:i] == k)):02d}" for i, k in enumerate(parents))
    coarse = scale * rng.standard_normal([config.num_coarse, dim])
    fine = coarse[parents] + config.fine_spread * scale * rng.standard_normal([config.num_classes, dim])
    prototypes = np.concatenate([fine, scale * rng.standard_normal([1, dim])])
  process = process_lib.make_process(config.process, prototypes, config.seed)
  return LocalizationWorld(config, formats.LabelMap(names), coarse_map, parents, means, process)


def video_structure(world: LocalizationWorld, subset: str,
                    index: int) -> tuple[str, list[tuple[int, int, int]]]:
  """The name and (state, start, end_exclusive) segments of video `index` of `subset` (state C = background)."""
  config = world.config
  rng = process_lib.rng_for(config.seed, process_lib.VIDEO_STREAMS[subset], index, process_lib.PART_STRUCTURE)
  if world.coarse_map is None:
    pool = np.arange(config.num_classes)
  else:
    pool = np.flatnonzero(world.fine_to_coarse == rng.integers(config.num_coarse))
  num_shown = int(rng.integers(config.classes_per_video[0], min(config.classes_per_video[1], len(pool)) + 1))
  shown = rng.choice(pool, size=num_shown, replace=False)
  low, high = config.instances_per_video
  count = int(rng.integers(max(low, num_shown), high + 1))
  classes = rng.permutation(np.concatenate([shown, rng.choice(shown, size=count - num_shown)]))
  durations = world.mean_durations[classes] * np.exp(config.duration_jitter * rng.standard_normal(count))
  fraction = rng.uniform(*config.foreground_fraction)
  length = max(int(np.clip(round(durations.sum() / fraction), *config.length_range)), 2 * count)
  # Room for every instance plus one background step between neighbours; shrink the instances if it is short.
  budget = length - (count - 1)
  durations = np.maximum(1, np.round(durations * min(1.0, fraction * length / durations.sum()))).astype(int)
  while durations.sum() > budget:
    durations[durations.argmax()] -= 1
  # The background splits into count + 1 gaps: inner gaps get one step each, the rest is spread at random.
  gaps = rng.multinomial(length - durations.sum() - (count - 1), rng.dirichlet(np.ones(count + 1)))
  gaps[1:-1] += 1
  segments, position = [], 0
  for gap, label, duration in zip(gaps, list(classes) + [None], list(durations) + [0]):
    if gap:
      segments.append((world.background_state, position, position + int(gap)))
      position += int(gap)
    if label is not None:
      segments.append((int(label), position, position + int(duration)))
      position += int(duration)
  return f"video_{subset}_{index:07d}", segments


def write_dataset(root: str, world: LocalizationWorld) -> None:
  """Writes every file of the data set under `root` (an empty directory)."""
  config = world.config
  fps = config.feature_fps
  ground_truth, infos = {}, []
  for subset in SUBSETS:
    count = config.num_train if subset == "train" else config.num_test
    structures = [video_structure(world, subset, index) for index in range(count)]
    samples = process_lib.sample_split(world.process, config.seed, subset, structures)
    for (name, segments), sample in zip(structures, samples):
      length = segments[-1][2]
      labels = np.full([length], -1, np.int32)
      annotations = []
      for state, start, end in segments:
        if state != world.background_state:
          labels[start:end] = state
          annotations.append(localization_formats.DetectionAnnotation((start / fps, end / fps),
                                                                   world.label_map.names[state]))
      formats.write_features(os.path.join(root, "features", f"{name}.npy"), sample.features, layout="TD")
      process_lib.write_latents(os.path.join(root, "latents", f"{name}.npz"), sample, labels=labels)
      ground_truth[name] = localization_formats.DetectionVideo(name, subset, length / fps, tuple(annotations))
      infos.append(localization_formats.VideoInfo(name, subset, length / fps, fps, length))
  localization_formats.write_detection_ground_truth(os.path.join(root, "gt.json"), ground_truth,
                                                 version="hal_jax synthetic")
  localization_formats.write_video_info(os.path.join(root, "video_info.tsv"), infos)
  formats.write_mapping(os.path.join(root, "classes.txt"), world.label_map)
  if world.coarse_map is not None:
    formats.write_mapping(os.path.join(root, "coarse_classes.txt"), world.coarse_map)
    hierarchy_formats.write_fine_to_coarse(os.path.join(root, "fine_to_coarse.json"),
                                           {i: int(k) for i, k in enumerate(world.fine_to_coarse)})
  # Background is the absence of an annotation, not a class.
  process_lib.write_settings(
      root, config, kind="localization", background=None, feature_layout="TD",
      num_classes=world.label_map.num_classes, num_coarse=config.num_coarse, subsets=list(SUBSETS),
      num_videos={"train": config.num_train, "test": config.num_test})
