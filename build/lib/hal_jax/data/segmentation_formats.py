"""Readers and writers of the frame-level segmentation formats (MS-TCN directories, segments.tsv), strictly validated.

Formats (all text is UTF-8; every reader raises `DataError(path, problem)` on bad input):

* MS-TCN directory::

    <root>/features/<video>.npy        [D, T] (layout "DT", MS-TCN) or [T, D] (layout "TD")
    <root>/groundTruth/<video>.txt     one label name per frame
    <root>/transcripts/<video>.txt     one action per line (optional: derived from groundTruth when absent)
    <root>/mapping.txt                 "<id> <name>" per line, ids 0..C-1 in order
    <root>/splits/<split>.split<k>.bundle   one video per line (a ".txt" suffix is stripped)

* segments.tsv: tab-separated, header ``video start_frame end_frame label``; the rows of a video are consecutive,
  contiguous from frame 0, ``end_frame`` exclusive.

Label ids are int32 0..C-1 in mapping.txt order; transcripts have consecutive duplicates collapsed.

Length rule of `load_mstcn_split`: feature and label lengths may differ by at most `length_tolerance` frames; both
are then cut to the shorter one (features longer -> trimmed to the labels, as ATBA does for Hollywood; labels longer
-> the trailing labels that have no feature are dropped, as MS-TCN's batch generator does).

The shared file layer (atomic writes, mapping.txt, split lists, feature arrays) is `hal_jax.data.formats`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np

from hal_jax.data.formats import (FeatureFile, LabelMap, PathLike, check_layout, check_video_name, is_integer_text,
                                  open_features, read_mapping, read_split_list, require_directory, text_lines,
                                  write_features, write_text_atomic)
from hal_jax.errors import ConfigError, DataError

SEGMENTS_TSV_HEADER = ("video", "start_frame", "end_frame", "label")


# ----------------------------------------------------------------------------------------------------------------------
# Frame labels and transcripts.


def _read_names(path: PathLike, what: str) -> list[str]:
  lines = [line.strip() for line in text_lines(path)]
  if not lines:
    raise DataError(path, f"empty {what} (no lines)")
  for number, name in enumerate(lines, 1):
    if not name:
      raise DataError(path, f"line {number}: empty line inside the {what}")
  return lines


def read_frame_labels(path: PathLike, label_map: LabelMap) -> np.ndarray:
  """Reads groundTruth/<video>.txt (one label name per frame).

  Returns:
    labels: [T] int32 ids.
  """
  return label_map.ids(_read_names(path, "frame labels"), path, position="line")


def _write_names(path: PathLike, names: Sequence[str]) -> None:
  write_text_atomic(path, "".join(f"{n}\n" for n in names))


def write_frame_labels(path: PathLike, names: Sequence[str]) -> None:
  """Writes one label name per frame."""
  _write_names(path, names)


def read_transcript(path: PathLike, label_map: LabelMap) -> np.ndarray:
  """Reads transcripts/<video>.txt (one action per line).

  Returns:
    transcript: [M] int32 ids, consecutive duplicates collapsed (a frame labelling cannot separate them).
  """
  return collapse_runs(label_map.ids(_read_names(path, "transcript"), path, position="line"))


def write_transcript(path: PathLike, names: Sequence[str]) -> None:
  """Writes one action name per line."""
  if not names:
    raise ValueError(f"{path}: empty transcript")
  _write_names(path, names)

# ----------------------------------------------------------------------------------------------------------------------
# Frame labels <-> segments.


def labels_to_segments(labels: np.ndarray) -> list[tuple[int, int, int]]:
  """Runs of equal values of labels: [T] as (label, start, end_exclusive), in temporal order."""
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be [T], got shape {labels.shape}")
  if labels.size == 0:
    return []
  starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
  ends = np.r_[starts[1:], labels.size]
  return [(int(labels[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def segments_to_labels(segments: Sequence[tuple[int, int, int]], length: int) -> np.ndarray:
  """Expands (label, start, end_exclusive) segments into labels: [length] int32; uncovered frames are -1."""
  labels = np.full([length], -1, np.int32)
  for label, start, end in segments:
    if not 0 <= start < end <= length:
      raise ValueError(f"segment ({label}, {start}, {end}) is empty or outside [0, {length})")
    labels[start:end] = label
  return labels


def collapse_runs(labels: np.ndarray) -> np.ndarray:
  """The transcript of labels: [T]: one entry per run of equal values, [M] int32 (-1 is not treated specially)."""
  labels = np.asarray(labels, np.int32)
  if labels.size == 0:
    return labels.reshape([0])
  return labels[np.r_[True, labels[1:] != labels[:-1]]]


# ----------------------------------------------------------------------------------------------------------------------
# segments.tsv.

SegmentRow = tuple[int, int, str]  # (start_frame, end_frame exclusive, label name)


def read_segments_tsv(path: PathLike) -> dict[str, list[SegmentRow]]:
  """Reads segments.tsv (header ``video start_frame end_frame label``, tab-separated).

  The rows of a video must be consecutive, start at frame 0 and be contiguous (each row starts where the previous
  one ends), with start < end.

  Returns:
    video -> [(start_frame, end_frame_exclusive, label_name)] in temporal order (file order of the videos).
  """
  lines = text_lines(path)
  if not lines or tuple(lines[0].split("\t")) != SEGMENTS_TSV_HEADER:
    found = lines[0] if lines else "an empty file"
    raise DataError(path, f"expected the header {chr(9).join(SEGMENTS_TSV_HEADER)!r}, found {found!r}")
  videos: dict[str, list[SegmentRow]] = {}
  previous_video = None
  for number, line in enumerate(lines[1:], 2):
    fields = line.split("\t")
    if len(fields) != 4 or not is_integer_text(fields[1]) or not is_integer_text(fields[2]) or not fields[3]:
      raise DataError(path, f"line {number}: expected 'video<TAB>start_frame<TAB>end_frame<TAB>label' with integer "
                      f"frames, got {line!r}")
    video, start, end, label = fields[0], int(fields[1]), int(fields[2]), fields[3]
    check_video_name(video, path, number)
    if video != previous_video:
      if video in videos:
        raise DataError(path, f"line {number}: rows of video {video!r} are not consecutive")
      videos[video] = []
      previous_video = video
    rows = videos[video]
    expected_start = rows[-1][1] if rows else 0
    if start != expected_start:
      raise DataError(path, f"line {number}: video {video!r} segment starts at frame {start}, expected "
                      f"{expected_start} (segments must be contiguous from frame 0)")
    if end <= start:
      raise DataError(path, f"line {number}: segment start {start} >= end {end}")
    rows.append((start, end, label))
  return videos


def write_segments_tsv(path: PathLike, segments: Mapping[str, Sequence[SegmentRow]]) -> None:
  """Writes segments.tsv from video -> [(start_frame, end_frame_exclusive, label_name)]."""
  out = ["\t".join(SEGMENTS_TSV_HEADER) + "\n"]
  for video, rows in segments.items():
    out.extend(f"{video}\t{int(start)}\t{int(end)}\t{label}\n" for start, end, label in rows)
  write_text_atomic(path, "".join(out))


def segment_rows_to_labels(rows: Sequence[SegmentRow], label_map: LabelMap, where: PathLike) -> np.ndarray:
  """Frame labels of one video's segments.tsv rows: [end of the last row] int32 (uncovered frames are -1)."""
  if not rows:
    return np.zeros([0], np.int32)
  ids = label_map.ids([label for _, _, label in rows], where, position="row")
  return segments_to_labels([(int(i), s, e) for i, (s, e, _) in zip(ids, rows)], rows[-1][1])


