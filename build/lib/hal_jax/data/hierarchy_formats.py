"""Readers and writers of the coarse/fine action hierarchy of FineGym / FineAction (as converted in third_party/).

Files (every reader raises `DataError(path, problem)`; writers replace files atomically):

* ``videos.tsv``: ``index video subset sec2clip_ratio num_segments``;
* ``segments.tsv``: ``video start_s end_s coarse_label fine_label``;
* ``fine_to_coarse.json``: ``{"<fine id>": coarse id}`` (also read by localization directories, see
  hal_jax.data.localization_formats);
* FineGym's ``fine_classes.tsv`` (``fine_label coarse_label set_id glabel name``) and ``coarse_classes.tsv``
  (``coarse_label set_id name``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

from hal_jax.data import formats
from hal_jax.data import strict_files
from hal_jax.data.formats import LabelMap, PathLike
from hal_jax.errors import DataError

HIERARCHICAL_SEGMENTS_HEADER = ("video", "start_s", "end_s", "coarse_label", "fine_label")
HIERARCHICAL_VIDEOS_HEADER = ("index", "video", "subset", "sec2clip_ratio", "num_segments")
FINE_CLASSES_HEADER = ("fine_label", "coarse_label", "set_id", "glabel", "name")
COARSE_CLASSES_HEADER = ("coarse_label", "set_id", "name")



@dataclasses.dataclass(frozen=True)
class HierarchicalSegment:
  """One instance of segments.tsv (seconds). `end_s <= start_s` is kept as in the source (FineAction has 65)."""
  start_s: float
  end_s: float
  coarse_label: int
  fine_label: int


@dataclasses.dataclass(frozen=True)
class HierarchicalVideo:
  """One row of videos.tsv with its segments; clip index = seconds * sec2clip_ratio."""
  name: str
  index: int
  subset: str
  sec2clip_ratio: float
  segments: tuple[HierarchicalSegment, ...]


@dataclasses.dataclass(frozen=True)
class HierarchicalAnnotations:
  """A FineGym / FineAction annotation directory.

  Attributes:
    root: the directory.
    videos: in videos.tsv order.
    fine_to_coarse: fine id -> coarse id.
    fine_names: class names by fine id (fine_classes.tsv), or None when the directory has none.
    coarse_names: class names by coarse id (coarse_classes.tsv), or None.
  """
  root: str
  videos: tuple[HierarchicalVideo, ...]
  fine_to_coarse: dict[int, int]
  fine_names: tuple[str, ...] | None
  coarse_names: tuple[str, ...] | None

  @property
  def num_fine(self) -> int:
    return len(self.fine_to_coarse)

  @property
  def num_coarse(self) -> int:
    return len(set(self.fine_to_coarse.values()))


def read_fine_to_coarse(path: PathLike) -> dict[int, int]:
  """Reads fine_to_coarse.json: ``{"<fine id>": coarse id}``; fine ids must be 0..F-1 and coarse ids 0..C-1."""
  data = strict_files.json_object(strict_files.load_json(path), path, "top level")
  mapping = {}
  for key, value in data.items():
    if not formats.is_integer_text(key) or int(key) < 0:
      raise DataError(path, f"key {key!r} is not a fine class id (a non-negative integer)")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise DataError(path, f"fine class {key}: coarse id must be a non-negative integer, got {value!r}")
    if int(key) in mapping:
      raise DataError(path, f"duplicate fine class id {key!r}")
    mapping[int(key)] = value
  if not mapping:
    raise DataError(path, "no classes (empty object)")
  missing = sorted(set(range(len(mapping))) - set(mapping))
  if missing:
    raise DataError(path, f"fine class ids must be 0..{len(mapping) - 1}; missing {missing[:5]}")
  coarse = set(mapping.values())
  missing = sorted(set(range(max(coarse) + 1)) - coarse)
  if missing:
    raise DataError(path, f"coarse ids must be 0..{max(coarse)} with each used; unused {missing[:5]}")
  return dict(sorted(mapping.items()))


def write_fine_to_coarse(path: PathLike, fine_to_coarse: Mapping[int, int]) -> None:
  """Writes fine_to_coarse.json."""
  strict_files.write_json(path, {str(int(k)): int(v) for k, v in sorted(fine_to_coarse.items())})


def read_hierarchical_segments(path: PathLike,
                               fine_to_coarse: Mapping[int, int] | None = None
                               ) -> dict[str, list[HierarchicalSegment]]:
  """Reads segments.tsv (``video start_s end_s coarse_label fine_label``).

  Args:
    path: the TSV file.
    fine_to_coarse: if given, every fine label must be in it and its coarse label must match.

  Returns:
    video -> segments in file order (videos in order of first appearance).
  """
  videos: dict[str, list[HierarchicalSegment]] = {}
  for number, (video, start, end, coarse, fine) in strict_files.tsv_rows(path, HIERARCHICAL_SEGMENTS_HEADER):
    formats.check_video_name(video, path, number)
    segment = HierarchicalSegment(strict_files.tsv_value(start, path, number, "start_s"),
                                  strict_files.tsv_value(end, path, number, "end_s"),
                                  strict_files.tsv_value(coarse, path, number, "coarse_label", int, minimum=0),
                                  strict_files.tsv_value(fine, path, number, "fine_label", int, minimum=0))
    if segment.start_s < 0:
      raise DataError(path, f"line {number}: start_s {segment.start_s} < 0")
    if fine_to_coarse is not None:
      if segment.fine_label not in fine_to_coarse:
        raise DataError(path, f"line {number}: fine_label {segment.fine_label} is not in fine_to_coarse.json")
      if fine_to_coarse[segment.fine_label] != segment.coarse_label:
        raise DataError(path, f"line {number}: coarse_label {segment.coarse_label} but fine_to_coarse.json maps "
                        f"fine_label {segment.fine_label} to {fine_to_coarse[segment.fine_label]}")
    videos.setdefault(video, []).append(segment)
  return videos


def write_hierarchical_segments(path: PathLike, segments: Mapping[str, Sequence[HierarchicalSegment]]) -> None:
  """Writes segments.tsv (``video start_s end_s coarse_label fine_label``)."""
  strict_files.write_tsv(path, HIERARCHICAL_SEGMENTS_HEADER,
             [(video, float(s.start_s), float(s.end_s), int(s.coarse_label), int(s.fine_label))
              for video, rows in segments.items() for s in rows])


def read_fine_classes(path: PathLike) -> tuple[tuple[str, ...], dict[int, int]]:
  """Reads FineGym's fine_classes.tsv; returns the names by fine id and fine id -> coarse id.

  Names are not unique across coarse classes in gym99 ("(BB) salto backward tucked" is fine class 58 in set 33 and
  fine class 70 in set 35), so they are returned as a tuple, not a LabelMap; a name repeated within one coarse class
  is an error.
  """
  names: list[str] = []
  fine_to_coarse = {}
  seen: dict[tuple[int, str], int] = {}
  for number, (fine, coarse, _, _, name) in strict_files.tsv_rows(path, FINE_CLASSES_HEADER):
    fine_id = strict_files.tsv_value(fine, path, number, "fine_label", int, minimum=0)
    coarse_id = strict_files.tsv_value(coarse, path, number, "coarse_label", int, minimum=0)
    if fine_id != len(names):
      raise DataError(path, f"line {number}: fine_label {fine_id} out of order (expected {len(names)})")
    if not name:
      raise DataError(path, f"line {number}: empty class name")
    if (coarse_id, name) in seen:
      raise DataError(path, f"line {number}: duplicate class name {name!r} in coarse class {coarse_id} (first on "
                      f"line {seen[coarse_id, name]})")
    seen[coarse_id, name] = number
    names.append(name)
    fine_to_coarse[fine_id] = coarse_id
  if not names:
    raise DataError(path, "no classes")
  return tuple(names), fine_to_coarse


def read_coarse_classes(path: PathLike) -> LabelMap:
  """Reads FineGym's coarse_classes.tsv; returns the coarse class names."""
  names: list[str] = []
  for number, (coarse, _, name) in strict_files.tsv_rows(path, COARSE_CLASSES_HEADER):
    if strict_files.tsv_value(coarse, path, number, "coarse_label", int, minimum=0) != len(names):
      raise DataError(path, f"line {number}: coarse_label {coarse} out of order (expected {len(names)})")
    if not name or name in names:
      raise DataError(path, f"line {number}: empty or duplicate class name {name!r}")
    names.append(name)
  if not names:
    raise DataError(path, "no classes")
  return LabelMap(tuple(names))


