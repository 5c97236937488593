"""Readers and writers of a recognition directory: trimmed clips labelled at every level of a class taxonomy.

Layout (spec hclip.md §7; every reader raises `DataError(path, problem)` naming the file, before anything trains):

* ``taxonomy.json``: ``{"levels": [{"name": ..., "classes": [...]}, {"name": ..., "classes": [...],
  "parents": [...]}, ...], "leaf_values": [...]}``. Level 1 is the coarsest; every class of level l >= 2 names the
  index of its parent in level l - 1, and every class above the last level has at least one child (so a top-down
  prediction always has a candidate). ``leaf_values`` (optional) gives every class of the last level a number, e.g.
  the FMA score 0/1/2 of an (item, score) leaf, for the score error of `hal_jax.metrics.recognition`.
* ``clips.tsv``: ``clip_id patient_id subset label_l1 ... label_lL`` with class names; a label path must follow the
  parent map, and no patient may appear in two subsets (splits by patient).
* ``features/<clip_id>.npy``: float32 ``[T_raw, D]`` per-frame embeddings, T_raw >= 1, one D for all clips.
* ``text/level_<l>.npy`` (optional, all levels or none): float32 ``[N_l, E]`` class-text embeddings of level l, one
  row per class in taxonomy order. Without them the model learns its class embeddings (text-free mode).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np

from hal_jax.data import formats
from hal_jax.data import strict_files
from hal_jax.data.formats import PathLike
from hal_jax.errors import DataError

TAXONOMY_FILE = "taxonomy.json"
CLIPS_FILE = "clips.tsv"
FEATURES_DIR = "features"
TEXT_DIR = "text"
CLIP_COLUMNS = ("clip_id", "patient_id", "subset")


def label_columns(num_levels: int) -> tuple[str, ...]:
  return tuple(f"label_l{level}" for level in range(1, num_levels + 1))


def text_path(root: PathLike, level: int) -> str:
  """The text embedding file of level `level` (1-based)."""
  return os.path.join(root, TEXT_DIR, f"level_{level}.npy")


class TaxonomyNames(tuple):
  """The leaf class names (a plain tuple of str for generic code) that also carry their `Taxonomy`.

  The loop sizes a method by ``label_map.names``; a recognition method reads the levels, parent maps and text
  embeddings from ``names.taxonomy``.
  """
  taxonomy: Taxonomy

  def __new__(cls, names: Sequence[str], taxonomy: Taxonomy):
    self = super().__new__(cls, names)
    self.taxonomy = taxonomy
    return self


@dataclasses.dataclass(frozen=True, eq=False)
class Taxonomy:
  """A class taxonomy of L levels (level 0 the coarsest, 0-based in code) with optional class-text embeddings.

  Attributes:
    level_names: [L] the name of each level.
    classes: per level, the class names in id order.
    parents: per level, [N_l] int32 parent ids in level l - 1 (an empty array for level 0).
    leaf_values: [N_L] float64 numbers of the leaves (e.g. FMA scores), or None.
    text: per level [N_l, E] float32 class-text embeddings, or None (text-free).
  """
  level_names: tuple[str, ...]
  classes: tuple[tuple[str, ...], ...]
  parents: tuple[np.ndarray, ...]
  leaf_values: np.ndarray | None = None
  text: tuple[np.ndarray, ...] | None = None

  @property
  def num_levels(self) -> int:
    return len(self.classes)

  @property
  def sizes(self) -> tuple[int, ...]:
    return tuple(len(c) for c in self.classes)

  @property
  def names(self) -> TaxonomyNames:
    """The leaf names, carrying this taxonomy (see `TaxonomyNames`)."""
    return TaxonomyNames(self.classes[-1], self)

  def parent_matrix(self, level: int) -> np.ndarray:
    """[N_level, N_{level-1}] float32 0/1: entry (j, i) is 1 iff class j of `level` (>= 1) has parent i."""
    matrix = np.zeros([self.sizes[level], self.sizes[level - 1]], np.float32)
    matrix[np.arange(self.sizes[level]), self.parents[level]] = 1.0
    return matrix

  def ancestors(self) -> np.ndarray:
    """[N_L, L] int32: the class of every level on each leaf's path (the last column is the leaf itself)."""
    path = [np.arange(self.sizes[-1], dtype=np.int32)]
    for level in range(self.num_levels - 1, 0, -1):
      path.insert(0, self.parents[level][path[0]].astype(np.int32))
    return np.stack(path, axis=1)

  def path_of_leaf(self, leaf: int) -> tuple[int, ...]:
    return tuple(int(c) for c in self.ancestors()[leaf])

  def consistent(self, labels: np.ndarray) -> np.ndarray:
    """[...] bool: whether every [..., L] label path follows the parent map."""
    labels = np.asarray(labels)
    ok = np.ones(labels.shape[:-1], bool)
    for level in range(1, self.num_levels):
      ok &= self.parents[level][labels[..., level]] == labels[..., level - 1]
    return ok


