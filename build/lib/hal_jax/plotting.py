"""PNG plots: per-video segmentation bars (ground truth vs prediction), localization timelines and training curves.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no global state, no display needed),
written to a temporary name in the destination directory and renamed, so a crash never leaves a half-written PNG.
"""

from __future__ import annotations

import io
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


def figure_png(figure: Figure) -> bytes:
  """The PNG bytes of `figure` (for pages that embed their images)."""
  FigureCanvasAgg(figure)
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  return buffer.getvalue()


# Background (no action) is drawn in a neutral grey, so that the eye goes to the actions; the names are those of the
# synthetic data and MS-TCN's Breakfast ("SIL") and the label files of several peers.
BACKGROUND_NAMES = ("background", "SIL", "bg")
NEUTRAL = (0.80, 0.80, 0.80, 1.0)


def class_colors(num_classes: int, neutral_ids: Iterable[int] = ()) -> np.ndarray:
  """[num_classes, 4] RGBA: tab20 for up to 20 classes, an evenly spaced hue wheel beyond (no colour repeats);
  the classes in `neutral_ids` (background) are grey and take no palette colour."""
  neutral_ids = sorted({int(i) for i in neutral_ids if 0 <= int(i) < num_classes})
  count = num_classes - len(neutral_ids)
  if count <= 20:
    # tab20 comes in dark/light pairs of one hue; take the 10 dark ones first so that few classes stay distinct.
    order = np.concatenate([np.arange(0, 20, 2), np.arange(1, 20, 2)])
    palette = colormaps["tab20"](order[:count])
  else:
    palette = colormaps["hsv"](np.arange(count) / count)
  colors = np.empty([num_classes, 4])
  colors[neutral_ids] = NEUTRAL
  colors[np.setdiff1d(np.arange(num_classes), neutral_ids)] = palette
  return colors


def background_ids(class_names: Sequence[str]) -> list[int]:
  """The ids of the classes named like background (`BACKGROUND_NAMES`)."""
  return [i for i, name in enumerate(class_names) if name in BACKGROUND_NAMES]


def _runs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Maximal runs of `ids` [T]: labels [S], starts [S], lengths [S]."""
  starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
  lengths = np.diff(np.append(starts, len(ids)))
  return ids[starts], starts, lengths


def plot_segmentation(path: str | os.PathLike[str], gt_ids: np.ndarray, pred_ids: np.ndarray,
                      class_names: Sequence[str], title: str | None = None) -> None:
  """Writes a PNG with the ground truth and the prediction of one video as coloured bars (`segmentation_figure`);
  `path`'s directory is created."""
  _save_png(segmentation_figure(gt_ids, pred_ids, class_names, title), path)


def segmentation_figure(gt_ids: np.ndarray, pred_ids: np.ndarray, class_names: Sequence[str],
                        title: str | None = None) -> Figure:
  """The ground truth and the prediction of one video as coloured bars, one colour per class (background grey).

  Args:
    gt_ids: [T] int ground-truth class ids.
    pred_ids: [T'] int predicted class ids (usually T' == T); -1 (unlabelled) is drawn as a gap.
    class_names: name of every class id; the legend lists the classes present in either row.
    title: figure title (e.g. the video name).
  """
  rows = (("ground truth", np.asarray(gt_ids)), ("prediction", np.asarray(pred_ids)))
  colors = class_colors(len(class_names), background_ids(class_names))
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
  return figure


def localization_figure(num_steps: int, gt_segments: np.ndarray, gt_labels: np.ndarray, detections: np.ndarray,
                        class_names: Sequence[str], change_points: np.ndarray | None = None,
                        raw_change_points: np.ndarray | None = None, title: str | None = None,
                        max_detections: int = 10) -> Figure:
  """One localization video on its feature-step axis: ground-truth segments, the best detections and change points.

  Args:
    num_steps: T, the video's feature steps (the x range).
    gt_segments: [N, 2] float (start, end) in steps.
    gt_labels: [N] int class ids of the segments.
    detections: [M, 4] float rows (class id, score, start, end) in steps; the `max_detections` best are drawn, one
      row each, their score as opacity.
    class_names: name of every class id.
    change_points: [K] int pruned change points (solid lines), or None.
    raw_change_points: [K'] int change points before pruning (short ticks), or None.
    title: figure title.
  """
  colors = class_colors(len(class_names), background_ids(class_names))
  detections = np.asarray(detections, np.float64).reshape(-1, 4)
  best = detections[np.argsort(-detections[:, 1], kind="stable")[:max_detections]]
  rows = 1 + len(best)
  figure = Figure(figsize=(12, 1.3 + 0.22 * rows), layout="constrained")
  axes = figure.add_subplot()
  top = rows - 1
  for (start, end), label in zip(np.asarray(gt_segments, np.float64).reshape(-1, 2), np.asarray(gt_labels)):
    axes.broken_barh([(start, end - start)], (top - 0.4, 0.8), facecolors=colors[int(label)])
  for row, (label, score, start, end) in enumerate(best):
    axes.broken_barh([(start, end - start)], (top - 1 - row - 0.35, 0.7), facecolors=colors[int(label)],
                     alpha=float(np.clip(0.25 + 0.75 * score, 0.25, 1.0)) if 0 <= score <= 1 else 1.0)
  if raw_change_points is not None and len(raw_change_points):
    axes.vlines(raw_change_points, top + 0.42, top + 0.5, colors="0.35", linewidth=0.8)
  if change_points is not None and len(change_points):
    axes.vlines(change_points, -0.5, rows - 0.5, colors="black", linewidth=1.0, linestyles="dashed",
                label="change points")
  labels = ["ground truth"] + [f"{class_names[int(label)]} {score:.2f}" for label, score, _, _ in best]
  axes.set_yticks(range(rows), list(reversed(labels)), fontsize="small")
  axes.set_xlim(0, max(num_steps, 1))
  axes.set_ylim(-0.5, rows - 0.5)
  axes.set_xlabel("feature step")
  if title:
    axes.set_title(title)
  present = sorted({int(label) for label in np.asarray(gt_labels)} | {int(label) for label in best[:, 0]})
  handles = [Patch(facecolor=colors[label], label=class_names[label]) for label in present]
  if handles:
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize="small",
                  frameon=False)
  return figure


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
  _save_png(training_curves_figure(records, keys, step_key), path)


def training_curves_figure(records: str | os.PathLike[str] | Iterable[Mapping[str, object]],
                           keys: Sequence[str] | None = None, step_key: str = "step") -> Figure:
  """The figure of `plot_training_curves` (same arguments, without the path)."""
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
  return figure