def load_hierarchical_annotations(root: PathLike) -> HierarchicalAnnotations:
  """Loads and cross-checks a FineGym / FineAction directory.

  Checks: videos.tsv indices are 0..N-1 in order and its names unique; every segment's video is in videos.tsv;
  num_segments matches; labels agree with fine_to_coarse.json, and so do fine_classes.tsv / coarse_classes.tsv when
  present.
  """
  root = os.fspath(root)
  formats.require_directory(root, "annotation")
  fine_to_coarse = read_fine_to_coarse(os.path.join(root, "fine_to_coarse.json"))
  segments_path = os.path.join(root, "segments.tsv")
  segments = read_hierarchical_segments(segments_path, fine_to_coarse)
  videos_path = os.path.join(root, "videos.tsv")
  videos: list[HierarchicalVideo] = []
  seen: set[str] = set()
  for number, (index, name, subset, ratio, count) in strict_files.tsv_rows(videos_path, HIERARCHICAL_VIDEOS_HEADER):
    formats.check_video_name(name, videos_path, number)
    if name in seen:
      raise DataError(videos_path, f"line {number}: duplicate video {name!r}")
    seen.add(name)
    if strict_files.tsv_value(index, videos_path, number, "index", int, minimum=0) != len(videos):
      raise DataError(videos_path, f"line {number}: index {index} out of order (expected {len(videos)})")
    if not subset:
      raise DataError(videos_path, f"line {number}: empty subset")
    sec2clip_ratio = strict_files.tsv_value(ratio, videos_path, number, "sec2clip_ratio")
    if sec2clip_ratio <= 0:
      raise DataError(videos_path, f"line {number}: sec2clip_ratio must be > 0, got {sec2clip_ratio}")
    rows = tuple(segments.get(name, ()))
    if strict_files.tsv_value(count, videos_path, number, "num_segments", int, minimum=0) != len(rows):
      raise DataError(videos_path, f"line {number}: video {name!r} has num_segments {count} but {segments_path} "
                      f"has {len(rows)} rows for it")
    videos.append(HierarchicalVideo(name, len(videos), subset, sec2clip_ratio, rows))
  unknown = sorted(set(segments) - seen)
  if unknown:
    raise DataError(segments_path, f"{len(unknown)} videos are not in videos.tsv, e.g. {unknown[0]!r}")

  fine_names = coarse_names = None
  fine_path = os.path.join(root, "fine_classes.tsv")
  if os.path.exists(fine_path):
    fine_names, fine_classes_to_coarse = read_fine_classes(fine_path)
    if fine_classes_to_coarse != fine_to_coarse:
      raise DataError(fine_path, "fine_label -> coarse_label differs from fine_to_coarse.json")
  coarse_path = os.path.join(root, "coarse_classes.tsv")
  if os.path.exists(coarse_path):
    coarse_names = read_coarse_classes(coarse_path).names
    num_coarse = len(set(fine_to_coarse.values()))
    if len(coarse_names) != num_coarse:
      raise DataError(coarse_path, f"{len(coarse_names)} coarse classes but fine_to_coarse.json uses {num_coarse}")
  return HierarchicalAnnotations(root, tuple(videos), fine_to_coarse, fine_names, coarse_names)


def write_hierarchical_annotations(root: PathLike, annotations: HierarchicalAnnotations) -> None:
  """Writes fine_to_coarse.json, segments.tsv and videos.tsv (index = position in `annotations.videos`) into `root`.

  Class names (fine_classes.tsv / coarse_classes.tsv) are not written.
  """
  root = os.fspath(root)
  write_fine_to_coarse(os.path.join(root, "fine_to_coarse.json"), annotations.fine_to_coarse)
  write_hierarchical_segments(os.path.join(root, "segments.tsv"), {v.name: v.segments for v in annotations.videos})
  strict_files.write_tsv(os.path.join(root, "videos.tsv"), HIERARCHICAL_VIDEOS_HEADER,
             [(i, v.name, v.subset, float(v.sec2clip_ratio), len(v.segments))
              for i, v in enumerate(annotations.videos)])