def labels_to_segment_rows(labels: np.ndarray, label_map: LabelMap) -> list[SegmentRow]:
  """segments.tsv rows (start, end_exclusive, name) of labels: [T] int32 ids."""
  return [(s, e, label_map.names[i]) for i, s, e in labels_to_segments(labels)]


# ----------------------------------------------------------------------------------------------------------------------
# MS-TCN directory.


@dataclasses.dataclass(frozen=True)
class SegmentationVideo:
  """One video of an MS-TCN directory.

  Attributes:
    name: the video name (file stem).
    features: [T, D] float32 at the raw frame rate: a `FeatureFile` (read lazily) when loaded from a directory, an
      array when built in memory.
    labels: [T] int32 frame ground truth (raw rate).
    transcript: [M] int32 ordered actions, consecutive duplicates collapsed.
  """
  name: str
  features: np.ndarray | FeatureFile
  labels: np.ndarray
  transcript: np.ndarray


@dataclasses.dataclass(frozen=True)
class SegmentationDataset:
  """The videos of one split of an MS-TCN directory, in split-list order."""
  root: str
  label_map: LabelMap
  videos: tuple[SegmentationVideo, ...]


def split_path(root: PathLike, split: str, split_index: int) -> str:
  """<root>/splits/<split>.split<k>.bundle."""
  return os.path.join(os.fspath(root), "splits", f"{split}.split{split_index}.bundle")


