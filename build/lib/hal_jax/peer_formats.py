"""Predictions in the files that the field's reference evaluators read unchanged.

* **MS-TCN result files** (segmentation): ``<dir>/<video>`` without a suffix, a header line and then every raw frame's
  label name on one line, separated by spaces. MS-TCN's ``eval.py`` (also used by ASFormer, C2F-TCN, ...) reads line
  2 of ``<recog_path><video>`` and compares it frame by frame with ``groundTruth/<video>.txt``.
* **ActivityNet detection JSON** (localization): ``{"version", "results": {video: [{"label", "score", "segment":
  [start_s, end_s]}]}, "external_data"}``. ActivityNet's ``eval_detection.py`` (and the THUMOS14 / FineAction
  forks) indexes every predicted label in the classes annotated in the evaluated subset and fails on any other, so
  the file holds the evaluated videos only and only those classes (`activitynet_results`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from hal_jax import errors
from hal_jax.data import localization_formats
from hal_jax.data import formats
from hal_jax.data import strict_files

MSTCN_DIRECTORY = "mstcn"
MSTCN_HEADER = "### Frame level recognition: ###"
ACTIVITYNET_FILE = "activitynet.json"

# What ``--mode=predict --peer_formats`` adds to the predictions directory, by task (`hal_jax.tasks.base.Task` value);
# recognition has no reference evaluator of its own to write for.
PREDICTION_FILES = {"segmentation": MSTCN_DIRECTORY, "localization": ACTIVITYNET_FILE}


def check_task(task: str) -> None:
  """ConfigError naming ``--peer_formats`` unless `task` (a `Task` value) has a peer format."""
  if task not in PREDICTION_FILES:
    raise errors.ConfigError("--peer_formats", f"the {task} task has no peer format (segmentation: MS-TCN result "
                             "files, localization: ActivityNet JSON)")


def check_mstcn_labels(labels: Iterable[str], where: str | os.PathLike[str]) -> None:
  """DataError at `where` unless every label can stand in an MS-TCN result file (non-empty, no whitespace)."""
  bad = [label for label in labels if not label or any(c.isspace() for c in label)]
  if bad:
    raise errors.DataError(where, f"MS-TCN result files separate labels by spaces; label {bad[0]!r} is empty or "
                           "has a space")


def write_mstcn_result(path: str | os.PathLike[str], labels: Sequence[str]) -> None:
  """Writes one MS-TCN result file (atomically): the header line, then the frame labels on one line."""
  check_mstcn_labels(labels, path)
  formats.write_text_atomic(path, f"{MSTCN_HEADER}\n{' '.join(labels)}\n")


def write_mstcn_results(out_dir: str | os.PathLike[str], labels: Mapping[str, Sequence[str]]) -> int:
  """Writes ``<out_dir>/<video>`` for every video of `labels` (video name -> raw frame label names)."""
  os.makedirs(out_dir, exist_ok=True)
  for video, names in labels.items():
    write_mstcn_result(os.path.join(out_dir, video), names)
  return len(labels)


def read_mstcn_result(path: str | os.PathLike[str]) -> list[str]:
  """The frame labels of an MS-TCN result file.

  Raises:
    DataError: the file is missing, lacks the header line or the label line.
  """
  lines = formats.read_text(path).split("\n")
  if lines[0] != MSTCN_HEADER:
    raise errors.DataError(path, f"line 1: expected {MSTCN_HEADER!r}, got {lines[0][:60]!r}")
  if len(lines) < 2 or not lines[1].split():
    raise errors.DataError(path, "line 2: no frame labels")
  return lines[1].split()


def activitynet_results(detections: Mapping[str, Iterable[localization_formats.Detection]],
                        ground_truth: Mapping[str, localization_formats.DetectionVideo], subset: str,
                        videos: Sequence[str] | None = None) -> tuple[dict[str, list], int]:
  """The ``results`` of an ActivityNet prediction file for `subset` and the number of detections left out.

  Kept: the videos of `subset` (restricted to `videos` when given, as THUMOS14's test list), each with its detections
  whose label is annotated somewhere in that evaluated set; a detection of another class cannot change any AP there
  and would stop ActivityNet's evaluator.
  """
  evaluated = [name for name, video in ground_truth.items() if video.subset == subset]
  if videos is not None:
    wanted = set(videos)
    evaluated = [name for name in evaluated if name in wanted]
  classes = {a.label for name in evaluated for a in ground_truth[name].annotations}
  results, dropped = {}, 0
  for name in evaluated:
    found = list(detections.get(name, ()))
    kept = [d for d in found if d.label in classes]
    dropped += len(found) - len(kept)
    results[name] = [{"label": d.label, "score": float(d.score),
                      "segment": [float(d.segment[0]), float(d.segment[1])]} for d in kept]
  return results, dropped


def write_activitynet_predictions(path: str | os.PathLike[str],
                                  detections: Mapping[str, Iterable[localization_formats.Detection]],
                                  ground_truth: Mapping[str, localization_formats.DetectionVideo], subset: str,
                                  videos: Sequence[str] | None = None) -> int:
  """Writes the ActivityNet prediction file of `subset` (`activitynet_results`); returns the detections left out."""
  results, dropped = activitynet_results(detections, ground_truth, subset, videos)
  strict_files.write_json(path, {"version": "hal_jax", "results": results, "external_data": {"used": False}})
  return dropped
