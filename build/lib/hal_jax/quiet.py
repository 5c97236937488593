"""A quiet start: the first lines a user sees are the project's, not TensorFlow's or absl's start-up noise.

TensorFlow (tf.data, and clu's TensorBoard writer) logs from C++ when its libraries load: absl's "All log messages
before absl::InitializeLog() is called are written to STDERR" and "oneDNN custom operations are on ...". Neither
`TF_CPP_MIN_LOG_LEVEL` nor absl's flags reach those lines (they are printed before either is read), so the loading
runs with the stderr file descriptor captured, and every captured line that is not such a notice is passed on.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

# Start-up notices of TensorFlow's C++ libraries (informational; warnings and errors are passed on).
NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
)


@contextlib.contextmanager
def filtered_stderr(noise: tuple[str, ...] = NOISE) -> Iterator[None]:
  """Captures what is written to file descriptor 2 inside the block (C++ included) and writes it back afterwards
  without the lines that contain one of `noise`."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
              if not any(pattern in line for pattern in noise)]
      if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


def quiet_logging(verbose: bool = False) -> None:
  """absl logging at WARNING unless `verbose` (JAX and Orbax log backend probing and every checkpoint at INFO)."""
  if not verbose:
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.WARNING)
