"""PNG plots: per-video segmentation bars (ground truth vs prediction) and training curves.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no global state, no display needed),
written to a temporary name in the destination directory and renamed, so a crash never leaves a half-written PNG.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hal_jax.errors import DataError


def _save_png(figure: Figure, path: str | os.PathLike[str]) -> None:
  """Renders `figure` to `path` atomically (temporary file in the same directory, then os.replace)."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  FigureCanvasAgg(figure)
  handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=directory)
  try:
    with os.fdopen(handle, "wb") as file:
      figure.savefig(file, format="png")
    os.replace(temporary, path)
  except BaseException:
    os.unlink(temporary)
    raise


def class_colors(num_classes: int) -> np.ndarray:
  """[num_classes, 4] RGBA: tab20 for up to 20 classes, an evenly spaced hue wheel beyond (no colour repeats)."""
  if num_classes <= 20:
    # tab20 comes in dark/light pairs of one hue; take the 10 dark ones first so that few classes stay distinct.
    order = np.concatenate([np.arange(0, 20, 2), np.arange(1, 20, 2)])
    return colormaps["tab20"](order[:num_classes])
  return colormaps["hsv"](np.arange(num_classes) / num_classes)


def _runs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Maximal runs of `ids` [T]: labels [S], starts [S], lengths [S]."""
  starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
  lengths = np.diff(np.append(starts, len(ids)))
  return ids[starts], starts, lengths


def plot_segmentation(path: str | os.PathLike[str], gt_ids: np.ndarray, pred_ids: np.ndarray,
                      class_names: Sequence[str], title: str | None = None) -> None:
  """Writes a PNG with the ground truth and the prediction of one video as coloured bars, one colour per class.

  Args:
    path: output .png path (its directory is created).
    gt_ids: [T] int ground-truth class ids.
    pred_ids: [T'] int predicted class ids (usually T' == T); -1 (unlabelled) is drawn as a gap.
    class_names: name of every class id; the legend lists the classes present in either row.
    title: figure title (e.g. the video name).
  """
  rows = (("ground truth", np.asarray(gt_ids)), ("prediction", np.asarray(pred_ids)))
  colors = class_colors(len(class_names))
  runs = [_runs(ids) for _, ids in rows]
  present = sorted({int(label) for labels, _, _ in runs for label in labels if 0 <= label < len(class_names)})
  legend_columns = min(len(present), 6) or 1
  # The legend goes below the bars; the figure grows with its number of rows so that no entry is cut off.
  figure = Figure(figsize=(12, 1.9 + 0.25 * math.ceil(len(present) / legend_columns)), layout="constrained")
  axes = figure.add_subplot()
  for row, (labels, starts, lengths) in enumerate(runs):
    for label, start, length in zip(labels, starts, lengths):
      if 0 <= label < len(class_names):
        axes.broken_barh([(start, length)], (len(rows) - 1 - row - 0.4, 0.8), facecolors=colors[label])
  axes.set_yticks(range(len(rows)), [name for name, _ in reversed(rows)])
  axes.set_xlim(0, max(len(ids) for _, ids in rows) or 1)
  axes.set_ylim(-0.5, len(rows) - 0.5)
  axes.set_xlabel("frame")
  if title:
    axes.set_title(title)
  handles = [Patch(facecolor=colors[label], label=class_names[label]) for label in present]
  if handles:
    figure.legend(handles=handles, loc="outside lower center", ncols=legend_columns, fontsize="small", frameon=False)
  _save_png(figure, path)


def _read_records(path: str | os.PathLike[str]) -> list[dict]:
  """The JSON objects of a JSONL metrics file, one per non-blank line."""
  records = []
  with open(path, encoding="utf-8") as file:
    for number, line in enumerate(file, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        raise DataError(path, f"line {number}: not JSON ({error.msg})") from None
      if not isinstance(record, dict):
        raise DataError(path, f"line {number}: expected a JSON object")
      records.append(record)
  return records


def plot_training_curves(path: str | os.PathLike[str],
                         records: str | os.PathLike[str] | Iterable[Mapping[str, object]],
                         keys: Sequence[str] | None = None, step_key: str = "step") -> None:
  """Writes a PNG with one panel per metric, plotted against the step.

  Args:
    path: output .png path.
    records: a JSONL file (one JSON object per line, as metric_writer writes) or the records themselves; each holds
      `step_key` and scalar metrics; a metric may be absent from some records (e.g. eval metrics).
    keys: the metrics to plot, in order; None: every numeric key except the step, sorted.
    step_key: the x-axis key.
  Raises:
    DataError: a JSONL line is not a JSON object, or there is nothing to plot.
  """
  where = os.fspath(records) if isinstance(records, (str, os.PathLike)) else "records"
  if isinstance(records, (str, os.PathLike)):
    records = _read_records(records)
  records = [record for record in records if isinstance(record.get(step_key), (int, float))]

  def numeric(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)

  if keys is None:
    keys = sorted({key for record in records for key, value in record.items() if key != step_key and numeric(value)})
  if not keys:
    raise DataError(where, f"no numeric metrics with a {step_key!r} to plot")
  columns = min(3, len(keys))
  grid_rows = math.ceil(len(keys) / columns)
  figure = Figure(figsize=(4.5 * columns, 3.0 * grid_rows), layout="constrained")
  for index, key in enumerate(keys):
    axes = figure.add_subplot(grid_rows, columns, index + 1)
    points = sorted((record[step_key], record[key]) for record in records if numeric(record.get(key)))
    if points:
      steps, values = zip(*points)
      # Few points (e.g. eval every N steps) are easier to read with markers.
      axes.plot(steps, values, marker="o" if len(points) <= 30 else None, markersize=3)
    axes.set_title(key, fontsize="medium")
    axes.set_xlabel(step_key)
    axes.grid(alpha=0.3)
  _save_png(figure, path)
