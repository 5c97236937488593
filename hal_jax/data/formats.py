"""Readers and writers of the frame-level segmentation formats, with strict validation.

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

Every writer writes a temporary file in the destination directory and `os.replace`s it, so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from typing import IO

import numpy as np

from hal_jax.errors import ConfigError, DataError

PathLike = str | os.PathLike[str]

FEATURE_LAYOUTS = ("DT", "TD")
SEGMENTS_TSV_HEADER = ("video", "start_frame", "end_frame", "label")

# mkstemp creates files with mode 0600; written files get the usual 0666 & ~umask instead. (Reading the umask means
# setting it, so it is done once, at import.)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


# ----------------------------------------------------------------------------------------------------------------------
# Low-level file helpers.


@contextlib.contextmanager
def atomic_output(path: PathLike, binary: bool = False) -> Iterator[IO]:
  """Opens a temporary file next to `path`; on success it replaces `path`, on error it is removed.

  Creates the parent directory if needed. Text mode writes UTF-8 with "\\n" line ends.
  """
  path = os.fspath(path)
  directory = os.path.dirname(path) or "."
  os.makedirs(directory, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    mode = "wb" if binary else "w"
    kwargs = {} if binary else {"encoding": "utf-8", "newline": "\n"}
    with os.fdopen(fd, mode, **kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp_path)
    raise


def write_text_atomic(path: PathLike, text: str) -> None:
  """Writes `text` to `path` atomically (temporary file + `os.replace`)."""
  with atomic_output(path) as f:
    f.write(text)


def read_text(path: PathLike) -> str:
  """The UTF-8 text of `path`; a missing, unreadable or non-UTF-8 file raises DataError."""
  path = os.fspath(path)
  if os.path.isdir(path):
    raise DataError(path, "is a directory, expected a file")
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except FileNotFoundError:
    raise DataError(path, "file not found") from None
  except UnicodeDecodeError as e:
    raise DataError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
  except OSError as e:
    raise DataError(path, f"cannot read file ({e.strerror})") from None


def _lines(path: PathLike) -> list[str]:
  """The lines of `path` with line ends and trailing blanks stripped (trailing empty lines dropped)."""
  lines = [line.rstrip() for line in read_text(path).split("\n")]
  while lines and not lines[-1]:
    lines.pop()
  return lines


def require_directory(path: PathLike, what: str) -> None:
  """DataError(path, "<what> directory not found") unless `path` is a directory."""
  if not os.path.isdir(path):
    raise DataError(path, f"{what} directory not found")


def check_video_name(name: str, where: PathLike, line: int | None = None) -> None:
  """DataError(where, ...) unless `name` can be a file name: no path separator, no "..", no outer whitespace."""
  # Video names become file names: a separator or ".." would read or write outside the data directory.
  if not name or "/" in name or "\\" in name or name in (".", "..") or name != name.strip():
    prefix = "" if line is None else f"line {line}: "
    raise DataError(where, f"{prefix}invalid video name {name!r}")


# ----------------------------------------------------------------------------------------------------------------------
# Label map (mapping.txt).


@dataclasses.dataclass(frozen=True)
class LabelMap:
  """Class names in id order (mapping.txt).

  Attributes:
    names: the class names; `names[i]` is the name of id `i`.
  """
  names: tuple[str, ...]
  _ids: dict[str, int] = dataclasses.field(init=False, repr=False, compare=False)

  def __post_init__(self):
    object.__setattr__(self, "names", tuple(self.names))
    ids = {name: i for i, name in enumerate(self.names)}
    if len(ids) != len(self.names):
      raise ValueError(f"duplicate class names in {self.names}")
    object.__setattr__(self, "_ids", ids)

  @property
  def num_classes(self) -> int:
    return len(self.names)

  def __contains__(self, name: str) -> bool:
    return name in self._ids

  def index(self, name: str, where: PathLike) -> int:
    """The id of `name`; DataError(where, ...) when it is not a class."""
    try:
      return self._ids[name]
    except KeyError:
      raise DataError(where, f"label {name!r} is not in mapping.txt") from None

  def ids(self, names: Sequence[str], where: PathLike, *, position: str = "entry") -> np.ndarray:
    """ids: [len(names)] int32 of `names`.

    An unknown label raises DataError(where, "<position> <k>: label ... is not in mapping.txt"), k 1-based (readers
    of one-name-per-line files pass position="line").
    """
    if len(names) == 0:
      return np.zeros([0], np.int32)
    # Look up each distinct name once: frame label files have thousands of lines but few distinct names.
    unique, inverse = np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)
    unique_ids = np.empty([len(unique)], np.int32)
    for j, name in enumerate(unique.tolist()):
      if name not in self._ids:
        first = int(np.flatnonzero(inverse.reshape(-1) == j)[0])
        raise DataError(where, f"{position} {first + 1}: label {name!r} is not in mapping.txt")
      unique_ids[j] = self._ids[name]
    return unique_ids[inverse.reshape(-1)]

  def names_of(self, ids: np.ndarray) -> list[str]:
    """The names of `ids` ([N] ints in 0..C-1)."""
    return [self.names[int(i)] for i in ids]


def read_mapping(path: PathLike) -> LabelMap:
  """Reads mapping.txt / classes.txt: "<id> <name>" per line, ids 0..C-1 in order.

  A name may contain spaces (ActivityNet): each line is split at its first run of whitespace.
  """
  lines = _lines(path)
  names: list[str] = []
  first_line: dict[str, int] = {}
  for number, line in enumerate(lines, 1):
    fields = line.split(None, 1)
    if len(fields) != 2 or not is_integer_text(fields[0]):
      raise DataError(path, f"line {number}: expected '<id> <name>', got {line!r}")
    class_id, name = int(fields[0]), fields[1]
    if class_id < len(names):
      raise DataError(path, f"line {number}: duplicate id {class_id} (ids must be 0..C-1 in order)")
    if class_id > len(names):
      raise DataError(path, f"line {number}: id {class_id} skips id {len(names)} (ids must be 0..C-1 in order)")
    if name in first_line:
      raise DataError(path, f"line {number}: duplicate label {name!r} (first on line {first_line[name]})")
    first_line[name] = number
    names.append(name)
  if not names:
    raise DataError(path, "no classes (empty file)")
  return LabelMap(tuple(names))


def write_mapping(path: PathLike, label_map: LabelMap) -> None:
  """Writes `label_map` as "<id> <name>" lines."""
  write_text_atomic(path, "".join(f"{i} {name}\n" for i, name in enumerate(label_map.names)))


def is_integer_text(text: str) -> bool:
  return text.isascii() and (text.isdigit() or (text[:1] == "-" and text[1:].isdigit()))


# ----------------------------------------------------------------------------------------------------------------------
# Split lists, frame labels, transcripts.


def read_split_list(path: PathLike) -> list[str]:
  """Reads a split list: one video per line; a ".txt" suffix is stripped, blank lines skipped, duplicates rejected."""
  videos: list[str] = []
  first_line: dict[str, int] = {}
  for number, line in enumerate(_lines(path), 1):
    name = line.strip()
    if not name:
      continue
    name = name.removesuffix(".txt")
    check_video_name(name, path, number)
    if name in first_line:
      raise DataError(path, f"line {number}: duplicate video {name!r} (first on line {first_line[name]})")
    first_line[name] = number
    videos.append(name)
  return videos


def write_split_list(path: PathLike, videos: Sequence[str]) -> None:
  """Writes one video name per line."""
  write_text_atomic(path, "".join(f"{v}\n" for v in videos))


def _read_names(path: PathLike, what: str) -> list[str]:
  lines = [line.strip() for line in _lines(path)]
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
# Features.


def _check_layout(layout: str) -> None:
  if layout not in FEATURE_LAYOUTS:
    raise ConfigError("feature_layout", f"must be one of {FEATURE_LAYOUTS}, got {layout!r}")


def read_features(path: PathLike, layout: str = "DT", feature_dim: int | None = None) -> np.ndarray:
  """Reads a feature array stored as [D, T] (`layout="DT"`, MS-TCN) or [T, D] (`layout="TD"`).

  Args:
    path: the .npy file.
    layout: how the file stores the axes.
    feature_dim: the expected D, or None to accept any.

  Returns:
    features: [T, D] float32 (float64 and float16 files are converted).
  """
  _check_layout(layout)
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(path, "feature file not found")
  try:
    array = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(path, f"cannot read .npy array ({type(e).__name__}: {e})") from None
  if not isinstance(array, np.ndarray):
    array.close()
    raise DataError(path, "expected a single .npy array, found an .npz archive")
  axes = "[D, T]" if layout == "DT" else "[T, D]"
  if array.ndim != 2:
    raise DataError(path, f"expected a 2-D feature array {axes} (feature_layout={layout!r}), found shape "
                    f"{array.shape}")
  if not np.issubdtype(array.dtype, np.floating):
    raise DataError(path, f"features must be floating point, found dtype {array.dtype}")
  features = array.T if layout == "DT" else array
  num_frames, dim = features.shape
  if feature_dim is not None and dim != feature_dim:
    hint = ""
    if num_frames == feature_dim:
      other = "TD" if layout == "DT" else "DT"
      hint = f"; the other axis has {feature_dim}: is the file stored as feature_layout={other!r}?"
    raise DataError(path, f"feature dimension: expected {feature_dim}, found {dim} (shape {array.shape} read as "
                    f"feature_layout={layout!r} {axes}){hint}")
  if num_frames == 0 or dim == 0:
    raise DataError(path, f"empty feature array (shape {array.shape}, feature_layout={layout!r} {axes})")
  with np.errstate(over="ignore"):  # A float64 beyond float32's range becomes inf, reported just below.
    features = np.ascontiguousarray(features, dtype=np.float32)
  finite = np.isfinite(features)
  if not finite.all():
    bad_frames = np.flatnonzero(~finite.all(axis=1))
    raise DataError(path, f"{int((~finite).sum())} non-finite feature values (NaN/Inf after float32 conversion) "
                    f"in {len(bad_frames)} frames, first at frame {int(bad_frames[0])}")
  return features


def write_features(path: PathLike, features_td: np.ndarray, layout: str = "DT") -> None:
  """Writes features_td: [T, D] as a float32 .npy in `layout` ("DT" stores [D, T], like MS-TCN)."""
  _check_layout(layout)
  features_td = np.asarray(features_td, np.float32)
  if features_td.ndim != 2:
    raise ValueError(f"features_td must be [T, D], got shape {features_td.shape}")
  array = features_td.T if layout == "DT" else features_td
  with atomic_output(path, binary=True) as f:
    np.save(f, np.ascontiguousarray(array), allow_pickle=False)


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
  lines = _lines(path)
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
    features: [T, D] float32 at the raw frame rate.
    labels: [T] int32 frame ground truth (raw rate).
    transcript: [M] int32 ordered actions, consecutive duplicates collapsed.
  """
  name: str
  features: np.ndarray
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
  _check_layout(feature_layout)
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
    features = read_features(feature_path, feature_layout, feature_dim)
    if feature_dim is None:
      feature_dim = features.shape[1]  # The first video fixes D for the others.
    labels = read_frame_labels(label_path, label_map)
    difference = features.shape[0] - labels.shape[0]
    if abs(difference) > length_tolerance:
      raise DataError(feature_path, f"{features.shape[0]} feature frames but {label_path} has {labels.shape[0]} "
                      f"frame labels (difference {difference:+d}, length_tolerance={length_tolerance})")
    length = min(features.shape[0], labels.shape[0])
    features, labels = features[:length], labels[:length]
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
