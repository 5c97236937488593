"""Readers and writers of temporal action localization data, with strict validation.

Formats (every reader raises `DataError(path, problem)` on bad input; writers replace files atomically):

* ActivityNet-style ground truth JSON: ``{"version", "taxonomy", "database": {video: {"subset", "duration",
  "annotations": [{"segment": [start_s, end_s], "label"}]}}}``.
* ActivityNet-style prediction JSON: ``{"version", "results": {video: [{"label", "score", "segment"}]},
  "external_data"}``.
* Localization feature directory (our layout, written by the synthetic generator)::

    <root>/gt.json                 ActivityNet-style ground truth (all subsets)
    <root>/features/<video>.npy    [T, D] float ("TD" layout)
    <root>/video_info.tsv          header "video subset duration_s feature_fps num_features"
    <root>/classes.txt             optional "<id> <name>"; without it the ids are the sorted label names of gt.json
    <root>/fine_to_coarse.json     optional; keys are class ids of the label map (hal_jax.data.hierarchy_formats)

Segment bounds in the ground truth: ``end < start`` and ``start < 0`` are errors; zero-length segments (``end ==
start``) are kept, because ActivityNet v1.3 has 12 of them. A segment that ends (or even starts) after the video's
``duration`` is accepted by default, because THUMOS'14's official annotations have 92 such segments (up to 537 s past
the stored duration, so no small tolerance would cover them); ``strict_bounds=True`` makes it an error.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from hal_jax.data import formats
from hal_jax.data import hierarchy_formats
from hal_jax.data import strict_files
from hal_jax.data.formats import LabelMap, PathLike
from hal_jax.errors import DataError

VIDEO_INFO_HEADER = ("video", "subset", "duration_s", "feature_fps", "num_features")


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
  data = strict_files.json_object(strict_files.load_json(path), path, "top level")
  database = strict_files.json_object(strict_files.json_key(data, "database", path, "top level"), path, "database")
  videos = {}
  for name, entry in database.items():
    where = f"video {name!r}"
    formats.check_video_name(name, path)
    entry = strict_files.json_object(entry, path, where)
    subset = strict_files.json_key(entry, "subset", path, where)
    if not isinstance(subset, str) or not subset:
      raise DataError(path, f"{where}: subset must be a non-empty string, got {subset!r}")
    duration = strict_files.json_number(strict_files.json_key(entry, "duration", path, where), path,
                                        f"{where}: duration")
    if duration <= 0:
      raise DataError(path, f"{where}: duration must be > 0, got {duration}")
    raw_annotations = strict_files.json_key(entry, "annotations", path, where)
    if not isinstance(raw_annotations, list):
      raise DataError(path, f"{where}: annotations must be a list, got {type(raw_annotations).__name__}")
    annotations = []
    for i, raw in enumerate(raw_annotations):
      at = f"{where} annotation {i}"
      raw = strict_files.json_object(raw, path, at)
      start, end = strict_files.json_segment(strict_files.json_key(raw, "segment", path, at), path, at)
      if start < 0:
        raise DataError(path, f"{at}: segment start {start} < 0")
      if strict_bounds and end > duration:
        raise DataError(path, f"{at}: segment [{start}, {end}] ends after the duration {duration} "
                        "(strict_bounds=True)")
      label = strict_files.json_key(raw, "label", path, at)
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
  strict_files.write_json(path, {"version": version, "taxonomy": [], "database": database})


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
  data = strict_files.json_object(strict_files.load_json(path), path, "top level")
  results = strict_files.json_object(strict_files.json_key(data, "results", path, "top level"), path, "results")
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
      raw = strict_files.json_object(raw, path, at)
      label = strict_files.json_key(raw, "label", path, at)
      if not isinstance(label, str) or not label:
        raise DataError(path, f"{at}: label must be a non-empty string, got {label!r}")
      if classes is not None and label not in classes:
        raise DataError(path, f"{at}: class {label!r} is not in the ground truth")
      score = strict_files.json_number(strict_files.json_key(raw, "score", path, at), path, f"{at}: score")
      segment = strict_files.json_segment(strict_files.json_key(raw, "segment", path, at), path, at)
      detections.append(Detection(label, score, segment))
    predictions[name] = detections
  return predictions


def write_detection_predictions(path: PathLike, predictions: Mapping[str, Sequence[Detection]]) -> None:
  """Writes an ActivityNet-style prediction JSON (keys: version, results, external_data)."""
  results = {name: [{"label": d.label, "score": float(d.score),
                     "segment": [float(d.segment[0]), float(d.segment[1])]} for d in detections]
             for name, detections in predictions.items()}
  strict_files.write_json(path, {"version": "hal_jax", "results": results, "external_data": {}})


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
  for number, (name, subset, duration, fps, count) in strict_files.tsv_rows(path, VIDEO_INFO_HEADER):
    formats.check_video_name(name, path, number)
    if name in infos:
      raise DataError(path, f"line {number}: duplicate video {name!r}")
    info = VideoInfo(name, subset, strict_files.tsv_value(duration, path, number, "duration_s"),
                     strict_files.tsv_value(fps, path, number, "feature_fps"),
                     strict_files.tsv_value(count, path, number, "num_features", int, minimum=1))
    if info.duration <= 0 or info.feature_fps <= 0:
      raise DataError(path, f"line {number}: duration_s and feature_fps must be > 0")
    infos[name] = info
  return infos


def write_video_info(path: PathLike, infos: Sequence[VideoInfo]) -> None:
  """Writes video_info.tsv."""
  strict_files.write_tsv(path, VIDEO_INFO_HEADER,
             [(i.name, i.subset, float(i.duration), float(i.feature_fps), int(i.num_features)) for i in infos])


@dataclasses.dataclass(frozen=True)
class LocalizationVideo:
  """One video of a localization directory.

  Attributes:
    name: the video name.
    subset: its subset in gt.json.
    duration: seconds.
    feature_fps: feature steps per second (step t covers [t / fps, (t + 1) / fps)).
    features: [T, D] float32: a `formats.FeatureFile` (read lazily) when loaded from a directory, an array when
      built in memory.
    segments: [N, 2] float64 ground truth (start_s, end_s).
    labels: [N] int32 class ids of the segments.
  """
  name: str
  subset: str
  duration: float
  feature_fps: float
  features: np.ndarray | formats.FeatureFile
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
    fine_to_coarse = hierarchy_formats.read_fine_to_coarse(hierarchy_path)
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
    features = formats.open_features(feature_path, "TD", feature_dim)
    feature_dim = features.shape[1]
    if features.shape[0] != info.num_features:
      raise DataError(feature_path, f"{features.shape[0]} feature steps but {info_path} says num_features "
                      f"{info.num_features}")
    segments = np.array([a.segment for a in gt.annotations], np.float64).reshape([-1, 2])
    labels = label_map.ids([a.label for a in gt.annotations], gt_path)
    loaded.append(LocalizationVideo(name, gt.subset, gt.duration, info.feature_fps, features, segments, labels))
  return LocalizationDataset(root, label_map, tuple(loaded), fine_to_coarse)
