"""Directories that appear whole: written in a staging directory beside the target, then renamed into place.

Used for everything hal_jax writes as a directory (synthetic data sets, prediction sets), so that a crash leaves the
old content or the new one, never a mixture.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from hal_jax.errors import DataError


@contextlib.contextmanager
def staged_directory(out_dir: str | os.PathLike[str], overwrite: bool) -> Iterator[str]:
  """Yields a temporary directory that replaces `out_dir` when the block succeeds (and is deleted when it fails).

  An existing non-empty `out_dir` raises DataError unless `overwrite`; the old content is removed only after the
  new directory is in place, so a crash leaves either the old or the new data set, never a mixture.
  """
  out_dir = os.path.abspath(os.fspath(out_dir))

  def check_target() -> bool:
    """Whether out_dir holds something that must be replaced."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
      raise DataError(out_dir, "exists and is not a directory")
    occupied = os.path.isdir(out_dir) and bool(os.listdir(out_dir))
    if occupied and not overwrite:
      raise DataError(out_dir, "output directory exists and is not empty (pass --overwrite to replace it)")
    return occupied

  check_target()
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
  try:
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the data set should read like any directory.
    yield staging
    if check_target():  # Checked again: another process may have written out_dir meanwhile.
      retired = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
      os.replace(out_dir, os.path.join(retired, "data"))
      os.replace(staging, out_dir)
      shutil.rmtree(retired, ignore_errors=True)
    else:
      if os.path.isdir(out_dir):
        os.rmdir(out_dir)
      os.replace(staging, out_dir)
  finally:
    if os.path.isdir(staging):
      shutil.rmtree(staging, ignore_errors=True)
