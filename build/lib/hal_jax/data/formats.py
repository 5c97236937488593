"""The file layer every task shares, with strict validation: atomic writes, UTF-8 text, the label map, split lists
and feature arrays.

* mapping.txt: ``<id> <name>`` per line, ids 0..C-1 in order (`LabelMap`).
* split lists: one video per line (a ".txt" suffix is stripped).
* feature arrays: ``.npy`` files, [D, T] (layout "DT", MS-TCN) or [T, D] (layout "TD"); float32 after reading.
  The split readers validate them in a streaming pass and read rows only when a batch needs them (`FeatureFile`),
  so a dataset larger than memory trains.

Every reader raises `DataError(path, problem)` on bad input. Every writer writes a temporary file in the destination
directory and `os.replace`s it, so a crash never leaves a half-written file under the final name. The task formats
build on it: `hal_jax.data.segmentation_formats` (MS-TCN directories), `hal_jax.data.localization_formats`
(ActivityNet-style JSON) and `hal_jax.data.recognition_formats` (clip tables and taxonomies).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from typing import IO

import numpy as np

from hal_jax.errors import ConfigError, DataError

PathLike = str | os.PathLike[str]

FEATURE_LAYOUTS = ("DT", "TD")

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


def text_lines(path: PathLike) -> list[str]:
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
  lines = text_lines(path)
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
  for number, line in enumerate(text_lines(path), 1):
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



# ----------------------------------------------------------------------------------------------------------------------
# Features.


def check_layout(layout: str) -> None:
  if layout not in FEATURE_LAYOUTS:
    raise ConfigError("feature_layout", f"must be one of {FEATURE_LAYOUTS}, got {layout!r}")


# Bytes read per chunk by the validation pass: bounds the memory it takes, whatever the file's size.
_CHUNK_BYTES = 16 * 2**20
# Dimensions per block when a "DT" file's gathered [D, N] frames are transposed into the [N, D] batch rows.
_TRANSPOSE_BLOCK = 16


@dataclasses.dataclass(frozen=True)
class FeatureFile:
  """A validated feature file read lazily: it stands for the [T, D] float32 array of `read_features` but holds none
  of it; `take` gathers the rows a batch needs from the file.

  It has what the pipelines use of an array: `shape`, `dtype` (float32, what rows are converted to), `ndim`, `len`,
  `take` (like `np.ndarray.take` along axis 0) and `np.asarray` (the whole array). Each `take` maps the file
  (`np.memmap`) only while it gathers, so the pages it touched leave the process's resident set when it returns and
  peak memory does not grow with the number of videos. The file must not change while the dataset is in use.

  Attributes:
    path: the .npy file.
    offset: byte offset of the array data in the file.
    stored_dtype: the dtype on disk (float16, float32 or float64, either byte order).
    disk_shape: the array in its order on disk (C order): [T_file, D] when `time_major`, else [D, T_file].
    time_major: whether a frame's D values are contiguous on disk ("TD" files; "DT" files are not).
    num_frames: T, the frames in use (at most T_file: `trimmed` cuts the tail).
  """
  path: str
  offset: int
  stored_dtype: np.dtype
  disk_shape: tuple[int, int]
  time_major: bool
  num_frames: int

  dtype = np.dtype(np.float32)
  ndim = 2

  @property
  def shape(self) -> tuple[int, int]:
    return self.num_frames, self.disk_shape[1 if self.time_major else 0]

  def __len__(self) -> int:
    return self.num_frames

  def trimmed(self, num_frames: int) -> FeatureFile:
    """The first `num_frames` frames (<= T)."""
    if not 0 < num_frames <= self.num_frames:
      raise ValueError(f"{self.path}: cannot trim {self.num_frames} frames to {num_frames}")
    return dataclasses.replace(self, num_frames=num_frames)

  def _map(self) -> np.ndarray:
    try:
      return np.memmap(self.path, self.stored_dtype, "r", self.offset, self.disk_shape)
    except (ValueError, OSError) as e:
      raise DataError(self.path, f"cannot map the feature file ({type(e).__name__}: {e}); did it change after it "
                      "was validated?") from None

  def take(self, indices: np.ndarray, axis: int = 0, out: np.ndarray | None = None, mode: str = "raise"
           ) -> np.ndarray:
    """Frames `indices` ([N] ints in [0, T)) as [N, D] float32, written into `out` when given.

    The values are those of `np.asarray(self)[indices]`. A "TD" file is read row by row; a "DT" file stores each
    dimension's frames contiguously, so a gather reads every page of the D rows that holds a wanted frame (the whole
    file once frames are less than a page, 1024 float32, apart), i.e. up to `sample_rate` times the bytes it keeps.
    """
    if axis != 0:
      raise ValueError(f"FeatureFile.take gathers frames (axis 0), got axis={axis}")
    indices = np.asarray(indices)
    if mode != "clip" and indices.size and (indices.min() < 0 or indices.max() >= self.num_frames):
      raise IndexError(f"{self.path}: frame indices must be in [0, {self.num_frames})")
    indices = np.clip(indices, 0, self.num_frames - 1)
    if out is None:
      out = np.empty((len(indices), self.shape[1]), np.float32)
    disk = self._map()
    if self.time_major and disk.dtype == out.dtype:
      np.take(disk, indices, axis=0, out=out, mode="clip")  # Straight from the mapped pages into `out`.
      return out
    with np.errstate(over="ignore"):  # Values were checked finite after float32 conversion when validated.
      if self.time_major:
        out[...] = np.take(disk, indices, axis=0, mode="clip")
        return out
      columns = np.take(disk, indices, axis=1, mode="clip")  # [D, N]
      # Transposing in blocks of a few dimensions keeps both sides in cache: one [D, N] -> [N, D] copy is ~5x slower.
      for start in range(0, columns.shape[0], _TRANSPOSE_BLOCK):
        out[:, start:start + _TRANSPOSE_BLOCK] = columns[start:start + _TRANSPOSE_BLOCK].T
    return out

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    """The whole [T, D] float32 array (then converted to `dtype`, if given)."""
    if copy is False:
      raise ValueError(f"{self.path}: a FeatureFile is read into a new array, it cannot be viewed without a copy")
    disk = self._map()
    features = disk[:self.num_frames] if self.time_major else disk[:, :self.num_frames].T
    with np.errstate(over="ignore"):
      features = np.array(features, np.float32, order="C")
    return features if dtype is None else features.astype(dtype, copy=False)


def open_features(path: PathLike, layout: str = "DT", feature_dim: int | None = None) -> FeatureFile:
  """Validates a feature array stored as [D, T] (`layout="DT"`, MS-TCN) or [T, D] (`layout="TD"`), without keeping it.

  One streaming pass reads the file in chunks of about 16 MiB and keeps only its shape, dtype and finiteness, so
  memory stays bounded whatever the file's size; the rows are read later, by `FeatureFile.take`.

  Args:
    path: the .npy file.
    layout: how the file stores the axes.
    feature_dim: the expected D, or None to accept any.

  Returns:
    The file, standing for features: [T, D] float32 (float64 and float16 files are converted when read).
  """
  check_layout(layout)
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(path, "feature file not found")
  try:
    array = np.load(path, mmap_mode="r", allow_pickle=False)  # Maps the file: reads the header, not the data.
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
  # A .npy array is C or Fortran ordered: either a frame's values are contiguous on disk or a dimension's are.
  time_major = bool(features.flags.c_contiguous)
  disk_shape = features.shape if time_major else features.T.shape
  file = FeatureFile(path, int(array.offset), array.dtype, disk_shape, time_major, num_frames)
  del array, features  # Unmaps the file: the pass below reads chunks into memory it frees as it goes.
  bad_values, bad_frames = _count_non_finite(file)
  if bad_values:
    raise DataError(path, f"{bad_values} non-finite feature values (NaN/Inf after float32 conversion) in "
                    f"{len(bad_frames)} frames, first at frame {int(bad_frames[0])}")
  return file


def _count_non_finite(file: FeatureFile) -> tuple[int, np.ndarray]:
  """(values that are not finite after float32 conversion, [K] frames holding any), reading chunks of the file."""
  rows, columns = file.disk_shape
  chunk_rows = max(1, _CHUNK_BYTES // (columns * file.stored_dtype.itemsize))
  bad_values, bad_frames = 0, np.zeros([file.num_frames], bool)
  with open(file.path, "rb") as f:
    f.seek(file.offset)
    for start in range(0, rows, chunk_rows):
      count = min(chunk_rows, rows - start)
      chunk = np.fromfile(f, file.stored_dtype, count * columns).reshape(count, columns)
      with np.errstate(over="ignore"):  # A float64 beyond float32's range becomes inf: counted as non-finite.
        finite = np.isfinite(chunk.astype(np.float32))
      if finite.all():
        continue
      bad_values += int((~finite).sum())
      if file.time_major:
        bad_frames[start:start + count] |= ~finite.all(axis=1)
      else:
        bad_frames |= ~finite.all(axis=0)
  return bad_values, np.flatnonzero(bad_frames)


def read_features(path: PathLike, layout: str = "DT", feature_dim: int | None = None) -> np.ndarray:
  """Reads a feature array stored as [D, T] (`layout="DT"`, MS-TCN) or [T, D] (`layout="TD"`) into memory.

  The split readers keep files unread instead (`open_features`); this is the whole array at once.

  Returns:
    features: [T, D] float32 (float64 and float16 files are converted).
  """
  return np.asarray(open_features(path, layout, feature_dim))


def write_features(path: PathLike, features_td: np.ndarray, layout: str = "DT") -> None:
  """Writes features_td: [T, D] as a float32 .npy in `layout` ("DT" stores [D, T], like MS-TCN)."""
  check_layout(layout)
  features_td = np.asarray(features_td, np.float32)
  if features_td.ndim != 2:
    raise ValueError(f"features_td must be [T, D], got shape {features_td.shape}")
  array = features_td.T if layout == "DT" else features_td
  with atomic_output(path, binary=True) as f:
    np.save(f, np.ascontiguousarray(array), allow_pickle=False)
