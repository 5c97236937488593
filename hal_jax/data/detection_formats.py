"""Readers and writers of temporal action localization data, with strict validation.

Formats (every reader raises `DataError(path, problem)` on bad input; writers replace files atomically):

* ActivityNet-style ground truth JSON: ``{"version", "taxonomy", "database": {video: {"subset", "duration",
  "annotations": [{"segment": [start_s, end_s], "label"}]}}}``.
* ActivityNet-style prediction JSON: ``{"version", "results": {video: [{"label", "score", "segment"}]},
  "external_data"}``.
* Coarse/fine hierarchy (FineGym / FineAction as converted in third_party/): ``videos.tsv`` (``index video subset
  sec2clip_ratio num_segments``), ``segments.tsv`` (``video start_s end_s coarse_label fine_label``),
  ``fine_to_coarse.json`` (``{"<fine id>": coarse id}``), and FineGym's ``fine_classes.tsv`` (``fine_label
  coarse_label set_id glabel name``) / ``coarse_classes.tsv`` (``coarse_label set_id name``).
* Localization feature directory (our layout, written by the synthetic generator)::

    <root>/gt.json                 ActivityNet-style ground truth (all subsets)
    <root>/features/<video>.npy    [T, D] float ("TD" layout)
    <root>/video_info.tsv          header "video subset duration_s feature_fps num_features"
    <root>/classes.txt             optional "<id> <name>"; without it the ids are the sorted label names of gt.json
    <root>/fine_to_coarse.json     optional; keys are class ids of the label map

Segment bounds in the ground truth: ``end < start`` and ``start < 0`` are errors; zero-length segments (``end ==
start``) are kept, because ActivityNet v1.3 has 12 of them. A segment that ends (or even starts) after the video's
``duration`` is accepted by default, because THUMOS'14's official annotations have 92 such segments (up to 537 s past
the stored duration, so no small tolerance would cover them); ``strict_bounds=True`` makes it an error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hal_jax.data import formats
from hal_jax.data.formats import LabelMap, PathLike
from hal_jax.errors import DataError

HIERARCHICAL_SEGMENTS_HEADER = ("video", "start_s", "end_s", "coarse_label", "fine_label")
HIERARCHICAL_VIDEOS_HEADER = ("index", "video", "subset", "sec2clip_ratio", "num_segments")
FINE_CLASSES_HEADER = ("fine_label", "coarse_label", "set_id", "glabel", "name")
COARSE_CLASSES_HEADER = ("coarse_label", "set_id", "name")
VIDEO_INFO_HEADER = ("video", "subset", "duration_s", "feature_fps", "num_features")


def _load_json(path: PathLike) -> Any:
  """The parsed JSON of `path`; a key repeated in one object is an error (json.loads would keep only the last)."""
  def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
      duplicate = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
      raise DataError(path, f"duplicate JSON key {duplicate!r}")
    return obj
  try:
    return json.loads(formats.read_text(path), object_pairs_hook=unique_keys)
  except json.JSONDecodeError as e:
    raise DataError(path, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def _write_json(path: PathLike, data: Any) -> None:
  # allow_nan=False: a NaN would be written as the non-standard token NaN that other JSON readers reject.
  formats.write_text_atomic(path, json.dumps(data, allow_nan=False, separators=(",", ":")) + "\n")


def _number(value: Any, path: PathLike, where: str) -> float:
  """A finite JSON number (bools are not numbers here)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise DataError(path, f"{where}: expected a number, got {value!r}")
  if not math.isfinite(value):
    raise DataError(path, f"{where}: non-finite number {value!r}")
  return float(value)


def _object(value: Any, path: PathLike, where: str) -> dict[str, Any]:
  if not isinstance(value, dict):
    raise DataError(path, f"{where}: expected a JSON object, got {type(value).__name__}")
  return value


def _key(obj: dict[str, Any], key: str, path: PathLike, where: str) -> Any:
  if key not in obj:
    raise DataError(path, f"{where}: missing key {key!r}")
  return obj[key]


