"""Synthetic action segmentation data sets in the MS-TCN layout (see synthetic_process.py for the latent process).

What happens in a video (its transcript and segment lengths) comes either from a small synthetic task grammar or,
with `source` set, from real annotations (third_party/<source>/segments.tsv). How it looks comes from the
hierarchical causal process. The output directory is an MS-TCN directory that
`segmentation_formats.load_mstcn_split` reads with feature_layout="DT":

  features/<video>.npy      [D, T] float32
  groundTruth/<video>.txt   one label name per frame
  transcripts/<video>.txt   one action per line
  mapping.txt               "<id> <name>"; the background class, when there is one, has id 0 in grammar mode
  splits/train.split1.bundle, splits/test.split1.bundle
  latents/<video>.npz       action [T, da], visual [T, dv] float32 (the true latents), burst [T] bool
  videos.tsv                video, split, activity (or source video), frames, segments
  synthetic.json            the generator settings, "kind", "background", "feature_layout", "feature_dim", ...

Grammar mode: each activity is an ordered template of a few actions from a shared vocabulary (so one action occurs
in several activities, like Breakfast's `take_cup`). A video picks an activity, drops each action with `skip_prob`,
swaps neighbours with `swap_prob`, and adds background at the ends and between actions. Each action class has a
mean length (log-uniform in `duration_range`); a segment's length is that mean times a log-normal jitter.

Source mode: video i of a split copies the transcript and relative segment lengths of a real video of the same split
of the real data set (video i of the split list when the number of videos is None, else a uniformly drawn one),
with all frame positions scaled by `length_scale`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from hal_jax.data import formats
from hal_jax.data import segmentation_formats
from hal_jax.data import synthetic_process as process_lib
from hal_jax.errors import ConfigError, DataError

SPLITS = ("train", "test")
# Where the real annotations live in a source checkout: <repo>/third_party/<source>/.
DEFAULT_SOURCE_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                   "third_party")


@dataclasses.dataclass(frozen=True)
class SegmentationConfig:
  """Settings of a synthetic segmentation data set.

  Attributes:
    seed: the only seed; the output is a pure function of the config.
    num_train: training videos; None = one per video of the real split (source mode only).
    num_test: test videos; None likewise.
    num_activities: activities (task templates) of the grammar.
    num_actions: action classes, background excluded.
    actions_per_activity: (min, max) template length, inclusive.
    background: the background class name, or None for no background class. In source mode it must be a class of
      the real mapping.txt (e.g. "SIL" for Breakfast) or None.
    skip_prob: probability that a video leaves out an action of its template.
    swap_prob: probability that two neighbouring actions swap places.
    background_ends_prob: probability of a background segment at the start, and (independently) at the end.
    background_between_prob: probability of a background segment between two actions.
    duration_range: (min, max) of the per-class mean segment length, in raw frames.
    background_duration: mean length of a background segment, in raw frames.
    duration_jitter: sigma of the log-normal factor on each segment's length.
    min_segment: shortest segment, in raw frames.
    source: name of a real data set folder under `source_root` ("breakfast", "gtea", "50salads"), or None.
    source_root: the folder holding <source>/segments.tsv, mapping.txt and splits/; None = the repository's
      third_party/.
    source_split: which real fold's split lists the synthetic train and test videos copy from.
    length_scale: multiplies the real frame positions (source mode).
    process: the latent process and mixing.
  """
  seed: int = 0
  num_train: int | None = 120
  num_test: int | None = 40
  num_activities: int = 10
  num_actions: int = 20
  actions_per_activity: tuple[int, int] = (3, 6)
  background: str | None = "background"
  skip_prob: float = 0.1
  swap_prob: float = 0.1
  background_ends_prob: float = 0.8
  background_between_prob: float = 0.15
  duration_range: tuple[int, int] = (60, 300)
  background_duration: int = 50
  duration_jitter: float = 0.3
  min_segment: int = 8
  source: str | None = None
  source_root: str | None = None
  source_split: int = 1
  length_scale: float = 1.0
  process: process_lib.ProcessConfig = process_lib.ProcessConfig()

  def validate(self) -> None:
    """Raises ConfigError naming the first impossible setting."""
    def check(ok: bool, name: str, what: str) -> None:
      if not ok:
        raise ConfigError(name, f"{what}, got {getattr(self, name)!r}")
    for name in ("num_train", "num_test"):
      value = getattr(self, name)
      check((value is None and self.source is not None) or (value is not None and value >= 1), name,
            "must be >= 1 (None = the whole real split, source mode only)")
    check(self.num_activities >= 1, "num_activities", "must be >= 1")
    check(self.num_actions >= 1, "num_actions", "must be >= 1")
    low, high = self.actions_per_activity
    check(1 <= low <= high <= self.num_actions, "actions_per_activity",
          f"must be (min, max) with 1 <= min <= max <= num_actions ({self.num_actions})")
    for name in ("skip_prob", "swap_prob", "background_ends_prob", "background_between_prob"):
      check(0.0 <= getattr(self, name) <= 1.0, name, "must be a probability in [0, 1]")
    low, high = self.duration_range
    check(1 <= low <= high, "duration_range", "must be (min, max) with 1 <= min <= max")
    check(self.background_duration >= 1, "background_duration", "must be >= 1")
    check(self.duration_jitter >= 0, "duration_jitter", "must be >= 0")
    check(self.min_segment >= 1, "min_segment", "must be >= 1")
    check(self.length_scale > 0, "length_scale", "must be > 0")
    check(self.source_split >= 1, "source_split", "must be >= 1")
    self.process.validate("process")


@dataclasses.dataclass(frozen=True)
class Activity:
  """A task: its name and its template, the action ids in their usual order."""
  name: str
  actions: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class SourceVideo:
  """A real video of the source data set: (start, end_exclusive, label id) segments in raw real frames."""
  name: str
  segments: tuple[tuple[int, int, int], ...]


@dataclasses.dataclass(frozen=True)
class SegmentationWorld:
  """Everything the videos of a data set share.

  Attributes:
    config: the settings.
    label_map: the classes (mapping.txt).
    background: the background id, or None.
    activities: the grammar's tasks (empty in source mode).
    mean_durations: [C] mean segment length per class in raw frames (grammar mode; empty in source mode).
    source_videos: split -> the real videos of that split (source mode; empty in grammar mode).
    process: the latent process; its states are the class ids.
  """
  config: SegmentationConfig
  label_map: formats.LabelMap
  background: int | None
  activities: tuple[Activity, ...]
  mean_durations: np.ndarray
  source_videos: dict[str, tuple[SourceVideo, ...]]
  process: process_lib.Process


def _grammar(config: SegmentationConfig) -> tuple[formats.LabelMap, int | None, tuple[Activity, ...], np.ndarray]:
  """The synthetic classes, activities and mean durations."""
  rng = process_lib.rng_for(config.seed, process_lib.WORLD_STRUCTURE)
  names = [f"action{i:02d}" for i in range(config.num_actions)]
  offset = 0
  if config.background is not None:
    if config.background in names:
      raise ConfigError("background", f"{config.background!r} is also an action name")
    names.insert(0, config.background)  # Id 0, where ATBA-style code expects the background.
    offset = 1
  low, high = config.actions_per_activity
  sizes = rng.integers(low, high + 1, size=config.num_activities)
  # Deal the shuffled vocabulary round-robin first, so that every action belongs to some activity when the templates
  # have room for all of them (sum of sizes >= num_actions), then fill the templates up at random.
  order = rng.permutation(config.num_actions)
  members = [set() for _ in range(config.num_activities)]
  for i, action in enumerate(order):
    if len(members[i % config.num_activities]) < sizes[i % config.num_activities]:
      members[i % config.num_activities].add(int(action))
  activities = []
  for a, size in enumerate(sizes):
    rest = np.array(sorted(set(range(config.num_actions)) - members[a]))
    extra = rng.choice(rest, size=int(size) - len(members[a]), replace=False)
    template = rng.permutation(sorted(members[a] | {int(x) for x in extra})) + offset
    activities.append(Activity(f"activity{a:02d}", tuple(int(x) for x in template)))
  low, high = config.duration_range
  means = np.exp(rng.uniform(np.log(low), np.log(high), size=len(names)))
  if config.background is not None:
    means[0] = config.background_duration
  return formats.LabelMap(tuple(names)), (0 if offset else None), tuple(activities), means


def _source(config: SegmentationConfig) -> tuple[formats.LabelMap, int | None, dict[str, tuple[SourceVideo, ...]]]:
  """The real classes and, per split, the real videos (those of the split list that have annotations)."""
  folder = os.path.join(config.source_root or DEFAULT_SOURCE_ROOT, config.source)
  if not os.path.isdir(folder):
    raise DataError(folder, f"real annotations for source={config.source!r} not found (expected segments.tsv, "
                    "mapping.txt and splits/ there; set source_root)")
  label_map = formats.read_mapping(os.path.join(folder, "mapping.txt"))
  background = None
  if config.background is not None:
    background = label_map.index(config.background, os.path.join(folder, "mapping.txt"))
  tsv = os.path.join(folder, "segments.tsv")
  rows = segmentation_formats.read_segments_tsv(tsv)
  videos = {}
  for split in SPLITS:
    split_file = os.path.join(folder, "splits", f"split{config.source_split}.{split}")
    listed = [name for name in formats.read_split_list(split_file) if name in rows]
    if not listed:
      raise DataError(split_file, "no video of this split list has annotations in segments.tsv")
    videos[split] = tuple(SourceVideo(name, tuple((s, e, label_map.index(label, tsv)) for s, e, label in rows[name]))
                          for name in listed)
  return label_map, background, videos


def build_world(config: SegmentationConfig) -> SegmentationWorld:
  """Validates `config` and draws (or reads) what all videos share."""
  config.validate()
  if config.source is None:
    label_map, background, activities, means = _grammar(config)
    sources = {}
  else:
    label_map, background, sources = _source(config)
    activities, means = (), np.zeros([0])
  prototypes = process_lib.sample_prototypes(config.process, label_map.num_classes, config.seed)
  process = process_lib.make_process(config.process, prototypes, config.seed)
  return SegmentationWorld(config, label_map, background, activities, means, sources, process)


def _grammar_video(world: SegmentationWorld, rng: np.random.Generator) -> tuple[str, list[tuple[int, int, int]]]:
  """Activity name and (label, start, end) segments of one grammar video."""
  config = world.config
  activity = world.activities[int(rng.integers(len(world.activities)))]
  actions = list(activity.actions)
  keep = rng.random(len(actions)) >= config.skip_prob
  if keep.sum() < min(2, len(actions)):
    keep[:] = True  # Too few left to be a task: keep the full template rather than bias which ones survive.
  actions = [a for a, k in zip(actions, keep) if k]
  for i in range(len(actions) - 1):
    if rng.random() < config.swap_prob:
      actions[i], actions[i + 1] = actions[i + 1], actions[i]
  background = world.background
  transcript = []
  if background is not None and rng.random() < config.background_ends_prob:
    transcript.append(background)
  for i, action in enumerate(actions):
    if i > 0 and background is not None and rng.random() < config.background_between_prob:
      transcript.append(background)
    transcript.append(action)
  if background is not None and rng.random() < config.background_ends_prob:
    transcript.append(background)
  jitter = np.exp(config.duration_jitter * rng.standard_normal(len(transcript)))
  lengths = np.maximum(config.min_segment, np.round(world.mean_durations[transcript] * jitter)).astype(int)
  ends = np.cumsum(lengths)
  return activity.name, [(int(a), int(e - n), int(e)) for a, n, e in zip(transcript, lengths, ends)]


def _source_video(world: SegmentationWorld, split: str, index: int,
                  rng: np.random.Generator) -> tuple[str, list[tuple[int, int, int]]]:
  """Source video name and (label, start, end) segments copied from a real video, scaled in time."""
  config = world.config
  videos = world.source_videos[split]
  count = config.num_train if split == "train" else config.num_test
  real = videos[index] if count is None else videos[int(rng.integers(len(videos)))]
  segments, previous = [], 0
  for _, end, label in real.segments:
    # Scale the boundaries, not the lengths, so rounding errors do not add up; every segment keeps >= 1 frame.
    scaled = max(int(round(end * config.length_scale)), previous + 1)
    segments.append((label, previous, scaled))
    previous = scaled
  return real.name, segments


def video_structure(world: SegmentationWorld, split: str, index: int) -> tuple[str, list[tuple[int, int, int]]]:
  """The name and (label, start, end_exclusive) segments of video `index` of `split`."""
  rng = process_lib.rng_for(world.config.seed, process_lib.VIDEO_STREAMS[split], index, process_lib.PART_STRUCTURE)
  if world.config.source is None:
    origin, segments = _grammar_video(world, rng)
  else:
    origin, segments = _source_video(world, split, index, rng)
  return f"{split}{index:04d}_{origin}", segments


def num_videos(world: SegmentationWorld, split: str) -> int:
  """The number of videos of `split`."""
  count = world.config.num_train if split == "train" else world.config.num_test
  return len(world.source_videos[split]) if count is None else count


def write_dataset(root: str, world: SegmentationWorld) -> None:
  """Writes every file of the data set under `root` (an empty directory)."""
  names = world.label_map.names
  table = ["video\tsplit\torigin\tframes\tsegments\n"]
  for split in SPLITS:
    structures = [video_structure(world, split, index) for index in range(num_videos(world, split))]
    samples = process_lib.sample_split(world.process, world.config.seed, split, structures)
    for (name, segments), sample in zip(structures, samples):
      labels = [names[a] for a, start, end in segments for _ in range(end - start)]
      segmentation_formats.write_mstcn_video(root, name, sample.features, labels, layout="DT")
      process_lib.write_latents(os.path.join(root, "latents", f"{name}.npz"), sample)
      table.append(f"{name}\t{split}\t{name.split('_', 1)[1]}\t{len(labels)}\t{len(segments)}\n")
    formats.write_split_list(segmentation_formats.split_path(root, split, 1), [name for name, _ in structures])
  formats.write_mapping(os.path.join(root, "mapping.txt"), world.label_map)
  formats.write_text_atomic(os.path.join(root, "videos.tsv"), "".join(table))
  process_lib.write_settings(
      root, world.config, kind="segmentation",
      background=None if world.background is None else names[world.background], feature_layout="DT",
      num_classes=world.label_map.num_classes, num_videos={split: num_videos(world, split) for split in SPLITS},
      activities={a.name: world.label_map.names_of(np.array(a.actions)) for a in world.activities})
