"""Metric logging: JSONL in the workdir, TensorBoard through clu when installed, and a progress bar.

Only the primary process (process 0) writes. ``metrics.jsonl`` gets one JSON object per logged step,
``{"step": s, "epoch": e, "train/loss": ..., ...}``, appended and flushed at once, so a killed run keeps every line
it logged. ``config.json`` is written once per workdir (atomically).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

import tqdm


def write_json_atomic(path: str, payload: Any) -> None:
  """Writes `payload` as pretty JSON to `path` through a temporary file and a rename."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".json")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(payload, f, indent=2, sort_keys=True)
      f.write("\n")
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.unlink(tmp_path)
    raise


def _clean(value: Any) -> Any:
  """JSON-safe scalar: floats stay floats (non-finite as strings, which JSON cannot hold)."""
  value = float(value) if hasattr(value, "__float__") and not isinstance(value, (bool, int)) else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class MetricWriter:
  """Writes scalars to ``<workdir>/metrics.jsonl`` and, when clu is installed, to TensorBoard.

  Args:
    workdir: the run directory.
    enabled: False on non-primary processes (everything becomes a no-op).
    tensorboard: also write TensorBoard summaries if `clu` can be imported.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._summary_writer = None
    if enabled and tensorboard:
      from hal_jax import quiet  # pylint: disable=g-import-not-at-top
      try:
        with quiet.filtered_stderr():  # clu loads TensorFlow, whose start-up notices are not the run's.
          from clu import metric_writers  # pylint: disable=g-import-not-at-top  (optional extra "clu")
      except ImportError:
        metric_writers = None
      if metric_writers is not None:
        self._summary_writer = metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write_config(self, workdir: str, config: Mapping[str, Any]) -> None:
    """Writes ``config.json`` once; an existing one (a resumed run) is left as it is."""
    path = os.path.join(workdir, "config.json")
    if self.enabled and not os.path.exists(path):
      write_json_atomic(path, config)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Appends one line ``{"step": step, **scalars}`` to metrics.jsonl."""
    if not self.enabled:
      return
    record = {"step": int(step)}
    record.update({key: _clean(value) for key, value in scalars.items()})
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record, sort_keys=True) + "\n")
      f.flush()
    if self._summary_writer is not None:
      numeric = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
      self._summary_writer.write_scalars(int(step), numeric)
      self._summary_writer.flush()

  def close(self) -> None:
    if self._summary_writer is not None:
      self._summary_writer.close()


def read_metrics(path: str) -> list[dict[str, Any]]:
  """Reads every record of a metrics.jsonl file."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm.tqdm:
  """A tqdm bar over training steps: steps/s and ETA; silent on non-primary processes or when disabled."""
  return tqdm.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=not enabled,
                   file=sys.stderr, mininterval=1.0)