def _segment(value: Any, path: PathLike, where: str) -> tuple[float, float]:
  if not isinstance(value, (list, tuple)) or len(value) != 2:
    raise DataError(path, f"{where}: segment must be a pair [start, end], got {value!r}")
  start = _number(value[0], path, f"{where}: segment start")
  end = _number(value[1], path, f"{where}: segment end")
  if end < start:
    raise DataError(path, f"{where}: segment end {end} < start {start}")
  return start, end


def _tsv_rows(path: PathLike, header: Sequence[str]) -> list[tuple[int, list[str]]]:
  """(line number, fields) of a tab-separated file with exactly `header`; each row must have len(header) fields."""
  lines = formats.read_text(path).split("\n")
  while lines and not lines[-1].strip():
    lines.pop()
  if not lines or lines[0].rstrip("\r").split("\t") != list(header):
    found = lines[0] if lines else "an empty file"
    raise DataError(path, f"expected the header {chr(9).join(header)!r}, found {found!r}")
  rows = []
  for number, line in enumerate(lines[1:], 2):
    fields = line.rstrip("\r").split("\t")
    if len(fields) != len(header):
      raise DataError(path, f"line {number}: expected {len(header)} tab-separated fields "
                      f"({' '.join(header)}), got {len(fields)}")
    rows.append((number, fields))
  return rows


def _tsv_value(text: str, path: PathLike, number: int, column: str, kind: type = float,
               minimum: float | None = None) -> Any:
  """A finite int or float cell of a TSV row, at least `minimum` when given."""
  try:
    value = kind(text)
  except ValueError:
    raise DataError(path, f"line {number}: {column} must be {'an integer' if kind is int else 'a number'}, got "
                    f"{text!r}") from None
  if not math.isfinite(value):
    raise DataError(path, f"line {number}: {column} is not finite ({text!r})")
  if minimum is not None and value < minimum:
    raise DataError(path, f"line {number}: {column} must be >= {minimum}, got {value}")
  return value


