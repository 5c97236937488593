"""Strict readers and atomic writers of small JSON and tab-separated annotation files.

Every reader raises `DataError(path, problem)` naming the line or key; writers replace the file atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from hal_jax.data import formats
from hal_jax.data.formats import PathLike
from hal_jax.errors import DataError


def load_json(path: PathLike) -> Any:
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
  except RecursionError:
    raise DataError(path, "invalid JSON: nested too deeply") from None
  except ValueError as e:  # An integer of more digits than Python converts (sys.get_int_max_str_digits).
    raise DataError(path, f"invalid JSON: {e}") from None


def write_json(path: PathLike, data: Any) -> None:
  # allow_nan=False: a NaN would be written as the non-standard token NaN that other JSON readers reject.
  formats.write_text_atomic(path, json.dumps(data, allow_nan=False, separators=(",", ":")) + "\n")


def json_number(value: Any, path: PathLike, where: str) -> float:
  """A finite JSON number (bools are not numbers here)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise DataError(path, f"{where}: expected a number, got {value!r}")
  try:
    number = float(value)
  except OverflowError:  # An integer beyond float's range (JSON has no limit).
    raise DataError(path, f"{where}: number out of range ({str(value)[:20]}...)") from None
  if not math.isfinite(number):
    raise DataError(path, f"{where}: non-finite number {value!r}")
  return number


def json_object(value: Any, path: PathLike, where: str) -> dict[str, Any]:
  if not isinstance(value, dict):
    raise DataError(path, f"{where}: expected a JSON object, got {type(value).__name__}")
  return value


def json_key(obj: dict[str, Any], key: str, path: PathLike, where: str) -> Any:
  if key not in obj:
    raise DataError(path, f"{where}: missing key {key!r}")
  return obj[key]


def json_segment(value: Any, path: PathLike, where: str) -> tuple[float, float]:
  if not isinstance(value, (list, tuple)) or len(value) != 2:
    raise DataError(path, f"{where}: segment must be a pair [start, end], got {value!r}")
  start = json_number(value[0], path, f"{where}: segment start")
  end = json_number(value[1], path, f"{where}: segment end")
  if end < start:
    raise DataError(path, f"{where}: segment end {end} < start {start}")
  return start, end


def tsv_rows(path: PathLike, header: Sequence[str]) -> list[tuple[int, list[str]]]:
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


def tsv_value(text: str, path: PathLike, number: int, column: str, kind: type = float,
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


def write_tsv(path: PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
  # repr(float) is the shortest string that reads back bit-identically.
  def cell(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)
  out = ["\t".join(header) + "\n"]
  out.extend("\t".join(cell(v) for v in row) + "\n" for row in rows)
  formats.write_text_atomic(path, "".join(out))