@dataclasses.dataclass(frozen=True)
class Clip:
  """One trimmed clip.

  Attributes:
    name: clip_id. patient: patient_id (or the source video). subset: e.g. train / test.
    labels: [L] int32 class id per level.
    features: [T_raw, D] float32.
  """
  name: str
  patient: str
  subset: str
  labels: np.ndarray
  features: np.ndarray


@dataclasses.dataclass(frozen=True)
class RecognitionDataset:
  """The clips of one subset (``videos``, the name the batch pipeline reads) and their taxonomy."""
  root: str
  subset: str
  videos: tuple[Clip, ...]
  taxonomy: Taxonomy

  @property
  def labels(self) -> np.ndarray:
    """[N, L] int32."""
    return np.stack([c.labels for c in self.videos]) if self.videos else np.zeros([0, self.taxonomy.num_levels],
                                                                                  np.int32)


def _string_list(value, path: str, where: str) -> tuple[str, ...]:
  if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() == v and v for v in value):
    raise DataError(path, f"{where}: expected a non-empty list of class names (no outer spaces)")
  if len(set(value)) != len(value):
    duplicate = next(v for i, v in enumerate(value) if v in value[:i])
    raise DataError(path, f"{where}: duplicate class name {duplicate!r}")
  return tuple(value)


def read_taxonomy(root: PathLike, *, with_text: bool = True) -> Taxonomy:
  """Reads and checks ``taxonomy.json`` (and, with `with_text`, the text embeddings) of `root`."""
  path = os.path.join(root, TAXONOMY_FILE)
  data = strict_files.json_object(strict_files.load_json(path), path, "top level")
  levels = strict_files.json_key(data, "levels", path, "top level")
  if not isinstance(levels, list) or not levels:
    raise DataError(path, "'levels' must be a non-empty list")
  level_names, classes, parents = [], [], []
  for index, level in enumerate(levels):
    where = f"levels[{index}]"
    level = strict_files.json_object(level, path, where)
    name = strict_files.json_key(level, "name", path, where)
    if not isinstance(name, str) or not name:
      raise DataError(path, f"{where}: 'name' must be a non-empty string")
    level_names.append(name)
    classes.append(_string_list(strict_files.json_key(level, "classes", path, where), path, f"{where}.classes"))
    if index == 0:
      if "parents" in level:
        raise DataError(path, f"{where}: the first level has no parents")
      parents.append(np.zeros([0], np.int32))
      continue
    raw = strict_files.json_key(level, "parents", path, where)
    if not isinstance(raw, list) or len(raw) != len(classes[-1]):
      raise DataError(path, f"{where}.parents: expected {len(classes[-1])} parent indices (one per class)")
    for j, parent in enumerate(raw):
      if isinstance(parent, bool) or not isinstance(parent, int) or not 0 <= parent < len(classes[-2]):
        raise DataError(path, f"{where}.parents[{j}] (class {classes[-1][j]!r}): {parent!r} is not a class index of "
                        f"level {index} ({len(classes[-2])} classes)")
    parents.append(np.asarray(raw, np.int32))
    childless = sorted(set(range(len(classes[-2]))) - set(raw))
    if childless:
      raise DataError(path, f"{where}: class {classes[-2][childless[0]]!r} of level {index} has no child")
  leaf_values = None
  if "leaf_values" in data:
    raw = data["leaf_values"]
    if not isinstance(raw, list) or len(raw) != len(classes[-1]):
      raise DataError(path, f"'leaf_values' must list one number per class of the last level ({len(classes[-1])})")
    leaf_values = np.asarray([strict_files.json_number(v, path, f"leaf_values[{i}]") for i, v in enumerate(raw)])
  unknown = sorted(set(data) - {"levels", "leaf_values"})
  if unknown:
    raise DataError(path, f"unknown key {unknown[0]!r} (expected 'levels' and optionally 'leaf_values')")
  taxonomy = Taxonomy(tuple(level_names), tuple(classes), tuple(parents), leaf_values)
  if with_text:
    taxonomy = dataclasses.replace(taxonomy, text=read_text_embeddings(root, taxonomy))
  return taxonomy