def load_mstcn_split(root: PathLike, split: str, split_index: int = 1, *, feature_layout: str = "DT",
                     feature_dim: int | None = None, length_tolerance: int = 0,
                     videos: Sequence[str] | None = None) -> SegmentationDataset:
  """Loads and validates one split of an MS-TCN directory (see the module docstring for the layout).

  Args:
    root: the data directory.
    split: "train", "test", ...: reads splits/<split>.split<split_index>.bundle.
    split_index: the fold.
    feature_layout: "DT" ([D, T] files, MS-TCN) or "TD".
    feature_dim: the expected feature dimension; None = whatever the first video has (all videos must agree).
    length_tolerance: the largest accepted |feature frames - label frames|; both are cut to the shorter length.
    videos: load these videos instead of the split list's (the split file is then not read).

  Returns:
    The dataset; transcripts come from transcripts/ when that directory exists (then every video needs one), else
    from the runs of the frame labels.
  """
  check_layout(feature_layout)
  if length_tolerance < 0:
    raise ConfigError("length_tolerance", f"must be >= 0, got {length_tolerance}")
  root = os.fspath(root)
  require_directory(root, "data")
  label_map = read_mapping(os.path.join(root, "mapping.txt"))
  if videos is None:
    list_path = split_path(root, split, split_index)
    names = read_split_list(list_path)
    if not names:
      raise DataError(list_path, "the split list has no videos")
  else:
    list_path = "the given video list"
    names = list(videos)
    if not names or len(set(names)) != len(names):
      raise DataError(root, f"the `videos` argument must list distinct videos, got {names[:5]}")
    for name in names:
      check_video_name(name, root)
  features_dir = os.path.join(root, "features")
  labels_dir = os.path.join(root, "groundTruth")
  transcripts_dir = os.path.join(root, "transcripts")
  require_directory(features_dir, "features")
  require_directory(labels_dir, "groundTruth")
  has_transcripts = os.path.isdir(transcripts_dir)

  loaded = []
  for name in names:
    feature_path = os.path.join(features_dir, f"{name}.npy")
    label_path = os.path.join(labels_dir, f"{name}.txt")
    transcript_path = os.path.join(transcripts_dir, f"{name}.txt")
    if not os.path.isfile(feature_path):
      raise DataError(feature_path, f"video {name!r} of {list_path} has no features")
    if not os.path.isfile(label_path):
      raise DataError(label_path, f"video {name!r} of {list_path} has no frame labels")
    if has_transcripts and not os.path.isfile(transcript_path):
      raise DataError(transcript_path, f"video {name!r} of {list_path} has no transcript (transcripts/ exists)")
    features = open_features(feature_path, feature_layout, feature_dim)
    if feature_dim is None:
      feature_dim = features.shape[1]  # The first video fixes D for the others.
    labels = read_frame_labels(label_path, label_map)
    difference = features.shape[0] - labels.shape[0]
    if abs(difference) > length_tolerance:
      raise DataError(feature_path, f"{features.shape[0]} feature frames but {label_path} has {labels.shape[0]} "
                      f"frame labels (difference {difference:+d}, length_tolerance={length_tolerance})")
    length = min(features.shape[0], labels.shape[0])
    features, labels = features.trimmed(length), labels[:length]
    if has_transcripts:
      transcript = read_transcript(transcript_path, label_map)
      if transcript.shape[0] > length:
        raise DataError(transcript_path, f"transcript has {transcript.shape[0]} actions but the video has only "
                        f"{length} frames")
    else:
      transcript = collapse_runs(labels)
    loaded.append(SegmentationVideo(name, features, labels, transcript))
  return SegmentationDataset(root, label_map, tuple(loaded))


def write_mstcn_video(root: PathLike, name: str, features_td: np.ndarray, label_names: Sequence[str], *,
                      layout: str = "DT", write_transcript: bool = True) -> None:
  """Writes one video of an MS-TCN directory: features/<name>.npy, groundTruth/<name>.txt, transcripts/<name>.txt.

  Args:
    root: the data directory (created if needed); mapping.txt and splits/ are written with `write_mapping` /
      `write_split_list`.
    name: the video name.
    features_td: [T, D] features.
    label_names: [T] label name per frame.
    layout: how features/<name>.npy stores the axes.
    write_transcript: also write transcripts/<name>.txt (the runs of `label_names`).
  """
  check_video_name(name, root)
  features_td = np.asarray(features_td)
  if features_td.ndim != 2 or features_td.shape[0] != len(label_names):
    raise ValueError(f"{name}: features_td {features_td.shape} must be [T, D] with T = {len(label_names)} labels")
  root = os.fspath(root)
  write_features(os.path.join(root, "features", f"{name}.npy"), features_td, layout)
  write_frame_labels(os.path.join(root, "groundTruth", f"{name}.txt"), label_names)
  if write_transcript:
    runs = [n for i, n in enumerate(label_names) if i == 0 or n != label_names[i - 1]]
    _write_names(os.path.join(root, "transcripts", f"{name}.txt"), runs)
