"""Exceptions for bad user input, and the one-line CLI error report.

Every error raised for bad input names the file (or config key) and the problem, so that command-line entry points
can print exactly one line, ``error: <file>: <what>``, and exit with status 2 before any training starts.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

# Exit status of a CLI on bad input (the convention of absl and argparse usage errors).
BAD_INPUT_EXIT_CODE = 2


class HalJaxError(Exception):
  """Base class of the errors that describe bad input (not bugs).

  Attributes:
    where: the file path or config key the problem is in.
    what: the problem, one line.
  """

  def __init__(self, where: str | os.PathLike[str], what: str):
    self.where = os.fspath(where)
    self.what = what
    super().__init__(f"{self.where}: {what}")


class DataError(HalJaxError):
  """A data file or directory is missing, malformed or inconsistent."""


class ConfigError(HalJaxError):
  """A config key is unknown, of the wrong type, or its value is impossible."""


class CheckpointError(HalJaxError):
  """A checkpoint cannot be used (another model or method, none to restore, not writable)."""


class WorkdirError(HalJaxError):
  """The run directory cannot be used (missing, not a directory, not writable, full, locked by another run), or the
  storage refused a write into it."""


class NonFiniteLossError(HalJaxError):
  """Training produced a non-finite loss; `where` names the step window."""


def format_error(error: HalJaxError) -> str:
  """The one line a CLI prints for `error`: ``error: <where>: <what>``."""
  what = " ".join(error.what.split())  # Keep it on one line whatever the message held.
  return f"error: {error.where}: {what}"


@contextlib.contextmanager
def exit_on_bad_input(verbose: bool = False, leave_at_once: bool = False) -> Iterator[None]:
  """Turns a `HalJaxError` into one line on stderr and exit status 2.

  With `verbose` the traceback is printed too. Other exceptions (bugs) propagate. With `leave_at_once` (command-line
  entry points) the process ends right after the line, without the interpreter's shutdown, and nothing else can
  write to stderr after it: background writer threads of a failed save (Orbax, tensorstore) print tracebacks of their
  own from C++ while they wind down.
  """
  try:
    yield
  except HalJaxError as error:
    if verbose:
      import traceback  # pylint: disable=g-import-not-at-top
      traceback.print_exc()
    line = format_error(error) + "\n"
    if not leave_at_once or verbose:
      sys.stderr.write(line)
      sys.exit(BAD_INPUT_EXIT_CODE)
    sys.stdout.flush()
    sys.stderr.flush()
    original = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # Everyone else's stderr goes nowhere from here on ...
    if threading.active_count() > 1:
      # A writer thread may have left half a line on stderr before it was silenced (e.g. the indent of a traceback
      # line): start ours on a line of its own.
      line = "\n" + line
    os.write(original, line.encode())  # ... ours gets the one line.
    os._exit(BAD_INPUT_EXIT_CODE)  # pylint: disable=protected-access