def _write_tsv(path: PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
  # repr(float) is the shortest string that reads back bit-identically.
  def cell(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)
  out = ["\t".join(header) + "\n"]
  out.extend("\t".join(cell(v) for v in row) + "\n" for row in rows)
  formats.write_text_atomic(path, "".join(out))


# ----------------------------------------------------------------------------------------------------------------------
# ActivityNet-style ground truth and predictions.


@dataclasses.dataclass(frozen=True)
class DetectionAnnotation:
  """One action instance: segment = (start_s, end_s) in seconds."""
  segment: tuple[float, float]
  label: str


@dataclasses.dataclass(frozen=True)
class DetectionVideo:
  """One video of a ground truth file; duration in seconds."""
  name: str
  subset: str
  duration: float
  annotations: tuple[DetectionAnnotation, ...]


@dataclasses.dataclass(frozen=True)
class Detection:
  """One predicted instance: segment = (start_s, end_s) in seconds."""
  label: str
  score: float
  segment: tuple[float, float]


def read_detection_ground_truth(path: PathLike, *, label_map: LabelMap | None = None,
                                strict_bounds: bool = False) -> dict[str, DetectionVideo]:
  """Reads an ActivityNet-style ground truth JSON.

  Args:
    path: the JSON file.
    label_map: if given, every label must be one of its classes.
    strict_bounds: also reject segments that end after the video's duration (see the module docstring).

  Returns:
    video name -> DetectionVideo, in file order.
  """
  data = _object(_load_json(path), path, "top level")
  database = _object(_key(data, "database", path, "top level"), path, "database")
  videos = {}
  for name, entry in database.items():
    where = f"video {name!r}"
    formats.check_video_name(name, path)
    entry = _object(entry, path, where)
    subset = _key(entry, "subset", path, where)
    if not isinstance(subset, str) or not subset:
      raise DataError(path, f"{where}: subset must be a non-empty string, got {subset!r}")
    duration = _number(_key(entry, "duration", path, where), path, f"{where}: duration")
    if duration <= 0:
      raise DataError(path, f"{where}: duration must be > 0, got {duration}")
    raw_annotations = _key(entry, "annotations", path, where)
    if not isinstance(raw_annotations, list):
      raise DataError(path, f"{where}: annotations must be a list, got {type(raw_annotations).__name__}")
    annotations = []
    for i, raw in enumerate(raw_annotations):
      at = f"{where} annotation {i}"
      raw = _object(raw, path, at)
      start, end = _segment(_key(raw, "segment", path, at), path, at)
      if start < 0:
        raise DataError(path, f"{at}: segment start {start} < 0")
      if strict_bounds and end > duration:
        raise DataError(path, f"{at}: segment [{start}, {end}] ends after the duration {duration} "
                        "(strict_bounds=True)")
      label = _key(raw, "label", path, at)
      if not isinstance(label, str) or not label:
        raise DataError(path, f"{at}: label must be a non-empty string, got {label!r}")
      if label_map is not None and label not in label_map:
        raise DataError(path, f"{at}: label {label!r} is not in the class list")
      annotations.append(DetectionAnnotation((start, end), label))
    videos[name] = DetectionVideo(name, subset, duration, tuple(annotations))
  return videos


def write_detection_ground_truth(path: PathLike, videos: Mapping[str, DetectionVideo],
                                 version: str = "hal_jax") -> None:
  """Writes an ActivityNet-style ground truth JSON (keys: version, taxonomy, database)."""
  database = {
      name: {"subset": v.subset, "duration": float(v.duration),
             "annotations": [{"segment": [float(a.segment[0]), float(a.segment[1])], "label": a.label}
                             for a in v.annotations]}
      for name, v in videos.items()}
  _write_json(path, {"version": version, "taxonomy": [], "database": database})


def ground_truth_labels(ground_truth: Mapping[str, DetectionVideo]) -> list[str]:
  """The sorted set of labels used in `ground_truth` (numerically sorted when every label is an integer)."""
  labels = {a.label for v in ground_truth.values() for a in v.annotations}
  if labels and all(formats.is_integer_text(label) for label in labels):
    return sorted(labels, key=int)
  return sorted(labels)


def read_detection_predictions(path: PathLike, ground_truth: Mapping[str, DetectionVideo] | None = None,
                               subset: str | None = None, *,
                               label_map: LabelMap | None = None) -> dict[str, list[Detection]]:
  """Reads an ActivityNet-style prediction JSON.

  Args:
    path: the JSON file.
    ground_truth: if given, every video must be one of its videos and every label one of its labels (or of
      `label_map`'s classes when that is given).
    subset: with `ground_truth`, keep only the videos of this subset (predictions for the other ground truth videos
      are dropped, so that one file of all predictions can be scored per subset).
    label_map: if given, every label must be one of its classes.

  Returns:
    video name -> detections in file order.
  """
  if subset is not None and ground_truth is None:
    raise ValueError("subset needs ground_truth")
  data = _object(_load_json(path), path, "top level")
  results = _object(_key(data, "results", path, "top level"), path, "results")
  classes: set[str] | None = None
  if label_map is not None:
    classes = set(label_map.names)
  elif ground_truth is not None:
    classes = set(ground_truth_labels(ground_truth))
  predictions = {}
  for name, raw_detections in results.items():
    where = f"video {name!r}"
    if ground_truth is not None:
      if name not in ground_truth:
        raise DataError(path, f"{where} is not in the ground truth")
      if subset is not None and ground_truth[name].subset != subset:
        continue
    if not isinstance(raw_detections, list):
      raise DataError(path, f"{where}: expected a list of detections, got {type(raw_detections).__name__}")
    detections = []
    for i, raw in enumerate(raw_detections):
      at = f"{where} detection {i}"
      raw = _object(raw, path, at)
      label = _key(raw, "label", path, at)
      if not isinstance(label, str) or not label:
        raise DataError(path, f"{at}: label must be a non-empty string, got {label!r}")
      if classes is not None and label not in classes:
        raise DataError(path, f"{at}: class {label!r} is not in the ground truth")
      score = _number(_key(raw, "score", path, at), path, f"{at}: score")
      segment = _segment(_key(raw, "segment", path, at), path, at)
      detections.append(Detection(label, score, segment))
    predictions[name] = detections
  return predictions


def write_detection_predictions(path: PathLike, predictions: Mapping[str, Sequence[Detection]]) -> None:
  """Writes an ActivityNet-style prediction JSON (keys: version, results, external_data)."""
  results = {name: [{"label": d.label, "score": float(d.score),
                     "segment": [float(d.segment[0]), float(d.segment[1])]} for d in detections]
             for name, detections in predictions.items()}
  _write_json(path, {"version": "hal_jax", "results": results, "external_data": {}})


# ----------------------------------------------------------------------------------------------------------------------
# Coarse/fine hierarchy (FineGym, FineAction).


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
  data = _object(_load_json(path), path, "top level")
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
  _write_json(path, {str(int(k)): int(v) for k, v in sorted(fine_to_coarse.items())})


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
  for number, (video, start, end, coarse, fine) in _tsv_rows(path, HIERARCHICAL_SEGMENTS_HEADER):
    formats.check_video_name(video, path, number)
    segment = HierarchicalSegment(_tsv_value(start, path, number, "start_s"), _tsv_value(end, path, number, "end_s"),
                                  _tsv_value(coarse, path, number, "coarse_label", int, minimum=0),
                                  _tsv_value(fine, path, number, "fine_label", int, minimum=0))
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
  _write_tsv(path, HIERARCHICAL_SEGMENTS_HEADER,
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
  for number, (fine, coarse, _, _, name) in _tsv_rows(path, FINE_CLASSES_HEADER):
    fine_id = _tsv_value(fine, path, number, "fine_label", int, minimum=0)
    coarse_id = _tsv_value(coarse, path, number, "coarse_label", int, minimum=0)
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
  for number, (coarse, _, name) in _tsv_rows(path, COARSE_CLASSES_HEADER):
    if _tsv_value(coarse, path, number, "coarse_label", int, minimum=0) != len(names):
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
  for number, (index, name, subset, ratio, count) in _tsv_rows(videos_path, HIERARCHICAL_VIDEOS_HEADER):
    formats.check_video_name(name, videos_path, number)
    if name in seen:
      raise DataError(videos_path, f"line {number}: duplicate video {name!r}")
    seen.add(name)
    if _tsv_value(index, videos_path, number, "index", int, minimum=0) != len(videos):
      raise DataError(videos_path, f"line {number}: index {index} out of order (expected {len(videos)})")
    if not subset:
      raise DataError(videos_path, f"line {number}: empty subset")
    sec2clip_ratio = _tsv_value(ratio, videos_path, number, "sec2clip_ratio")
    if sec2clip_ratio <= 0:
      raise DataError(videos_path, f"line {number}: sec2clip_ratio must be > 0, got {sec2clip_ratio}")
    rows = tuple(segments.get(name, ()))
    if _tsv_value(count, videos_path, number, "num_segments", int, minimum=0) != len(rows):
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
  _write_tsv(os.path.join(root, "videos.tsv"), HIERARCHICAL_VIDEOS_HEADER,
             [(i, v.name, v.subset, float(v.sec2clip_ratio), len(v.segments))
              for i, v in enumerate(annotations.videos)])


# ----------------------------------------------------------------------------------------------------------------------
# Localization feature directory.


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """One row of video_info.tsv: the features of `name` have `num_features` steps at `feature_fps`."""
  name: str
  subset: str
  duration: float
  feature_fps: float
  num_features: int


def read_video_info(path: PathLike) -> dict[str, VideoInfo]:
  """Reads video_info.tsv (``video subset duration_s feature_fps num_features``)."""
  infos = {}
  for number, (name, subset, duration, fps, count) in _tsv_rows(path, VIDEO_INFO_HEADER):
    formats.check_video_name(name, path, number)
    if name in infos:
      raise DataError(path, f"line {number}: duplicate video {name!r}")
    info = VideoInfo(name, subset, _tsv_value(duration, path, number, "duration_s"),
                     _tsv_value(fps, path, number, "feature_fps"),
                     _tsv_value(count, path, number, "num_features", int, minimum=1))
    if info.duration <= 0 or info.feature_fps <= 0:
      raise DataError(path, f"line {number}: duration_s and feature_fps must be > 0")
    infos[name] = info
  return infos


def write_video_info(path: PathLike, infos: Sequence[VideoInfo]) -> None:
  """Writes video_info.tsv."""
  _write_tsv(path, VIDEO_INFO_HEADER,
             [(i.name, i.subset, float(i.duration), float(i.feature_fps), int(i.num_features)) for i in infos])


@dataclasses.dataclass(frozen=True)
class LocalizationVideo:
  """One video of a localization directory.

  Attributes:
    name: the video name.
    subset: its subset in gt.json.
    duration: seconds.
    feature_fps: feature steps per second (step t covers [t / fps, (t + 1) / fps)).
    features: [T, D] float32.
    segments: [N, 2] float64 ground truth (start_s, end_s).
    labels: [N] int32 class ids of the segments.
  """
  name: str
  subset: str
  duration: float
  feature_fps: float
  features: np.ndarray
  segments: np.ndarray
  labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class LocalizationDataset:
  """The videos of one subset of a localization directory, in gt.json order."""
  root: str
  label_map: LabelMap
  videos: tuple[LocalizationVideo, ...]
  fine_to_coarse: dict[int, int] | None


def load_localization_split(root: PathLike, subset: str, *, feature_dim: int | None = None,
                            videos: Sequence[str] | None = None,
                            strict_bounds: bool = False) -> LocalizationDataset:
  """Loads and validates the videos of `subset` of a localization directory (see the module docstring).

  Args:
    root: the directory.
    subset: the gt.json subset to load.
    feature_dim: the expected D; None = whatever the first video has (all must agree).
    videos: load only these videos (each must be in `subset`).
    strict_bounds: reject ground truth segments that end after the duration.
  """
  root = os.fspath(root)
  formats.require_directory(root, "data")
  gt_path = os.path.join(root, "gt.json")
  classes_path = os.path.join(root, "classes.txt")
  label_map = formats.read_mapping(classes_path) if os.path.exists(classes_path) else None
  ground_truth = read_detection_ground_truth(gt_path, label_map=label_map, strict_bounds=strict_bounds)
  if label_map is None:
    label_map = LabelMap(tuple(ground_truth_labels(ground_truth)))
  fine_to_coarse = None
  hierarchy_path = os.path.join(root, "fine_to_coarse.json")
  if os.path.exists(hierarchy_path):
    fine_to_coarse = read_fine_to_coarse(hierarchy_path)
    if len(fine_to_coarse) != label_map.num_classes:
      raise DataError(hierarchy_path, f"{len(fine_to_coarse)} fine classes but the label map has "
                      f"{label_map.num_classes}")
  info_path = os.path.join(root, "video_info.tsv")
  infos = read_video_info(info_path)
  features_dir = os.path.join(root, "features")
  formats.require_directory(features_dir, "features")

  names = [n for n, v in ground_truth.items() if v.subset == subset]
  if videos is not None:
    for name in videos:
      if name not in ground_truth or ground_truth[name].subset != subset:
        raise DataError(gt_path, f"video {name!r} is not in subset {subset!r}")
    names = list(videos)
  if not names:
    subsets = sorted({v.subset for v in ground_truth.values()})
    raise DataError(gt_path, f"no videos of subset {subset!r} (subsets: {subsets})")
  loaded = []
  for name in names:
    gt = ground_truth[name]
    if name not in infos:
      raise DataError(info_path, f"video {name!r} of {gt_path} has no row")
    info = infos[name]
    if info.subset != gt.subset or not math.isclose(info.duration, gt.duration, rel_tol=1e-6, abs_tol=1e-3):
      raise DataError(info_path, f"video {name!r}: subset/duration ({info.subset}, {info.duration}) differ from "
                      f"gt.json ({gt.subset}, {gt.duration})")
    feature_path = os.path.join(features_dir, f"{name}.npy")
    if not os.path.isfile(feature_path):
      raise DataError(feature_path, f"video {name!r} of subset {subset!r} has no features")
    features = formats.read_features(feature_path, "TD", feature_dim)
    feature_dim = features.shape[1]
    if features.shape[0] != info.num_features:
      raise DataError(feature_path, f"{features.shape[0]} feature steps but {info_path} says num_features "
                      f"{info.num_features}")
    segments = np.array([a.segment for a in gt.annotations], np.float64).reshape([-1, 2])
    labels = label_map.ids([a.label for a in gt.annotations], gt_path)
    loaded.append(LocalizationVideo(name, gt.subset, gt.duration, info.feature_fps, features, segments, labels))
  return LocalizationDataset(root, label_map, tuple(loaded), fine_to_coarse)
