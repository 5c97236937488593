"""Synthetic recognition data sets: trimmed clips labelled along a class taxonomy, from the hierarchical generator.

The features come from HAL's hierarchical causal process (`hal_jax.data.synthetic_process`) with hierarchical state
prototypes: the prototype of a leaf is the sum of one random direction per level on its path,

  p_leaf = Σ_l s_l g^l_{a_l(leaf)},     g^l_c ~ N(0, I),

so the level scales s_l set how strong each level's signal is (spec hclip.md §7, test bed 1: s_1 >> s_L makes the
coarse signal strong and the fine one weak). Sources:

* ``synthetic``: a balanced tree (`branching` children per class and level); one single-segment clip per draw, its
  frames in random temporal order.
* ``fma``: the FMA instance (4 items x 3 scores, leaf values 0/1/2); patients with an ability that skews their
  scores (imbalanced), split by patient; the score offset is ordinal (score - 1 along an item direction).
* ``finegym`` / ``fineaction``: the real annotations of ``third_party/<source>`` (FineGym: event -> set -> element,
  3 levels; FineAction: coarse -> fine, 2 levels) and their train/test split. Each event video's timeline is drawn
  by the process with background between the real element spans, and every real element's span is cut out as a clip:
  real class counts, imbalance, parent maps and durations, synthetic features. Text-free (no class texts).

Class texts (``with_text``) are synthetic too, never downloaded: the text of class c of level l is a fixed random
projection (one per level) of its own direction g^l_c, unit norm, plus noise. A fine text describes the fine class
only (like "score 2"), not its parent, and the texts of unseen classes carry their class's signal (the basis of
zero-shot transfer). ``zero_shot_leaves > 0`` keeps the last leaves of every parent out of the
data set and writes the full taxonomy, with every text, as a second recognition directory ``zero_shot/``: the same
training clips, the test clips of the held-out leaves only, and their training clips as subset ``shots`` (few-shot).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from hal_jax.data import hierarchy_formats
from hal_jax.data import recognition_formats as rf
from hal_jax.data import strict_files
from hal_jax.data import synthetic_process as process_lib
from hal_jax.data.synthetic_process import ProcessConfig
from hal_jax.errors import ConfigError

SOURCES = ("synthetic", "fma", "finegym", "fineaction")
_SOURCE_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "third_party")
# Random streams (spawn keys of the data set seed), apart from the process's own (0-3) and its videos' (10, 11).
_TAXONOMY_STREAM, _TEXT_STREAM, _CLIP_STREAM = 20, 21, 22
_FMA_ITEMS = ("shoulder_flexion", "elbow_extension", "wrist_dorsiflexion", "finger_grasp")
_FINEGYM_EVENTS = {0: "VT", 2: "FX", 3: "BB", 4: "UB"}  # set_id // 10 -> apparatus


@dataclasses.dataclass(frozen=True)
class RecognitionConfig:
  """Settings of a synthetic recognition data set.

  Attributes:
    seed: the only seed.
    source: one of SOURCES (module docstring).
    branching: ``synthetic``: the number of classes of level 1, then of children per class of each next level.
    level_scales: s_l per level (module docstring); as many as the source has levels.
    num_train, num_test: ``synthetic``: clips per subset (leaves drawn uniformly).
    length_range: (min, max) T_raw of a ``synthetic`` / ``fma`` clip, inclusive.
    num_patients, test_patients, attempts: ``fma``: patients, of which the last `test_patients` are the test
      subset; each performs every item `attempts` times.
    feature_fps: ``finegym`` / ``fineaction``: frames per second of the drawn timelines.
    max_videos: ``finegym`` / ``fineaction``: use the first this-many event videos of each subset (None: all).
    with_text: write synthetic class texts (``text/level_<l>.npy``).
    text_dim: E, their width.
    text_noise: std of the noise on a (unit-norm) class text.
    zero_shot_leaves: leaves per parent held out into ``zero_shot/`` (0: none).
    process: the latent process and mixing (its prototype_scale is unused: the level scales replace it).
  """
  seed: int = 0
  source: str = "synthetic"
  branching: tuple[int, ...] = (4, 5)
  level_scales: tuple[float, ...] = (1.0, 0.25)
  num_train: int = 800
  num_test: int = 400
  length_range: tuple[int, int] = (12, 48)
  num_patients: int = 40
  test_patients: int = 10
  attempts: int = 3
  feature_fps: float = 8.0
  max_videos: int | None = None
  with_text: bool = True
  text_dim: int = 32
  text_noise: float = 0.1
  zero_shot_leaves: int = 0
  process: ProcessConfig = ProcessConfig(action_dim=8, visual_dim=16, feature_dim=64, burst_rate=0.0)

  def validate(self) -> None:
    def check(ok: bool, name: str, what: str) -> None:
      if not ok:
        raise ConfigError(f"synthetic.{name}", f"{what}, got {getattr(self, name)!r}")
    check(self.source in SOURCES, "source", f"must be one of {SOURCES}")
    check(len(self.branching) >= 1 and all(b >= 1 for b in self.branching), "branching", "must be >= 1 each")
    levels = {"synthetic": len(self.branching), "fma": 2, "finegym": 3, "fineaction": 2}[self.source]
    check(len(self.level_scales) == levels and all(s >= 0 for s in self.level_scales), "level_scales",
          f"needs {levels} non-negative scales for source {self.source!r}")
    check(self.num_train >= 1 and self.num_test >= 1, "num_train", "needs num_train, num_test >= 1")
    check(1 <= self.length_range[0] <= self.length_range[1], "length_range", "must be (min, max), 1 <= min <= max")
    check(0 < self.test_patients < self.num_patients, "test_patients", "must be in (0, num_patients)")
    check(self.attempts >= 1 and self.feature_fps > 0 and self.text_dim >= 1, "attempts",
          "needs attempts >= 1, feature_fps > 0, text_dim >= 1")
    check(self.max_videos is None or self.max_videos >= 1, "max_videos", "must be None or >= 1")
    check(0 <= self.zero_shot_leaves and (self.zero_shot_leaves == 0 or self.source == "synthetic"),
          "zero_shot_leaves", "must be >= 0, and 0 unless source is 'synthetic'")
    if self.zero_shot_leaves:
      check(self.zero_shot_leaves < self.branching[-1], "zero_shot_leaves", "must leave every parent a seen leaf")
    self.process.validate("synthetic.process")


@dataclasses.dataclass(frozen=True)
class RecognitionWorld:
  """The shared draws: the full taxonomy with its class texts, and the process whose states are the leaves (the
  last state is the background of real timelines)."""
  config: RecognitionConfig
  taxonomy: rf.Taxonomy
  process: process_lib.Process


def _tree(branching: tuple[int, ...]) -> rf.Taxonomy:
  classes, parents = [tuple(f"c{i}" for i in range(branching[0]))], [np.zeros([0], np.int32)]
  for level, count in enumerate(branching[1:], 2):
    parent = np.repeat(np.arange(len(classes[-1])), count).astype(np.int32)
    classes.append(tuple(f"{classes[-1][p]}.{j % count}" for j, p in enumerate(parent)))
    parents.append(parent)
  return rf.Taxonomy(tuple(f"level{l}" for l in range(1, len(branching) + 1)), tuple(classes), tuple(parents))


def _fma_taxonomy() -> rf.Taxonomy:
  leaves = tuple(f"{item}/{score}" for item in _FMA_ITEMS for score in range(3))
  return rf.Taxonomy(("item", "score"), (_FMA_ITEMS, leaves), (np.zeros([0], np.int32),
                                                                 np.repeat(np.arange(4), 3).astype(np.int32)),
                     leaf_values=np.tile(np.arange(3.0), 4))


def _real_taxonomy(annotations: hierarchy_formats.HierarchicalAnnotations, source: str) -> rf.Taxonomy:
  fine_to_coarse = np.asarray([annotations.fine_to_coarse[i] for i in range(annotations.num_fine)], np.int32)
  if source == "fineaction":
    coarse = tuple(f"coarse_{i}" for i in range(annotations.num_coarse))
    fine = tuple(f"fine_{i}" for i in range(annotations.num_fine))
    return rf.Taxonomy(("coarse", "fine"), (coarse, fine), (np.zeros([0], np.int32), fine_to_coarse))
  # FineGym: the apparatus (event) of a set is its set id's tens digit; element names get their gym99 label
  # (two sets share an element name).
  sets = hierarchy_formats.read_coarse_classes(os.path.join(annotations.root, "coarse_classes.tsv")).names
  fine_rows = strict_files.tsv_rows(os.path.join(annotations.root, "fine_classes.tsv"),
                                                      hierarchy_formats.FINE_CLASSES_HEADER)
  set_ids = {}
  for _, (_, coarse_label, set_id, _, _) in fine_rows:
    set_ids[int(coarse_label)] = int(set_id)
  event_keys = sorted({set_ids[s] // 10 for s in range(len(sets))})
  event_of_set = np.asarray([event_keys.index(set_ids[s] // 10) for s in range(len(sets))], np.int32)
  elements = tuple(f"{glabel} {name}" for _, (_, _, _, glabel, name) in fine_rows)
  return rf.Taxonomy(("event", "set", "element"), (tuple(_FINEGYM_EVENTS[k] for k in event_keys), sets, elements),
                     (np.zeros([0], np.int32), event_of_set, fine_to_coarse))


def build_world(config: RecognitionConfig) -> RecognitionWorld:
  """The taxonomy, prototypes, process and class texts of `config` (validated first)."""
  config.validate()
  if config.source == "synthetic":
    taxonomy = _tree(config.branching)
  elif config.source == "fma":
    taxonomy = _fma_taxonomy()
  else:
    taxonomy = _real_taxonomy(_annotations(config), config.source)
  rng = process_lib.rng_for(config.seed, _TAXONOMY_STREAM)
  da = config.process.action_dim
  ancestors = taxonomy.ancestors()
  own, total = [], np.zeros([taxonomy.sizes[-1], da])
  for level, size in enumerate(taxonomy.sizes):
    directions = rng.standard_normal([size, da])
    if config.source == "fma" and level == 1:  # Ordinal scores: (score - 1) along the item's direction, plus a bit.
      item_direction = rng.standard_normal([taxonomy.sizes[0], da])
      directions = ((taxonomy.leaf_values - 1.0)[:, None] * item_direction[taxonomy.parents[1]]
                    + 0.5 * directions)
    total = total + config.level_scales[level] * directions[ancestors[:, level]]
    own.append(directions)
  background = config.level_scales[0] * rng.standard_normal([1, da])
  process = process_lib.make_process(config.process, np.concatenate([total, background]), config.seed)
  if config.with_text:
    text_rng = process_lib.rng_for(config.seed, _TEXT_STREAM)
    texts = []
    for level in range(taxonomy.num_levels):
      projection = text_rng.standard_normal([da, config.text_dim]) / np.sqrt(da)
      text = own[level] @ projection
      text /= np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
      texts.append((text + config.text_noise * text_rng.standard_normal(text.shape) / np.sqrt(config.text_dim)
                    ).astype(np.float32))
    taxonomy = dataclasses.replace(taxonomy, text=tuple(texts))
  return RecognitionWorld(config, taxonomy, process)


def _annotations(config: RecognitionConfig) -> hierarchy_formats.HierarchicalAnnotations:
  return hierarchy_formats.load_hierarchical_annotations(os.path.join(_SOURCE_ROOT, config.source))


def _clip_structures(world: RecognitionWorld) -> list[tuple[str, str, str, int, int]]:
  """(name, patient, subset, leaf, T_raw) of every clip of a `synthetic` or `fma` data set."""
  config, taxonomy = world.config, world.taxonomy
  rng = process_lib.rng_for(config.seed, _CLIP_STREAM)
  low, high = config.length_range
  clips = []
  if config.source == "synthetic":
    for subset, count in (("train", config.num_train), ("test", config.num_test)):
      for index in range(count):
        leaf = int(rng.integers(taxonomy.sizes[-1]))
        # Subject ids group clips like patients; train and test subjects are disjoint.
        clips.append((f"{subset}_{index:05d}", f"{subset}_subject{index % 20:02d}", subset, leaf,
                      int(rng.integers(low, high + 1))))
    return clips
  for patient in range(config.num_patients):
    subset = "test" if patient >= config.num_patients - config.test_patients else "train"
    ability = rng.dirichlet([1.0, 1.0, 1.0])  # Per-patient score distribution: imbalanced scores overall.
    for item in range(4):
      for attempt in range(config.attempts):
        score = int(rng.choice(3, p=ability))
        clips.append((f"p{patient:03d}_{_FMA_ITEMS[item]}_{attempt}", f"p{patient:03d}", subset, 3 * item + score,
                      int(rng.integers(low, high + 1))))
  return clips


def _write_simple(root: str, world: RecognitionWorld) -> list[rf.Clip]:
  """`synthetic` / `fma`: one single-segment video per clip, frames shuffled."""
  config, taxonomy = world.config, world.taxonomy
  structures = _clip_structures(world)
  held_out = set()
  if config.zero_shot_leaves:
    per_parent = config.branching[-1]
    held_out = {leaf for leaf in range(taxonomy.sizes[-1]) if leaf % per_parent >= per_parent - config.zero_shot_leaves}
  order_rng = process_lib.rng_for(config.seed, _CLIP_STREAM, 1)
  streams = (process_lib.rng_for(config.seed, _CLIP_STREAM, 2, i) for i in range(len(structures)))
  samples = process_lib.sample_videos(world.process, (([(leaf, 0, length)], rng)
                                                      for (_, _, _, leaf, length), rng in zip(structures, streams)))
  seen_clips, unseen_clips = [], []
  ancestors = taxonomy.ancestors()
  for (name, patient, subset, leaf, _), sample in zip(structures, samples):
    features = sample.features[order_rng.permutation(len(sample.features))]
    clip = rf.Clip(name, patient, subset, ancestors[leaf], features)
    if leaf not in held_out:
      seen_clips.append(clip)
    # zero_shot/ trains on the seen classes (the same clips) and tests on the unseen ones only; the unseen classes'
    # training clips become subset "shots" (other subject ids), the pool of few-shot fine-tuning.
    if (leaf in held_out) == (subset == "test"):
      unseen_clips.append(clip)
    elif leaf in held_out:
      unseen_clips.append(dataclasses.replace(clip, subset="shots", patient=f"shots_{patient}"))
  if held_out:
    seen = _restrict(taxonomy, sorted(set(range(taxonomy.sizes[-1])) - held_out))
    _write(root, seen[0], [dataclasses.replace(c, labels=seen[1](c.labels)) for c in seen_clips])
    _write(os.path.join(root, "zero_shot"), taxonomy, unseen_clips)
  else:
    _write(root, taxonomy, seen_clips)
  return seen_clips


def _restrict(taxonomy: rf.Taxonomy, leaves: list[int]):
  """The taxonomy with only `leaves` at the last level, and the relabelling of a full label path into it."""
  new_id = {leaf: i for i, leaf in enumerate(leaves)}
  text = None
  if taxonomy.text is not None:
    text = taxonomy.text[:-1] + (taxonomy.text[-1][leaves],)
  restricted = rf.Taxonomy(taxonomy.level_names, taxonomy.classes[:-1] + (tuple(taxonomy.classes[-1][i]
                                                                                for i in leaves),),
                           taxonomy.parents[:-1] + (taxonomy.parents[-1][leaves],),
                           None if taxonomy.leaf_values is None else taxonomy.leaf_values[leaves], text)
  return restricted, lambda labels: np.concatenate([labels[:-1], [new_id[int(labels[-1])]]]).astype(np.int32)


def _write_real(root: str, world: RecognitionWorld) -> list[rf.Clip]:
  """`finegym` / `fineaction`: draw each event video's timeline, cut every real element's span."""
  config, taxonomy = world.config, world.taxonomy
  annotations = _annotations(config)
  fps, background = config.feature_fps, taxonomy.sizes[-1]
  ancestors = taxonomy.ancestors()
  clips = []
  for subset in ("train", "test"):
    videos = [v for v in annotations.videos if v.subset == subset and v.segments][:config.max_videos]
    spans, structures = [], []
    for video in videos:
      starts = [int(np.floor(max(s.start_s, 0.0) * fps)) for s in video.segments]
      # At least one frame per element (the source has zero- and negative-length instances).
      ends = [max(int(np.ceil(s.end_s * fps)), b + 1) for s, b in zip(video.segments, starts)]
      length = max(ends) + int(2 * fps)
      labels = np.full([length], background, np.int64)
      for segment, begin, end in zip(video.segments, starts, ends):
        labels[begin:end] = segment.fine_label
      runs = np.flatnonzero(np.diff(labels)) + 1
      bounds = np.concatenate([[0], runs, [length]])
      structures.append((video.name, [(int(labels[b]), int(b), int(e)) for b, e in zip(bounds[:-1], bounds[1:])]))
      spans.append(list(zip(video.segments, starts, ends)))
    samples = process_lib.sample_split(world.process, config.seed, subset, structures)
    for (name, _), elements, sample in zip(structures, spans, samples):
      for k, (segment, begin, end) in enumerate(elements):
        clips.append(rf.Clip(f"{name}_{k:03d}", name, subset, ancestors[segment.fine_label],
                             sample.features[begin:end]))
  _write(root, taxonomy, clips)
  return clips


def _write(root: str, taxonomy: rf.Taxonomy, clips: list[rf.Clip]) -> None:
  """taxonomy.json (+ texts), clips.tsv and the features; plain writes (the caller stages the directory)."""
  os.makedirs(os.path.join(root, rf.FEATURES_DIR), exist_ok=True)
  rf.write_taxonomy(root, taxonomy)
  rf.write_clips(root, taxonomy, clips, features=False)
  for clip in clips:
    np.save(os.path.join(root, rf.FEATURES_DIR, f"{clip.name}.npy"), clip.features.astype(np.float32))


def write_dataset(root: str, world: RecognitionWorld) -> None:
  """Writes every file of the data set under `root` (an empty staging directory) and its synthetic.json."""
  config = world.config
  clips = (_write_simple if config.source in ("synthetic", "fma") else _write_real)(root, world)
  counts = {subset: sum(c.subset == subset for c in clips) for subset in ("train", "test")}
  process_lib.write_settings(root, config, kind="recognition", background=None, feature_layout="TD",
                             num_classes=world.taxonomy.sizes[-1], levels=list(world.taxonomy.sizes),
                             num_videos=counts)


# Named data sets for configs/hclip.py and `python -m hal_jax.data.synthetic`.
_TINY = ProcessConfig(action_dim=4, visual_dim=8, feature_dim=16, instance_noise=0.1, drift=0.1, burst_rate=0.0)
PRESETS = {
    # Test bed 1: 4 coarse x 5 fine classes, fine signal weak (scale 0.25 vs 1), 800 train / 400 test clips.
    "recognition": RecognitionConfig(),
    # Tiny, for tests: 2 x 3 classes, 64 train / 32 test clips of 4-24 frames, D = 16.
    "recognition_test": RecognitionConfig(branching=(2, 3), level_scales=(1.0, 0.5), num_train=64, num_test=32,
                                          length_range=(4, 24), text_dim=8, process=_TINY),
    # Test bed 1 with one leaf per parent held out for zero-shot (zero_shot/ has their texts and test clips).
    "recognition_zero_shot": RecognitionConfig(zero_shot_leaves=1),
    "fma": RecognitionConfig(source="fma", level_scales=(1.0, 0.3)),
    "finegym_elements": RecognitionConfig(source="finegym", level_scales=(1.0, 0.5, 0.25), with_text=False,
                                          max_videos=None),
    "fineaction_elements": RecognitionConfig(source="fineaction", level_scales=(1.0, 0.25), feature_fps=2.0,
                                             with_text=False, max_videos=1500),
}