def read_text_embeddings(root: PathLike, taxonomy: Taxonomy) -> tuple[np.ndarray, ...] | None:
  """The class-text embeddings of every level (``text/level_<l>.npy``), or None when `root` has no text directory."""
  if not os.path.isdir(os.path.join(root, TEXT_DIR)):
    return None
  text, width = [], None
  for level, size in enumerate(taxonomy.sizes, 1):
    path = text_path(root, level)
    if not os.path.isfile(path):
      raise DataError(path, f"missing text embeddings of level {level} (give every level or no {TEXT_DIR}/ at all)")
    array = _load_array(path)
    if array.ndim != 2 or array.dtype != np.float32 or not np.all(np.isfinite(array)):
      raise DataError(path, f"text embeddings must be finite float32 [N_l, E], got {array.dtype} {array.shape}")
    if len(array) != size:
      raise DataError(path, f"{len(array)} rows, but level {level} ({taxonomy.level_names[level - 1]!r}) has "
                      f"{size} classes")
    if width is not None and array.shape[1] != width:
      raise DataError(path, f"embedding width {array.shape[1]}, level 1 has {width}")
    width = array.shape[1]
    text.append(array)
  return tuple(text)


def _load_array(path: str) -> np.ndarray:
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as error:
    raise DataError(path, f"cannot read the array ({error})") from None


def read_clips(root: PathLike, taxonomy: Taxonomy) -> dict[str, list[Clip]]:
  """subset -> its clips (clips.tsv order) with features, every label and path checked.

  Raises:
    DataError: a bad row, a label outside its level, a path against the parent map, a patient in two subsets, a
      clip without features, or features of the wrong dtype, rank or width.
  """
  path = os.path.join(root, CLIPS_FILE)
  header = CLIP_COLUMNS + label_columns(taxonomy.num_levels)
  ids = [{name: i for i, name in enumerate(names)} for names in taxonomy.classes]
  subsets: dict[str, list[Clip]] = {}
  seen: set[str] = set()
  patient_subset: dict[str, str] = {}
  feature_dim = None
  for number, fields in strict_files.tsv_rows(path, header):
    name, patient, subset = fields[:3]
    formats.check_video_name(name, path, number)
    if name in seen:
      raise DataError(path, f"line {number}: clip {name!r} appears twice")
    seen.add(name)
    if not patient or not subset:
      raise DataError(path, f"line {number}: empty patient_id or subset")
    if patient_subset.setdefault(patient, subset) != subset:
      raise DataError(path, f"line {number}: patient {patient!r} is in subsets {patient_subset[patient]!r} and "
                      f"{subset!r} (splits must be by patient)")
    labels = []
    for level, label in enumerate(fields[3:]):
      if label not in ids[level]:
        raise DataError(path, f"line {number}: label {label!r} is not a class of level {level + 1} "
                        f"({taxonomy.level_names[level]!r})")
      labels.append(ids[level][label])
      if level and taxonomy.parents[level][labels[-1]] != labels[-2]:
        parent = taxonomy.classes[level - 1][taxonomy.parents[level][labels[-1]]]
        raise DataError(path, f"line {number}: inconsistent label path: {label!r} belongs to {parent!r}, not to "
                        f"{fields[2 + level]!r}")
    feature_path = os.path.join(root, FEATURES_DIR, f"{name}.npy")
    if not os.path.isfile(feature_path):
      raise DataError(feature_path, f"clip {name!r} (clips.tsv line {number}) has no features")
    features = _load_array(feature_path)
    if features.ndim != 2 or len(features) == 0 or features.dtype != np.float32:
      raise DataError(feature_path, f"features must be float32 [T_raw, D] with T_raw >= 1, got {features.dtype} "
                      f"{features.shape}")
    if not np.all(np.isfinite(features)):
      raise DataError(feature_path, "features contain NaN or infinity")
    if feature_dim is not None and features.shape[1] != feature_dim:
      raise DataError(feature_path, f"feature dim {features.shape[1]}, other clips have {feature_dim}")
    feature_dim = features.shape[1]
    subsets.setdefault(subset, []).append(Clip(name, patient, subset, np.asarray(labels, np.int32), features))
  if not seen:
    raise DataError(path, "no clips")
  return subsets


