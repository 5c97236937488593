"""The file layer every task shares, with strict validation: atomic writes, UTF-8 text, the label map, split lists
and feature arrays.

* mapping.txt: ``<id> <name>`` per line, ids 0..C-1 in order (`LabelMap`).
* split lists: one video per line (a ".txt" suffix is stripped).
* feature arrays: ``.npy`` files, [D, T] (layout "DT", MS-TCN) or [T, D] (layout "TD"); float32 after reading.

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


def read_features(path: PathLike, layout: str = "DT", feature_dim: int | None = None) -> np.ndarray:
  """Reads a feature array stored as [D, T] (`layout="DT"`, MS-TCN) or [T, D] (`layout="TD"`).

  Args:
    path: the .npy file.
    layout: how the file stores the axes.
    feature_dim: the expected D, or None to accept any.

  Returns:
    features: [T, D] float32 (float64 and float16 files are converted).
  """
  check_layout(layout)
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
  check_layout(layout)
  features_td = np.asarray(features_td, np.float32)
  if features_td.ndim != 2:
    raise ValueError(f"features_td must be [T, D], got shape {features_td.shape}")
  array = features_td.T if layout == "DT" else features_td
  with atomic_output(path, binary=True) as f:
    np.save(f, np.ascontiguousarray(array), allow_pickle=False)
