"""The run directory (workdir), checked before anything is trained.

`locked_workdir(workdir)` gives one run at a time a workdir it can write:

* the workdir must be a directory on a writable file system with free space, else `WorkdirError` at once;
* an exclusive, non-blocking `fcntl.flock` on ``<workdir>/.lock`` keeps a second run (train, eval or predict) out;
  the kernel drops the lock when the process ends, so a crashed or killed run never leaves a stale lock;
* inside the context, a write the storage refuses (ENOSPC, EDQUOT, EFBIG, EROFS; from Python or from Orbax's
  tensorstore) becomes a `WorkdirError` naming the workdir and the file, not a traceback;
* a workdir the context created is removed again when the run fails before writing anything into it.

In a multi-process job (one process per host, the workdir on a shared file system) the processes are one run:
process 0 holds the lock for all of them, the others share the workdir without it (`primary=False`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import tempfile
import sys
import threading
import time
from collections.abc import Iterator


from hal_jax import errors

LOCK_NAME = ".lock"
# Less free space than this on the workdir's file system counts as full: not even a small checkpoint would fit.
MIN_FREE_BYTES = 1 << 20
# How long a failed run waits for its background writer threads before it reports the error and exits.
THREAD_JOIN_SECONDS = 60.0
# OSError numbers that mean "the storage refuses the write", not a bug.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})

def _check_writable(workdir: str) -> None:
  """WorkdirError unless `workdir` takes a new file and its file system is not full."""
  try:
    # An unnamed temporary file: proves that files can be created without leaving one behind.
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as error:
    raise errors.WorkdirError(workdir, f"the workdir is not writable ({error.strerror})") from None
  stats = os.statvfs(workdir)
  free = stats.f_bavail * stats.f_frsize
  if free < MIN_FREE_BYTES:
    raise errors.WorkdirError(workdir, f"the workdir's file system is full ({free} bytes free)")


def _lock_holder(fd: int) -> str:
  """The pid the lock holder wrote into the lock file, or "unknown"."""
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 32).decode("ascii", "replace").strip()
  return text if text.isdigit() else "unknown"


@contextlib.contextmanager
def locked_workdir(workdir: str, *, create: bool = True, primary: bool = True) -> Iterator[str]:
  """Holds the exclusive lock of `workdir` for the duration of the context (see the module docstring).

  Args:
    workdir: the run directory.
    create: create `workdir` when it does not exist (train); otherwise its absence is an error (eval, predict).
    primary: False on processes 1, 2, ... of a multi-process job: they check and share the workdir but take no
      lock (process 0 holds it for the job) and never remove it.

  Yields:
    The absolute path of `workdir`.

  Raises:
    WorkdirError: the workdir is missing (with `create=False`), not a directory, not writable, full, or locked
      by another run; or a write inside the context failed for lack of space or permission.
  """
  workdir = os.path.abspath(workdir)
  created = False
  if not os.path.isdir(workdir):
    if os.path.exists(workdir):
      raise errors.WorkdirError(workdir, "the workdir exists but is not a directory")
    if not create:
      raise errors.WorkdirError(workdir, "the workdir does not exist; train first")
    try:
      os.makedirs(workdir)
      created = primary  # Only process 0 may remove it again: the others cannot know whether it is in use.
    except FileExistsError:
      pass  # Another process of the same job made it first.
    except OSError as error:
      raise errors.WorkdirError(workdir, f"cannot create the workdir ({error.strerror})") from None
  lock_path = os.path.join(workdir, LOCK_NAME)
  fd = None
  try:
    _check_writable(workdir)
    if primary:
      try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
      except OSError as error:
        raise errors.WorkdirError(lock_path, f"cannot open the lock file ({error.strerror})") from None
  except errors.WorkdirError:
    _remove_if_unused(workdir, created, lock_path)
    raise
  try:
    if fd is not None:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        raise errors.WorkdirError(workdir, f"another run holds the lock {lock_path} (pid {_lock_holder(fd)}); "
                                     "wait for it to end or use another --workdir") from None
      # The lock file outlives the run (were it deleted, a run that had opened it could lock a file the next run no
      # longer sees); its content only names the holder for the message above.
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    threads_before = set(threading.enumerate())
    try:
      yield workdir
    except BaseException as error:
      # Background writers (Orbax's save threads) may still be at work after a failure; the workdir stays locked
      # until they end, and they cannot log into a shutting-down interpreter after the error line.
      with _stderr_silenced():
        _join_new_threads(threads_before)
      _remove_if_unused(workdir, created, lock_path)  # Still locked here, so no other run is inside it.
      refused = _refused_write(error)
      if refused is None:
        raise
      path, reason = refused
      if path and os.path.abspath(path).startswith(workdir + os.sep):
        raise errors.WorkdirError(workdir, f"cannot write {os.path.relpath(path, workdir)} ({reason})") from error
      raise errors.WorkdirError(path or workdir, f"cannot write ({reason})") from error
  finally:
    if fd is not None:
      os.close(fd)  # Releases the flock.


def _refused_write(error: BaseException) -> tuple[str | None, str] | None:
  """(file or None, reason) when `error` says the storage refused a write (full, over quota, read-only).

  Python reports it as an `OSError`; Orbax's tensorstore as a `ValueError` whose text carries
  ``Failed writing: "<file>" ... [os_error_code='28']``.
  """
  if isinstance(error, OSError):
    return (error.filename, error.strerror) if error.errno in _STORAGE_ERRNOS else None
  if isinstance(error, ValueError):
    code = re.search(r"os_error_code='(\d+)'", str(error))
    if code and int(code.group(1)) in _STORAGE_ERRNOS:
      path = re.search(r'Failed writing: "([^"]+)"', str(error))
      return (path.group(1) if path else None), os.strerror(int(code.group(1)))
  return None


@contextlib.contextmanager
def _stderr_silenced():
  """Sends file descriptor 2 to /dev/null for the block: failing Orbax/tensorstore writer threads print tracebacks of
  their own (from C++, past Python's logging) while they wind down; the failure itself is reported after this, in
  one line (with the traceback under --verbose)."""
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def _join_new_threads(before: set[threading.Thread]) -> None:
  """Waits (at most THREAD_JOIN_SECONDS in all) for the non-daemon threads started since `before` to end."""
  deadline = time.monotonic() + THREAD_JOIN_SECONDS
  for thread in threading.enumerate():
    if thread not in before and not thread.daemon and thread is not threading.current_thread():
      # Orbax's threads re-raise their own failure from join(): the same refused write, already being reported.
      with contextlib.suppress(Exception):
        thread.join(max(0.0, deadline - time.monotonic()))


def _remove_if_unused(workdir: str, created: bool, lock_path: str) -> None:
  """Removes a workdir this run created when it holds nothing but the lock file (a run that failed early)."""
  if not created:
    return
  with contextlib.suppress(OSError):
    if set(os.listdir(workdir)) <= {LOCK_NAME}:
      with contextlib.suppress(FileNotFoundError):
        os.remove(lock_path)
      os.rmdir(workdir)