def load_directory(root: PathLike) -> tuple[Taxonomy, dict[str, RecognitionDataset]]:
  """The taxonomy and every subset of the recognition directory `root` (fully validated)."""
  root = os.fspath(root)
  formats.require_directory(root, "recognition data")
  taxonomy = read_taxonomy(root)
  clips = read_clips(root, taxonomy)
  return taxonomy, {subset: RecognitionDataset(root, subset, tuple(c), taxonomy) for subset, c in clips.items()}


def write_taxonomy(root: PathLike, taxonomy: Taxonomy) -> None:
  """Writes taxonomy.json (and the text embeddings when the taxonomy has them), each file atomically."""
  levels = []
  for level, (name, classes) in enumerate(zip(taxonomy.level_names, taxonomy.classes)):
    entry = {"name": name, "classes": list(classes)}
    if level:
      entry["parents"] = [int(p) for p in taxonomy.parents[level]]
    levels.append(entry)
  data = {"levels": levels}
  if taxonomy.leaf_values is not None:
    data["leaf_values"] = [float(v) for v in taxonomy.leaf_values]
  strict_files.write_json(os.path.join(root, TAXONOMY_FILE), data)
  if taxonomy.text is not None:
    for level, array in enumerate(taxonomy.text, 1):
      write_array(text_path(root, level), np.asarray(array, np.float32))


def write_array(path: str, array: np.ndarray) -> None:
  with formats.atomic_output(path, binary=True) as f:
    np.save(f, array, allow_pickle=False)


def write_clips(root: PathLike, taxonomy: Taxonomy, clips: Sequence[Clip], *, features: bool = True) -> None:
  """Writes clips.tsv (label names) and, with `features`, ``features/<clip>.npy`` for every clip."""
  rows = [(c.name, c.patient, c.subset, *(taxonomy.classes[l][int(k)] for l, k in enumerate(c.labels)))
          for c in clips]
  strict_files.write_tsv(os.path.join(root, CLIPS_FILE), CLIP_COLUMNS + label_columns(taxonomy.num_levels), rows)
  if features:
    for clip in clips:
      write_array(os.path.join(root, FEATURES_DIR, f"{clip.name}.npy"), np.asarray(clip.features, np.float32))


def label_names(taxonomy: Taxonomy, labels: np.ndarray) -> list[str]:
  return [taxonomy.classes[level][int(k)] for level, k in enumerate(labels)]


def read_label_rows(path: PathLike, taxonomy: Taxonomy, columns: Mapping[str, int], *,
                    extra_columns: Sequence[str] = ()) -> dict[str, dict]:
  """Reads a TSV with columns ``clip_id``, `extra_columns` (kept as text) and, per group in `columns`
  (prefix -> levels), ``<prefix>_l1 .. <prefix>_lL`` class names; returns clip -> name -> value ([L] int32 ids for
  a group, the text for an extra column).

  Raises:
    DataError: a wrong header, a repeated clip or an unknown class name, naming the line.
  """
  path = os.fspath(path)
  header = (("clip_id",) + tuple(extra_columns)
            + tuple(f"{prefix}_l{l}" for prefix, levels in columns.items() for l in range(1, levels + 1)))
  ids = [{name: i for i, name in enumerate(names)} for names in taxonomy.classes]
  out: dict[str, dict] = {}
  for number, fields in strict_files.tsv_rows(path, header):
    clip = fields[0]
    if clip in out:
      raise DataError(path, f"line {number}: clip {clip!r} appears twice")
    row = dict(zip(extra_columns, fields[1:]))
    position = 1 + len(extra_columns)
    for prefix, levels in columns.items():
      labels = []
      for level in range(levels):
        name = fields[position]
        position += 1
        if name not in ids[level]:
          raise DataError(path, f"line {number}: {prefix}_l{level + 1} {name!r} is not a class of level {level + 1}")
        labels.append(ids[level][name])
      row[prefix] = np.asarray(labels, np.int32)
    out[clip] = row
  return out
