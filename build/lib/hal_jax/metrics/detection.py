"""Temporal action detection mAP with the ActivityNet protocol, vectorised.

Exact semantics: ../shared/specs/metrics.md section 8. Reference (a test oracle only, never vendored): ActivityNet
`Evaluation/eval_detection.py::compute_average_precision_detection` and `Evaluation/utils.py::interpolated_prec_rec`.
Where the reference is undefined or fragile the project's choices are:

* thresholds are rounded decimals (`parse_tiou_range`), so a tIoU of exactly 0.3 passes 0.3;
* ties are broken by a stable sort then reversal (among equal scores, or equal tIoUs, the later input comes first);
* the evaluated video list is explicit: ground truth outside it is ignored and predictions outside it are dropped;
  a predicted video id missing from the ground truth or an unknown label is an error (labels may optionally be
  dropped with a warning); nothing is ever downloaded.

The reference visits predictions one at a time. Here predictions are grouped by (class, video): the lock state of a
GT instance only depends on earlier predictions of the same class in the same video, so the k-th prediction of every
group is matched at once, for every threshold at once. The Python loop runs max_group_size times, not N times.
"""

from __future__ import annotations

import decimal
import typing
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

if typing.TYPE_CHECKING:  # Metrics stay plain NumPy: the dataclasses are only read by attribute.
  from hal_jax.data.localization_formats import Detection, DetectionVideo

THUMOS14_TIOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
ACTIVITYNET_TIOU_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
MAX_TIOU_THRESHOLDS = 1000


def parse_tiou_range(text: str) -> tuple[float, ...]:
  """Thresholds from "start:stop:step" (stop included), "a,b,c" or "a", as exact decimals.

  "0.1:0.7:0.1" -> (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7): each value is the float nearest the decimal (0.3, not the
  0.30000000000000004 of np.arange), so a tIoU of exactly 0.3 passes the threshold 0.3.

  Raises:
    ValueError: malformed text, a step that does not divide the range, or a value outside (0, 1].
  """
  try:
    if ":" in text:
      start, stop, step = (decimal.Decimal(part) for part in text.split(":"))
      if not all(part.is_finite() for part in (start, stop, step)):
        raise ValueError(f"tIoU thresholds {text!r} must lie in (0, 1]")
      if step <= 0 or stop < start:
        raise ValueError(f"tIoU range {text!r} needs start <= stop and a positive step")
      count = (stop - start) / step
      if count != count.to_integral_value():
        raise ValueError(f"tIoU range {text!r}: step does not divide stop - start")
      if count >= MAX_TIOU_THRESHOLDS:  # Checked before the list is built: "0.1:1:1e-9" would not fit in memory.
        raise ValueError(f"tIoU range {text!r} has more than {MAX_TIOU_THRESHOLDS} thresholds")
      values = [start + k * step for k in range(int(count) + 1)]
    else:
      values = [decimal.Decimal(part) for part in text.split(",")]
    if not all(value.is_finite() for value in values):
      raise ValueError(f"tIoU thresholds {text!r} must lie in (0, 1]")
  except decimal.InvalidOperation:
    raise ValueError(f"tIoU thresholds {text!r} are not 'start:stop:step' or a comma-separated list") from None
  if not all(0 < value <= 1 for value in values):
    raise ValueError(f"tIoU thresholds {text!r} must lie in (0, 1]")
  return tuple(float(value) for value in values)


def segment_tiou(starts: np.ndarray, ends: np.ndarray, gt_starts: np.ndarray, gt_ends: np.ndarray) -> np.ndarray:
  """Continuous temporal IoU (no +1), broadcasting: max(0, inter) / (len1 + len2 - inter); 0 where the union is 0."""
  intersection = np.clip(np.minimum(ends, gt_ends) - np.maximum(starts, gt_starts), 0, None)
  union = (ends - starts) + (gt_ends - gt_starts) - intersection
  return np.divide(intersection, union, out=np.zeros(np.broadcast(intersection, union).shape), where=union > 0)


def _rank_order(scores: np.ndarray) -> np.ndarray:
  """Indices by descending score; among equal scores the later input first (stable sort, then reversed)."""
  return np.argsort(scores, kind="stable")[::-1]


def match_detections(gt_segments: np.ndarray, gt_videos: np.ndarray, gt_labels: np.ndarray,
                     pred_segments: np.ndarray, pred_videos: np.ndarray, pred_labels: np.ndarray,
                     pred_scores: np.ndarray, tiou_thresholds: Sequence[float]) -> np.ndarray:
  """Which predictions are true positives, per threshold, under the ActivityNet locking rule.

  Per class, predictions are visited by descending score; each one walks its video's GT instances of its class by
  descending tIoU (ties: later instance first), stops with FP at the first tIoU < threshold, skips instances already
  locked, and locks the first free one (TP). A prediction on a video without GT of its class is FP.

  Args:
    gt_segments: [G, 2] float (start, end). gt_videos: [G] int video ids. gt_labels: [G] int class ids.
    pred_segments: [N, 2] float. pred_videos: [N] int. pred_labels: [N] int. pred_scores: [N] float.
    tiou_thresholds: K thresholds.
  Returns:
    [K, N] bool, in the input order of the predictions.
  """
  thresholds = np.asarray(tiou_thresholds, np.float64)
  gt_segments = np.asarray(gt_segments, np.float64).reshape(-1, 2)
  pred_segments = np.asarray(pred_segments, np.float64).reshape(-1, 2)
  gt_videos, gt_labels = np.asarray(gt_videos, np.int64), np.asarray(gt_labels, np.int64)
  pred_videos, pred_labels = np.asarray(pred_videos, np.int64), np.asarray(pred_labels, np.int64)
  num_preds = len(pred_scores)
  true_positive = np.zeros((len(thresholds), num_preds), bool)
  if num_preds == 0 or len(gt_labels) == 0:
    return true_positive

  # One integer key per (class, video) group, shared by both sides.
  _, inverse = np.unique(np.concatenate([
      np.stack([gt_labels, gt_videos], 1), np.stack([pred_labels, pred_videos], 1)]), axis=0, return_inverse=True)
  inverse = inverse.reshape(-1)  # NumPy 2.0.0 returned it with an extra axis
  gt_group, pred_group = inverse[:len(gt_labels)], inverse[len(gt_labels):]
  num_groups = int(inverse.max()) + 1

  # GT instances of each group as a padded index table [num_groups, width], in input order within a group.
  gt_order = np.argsort(gt_group, kind="stable")
  gt_per_group = np.bincount(gt_group, minlength=num_groups)
  group_start = np.cumsum(gt_per_group) - gt_per_group
  width = int(gt_per_group.max())
  table = np.full((num_groups, width), -1, np.int64)
  sorted_groups = gt_group[gt_order]
  table[sorted_groups, np.arange(len(gt_order)) - group_start[sorted_groups]] = gt_order

  # Rank of each prediction inside its group, following the score order.
  order = _rank_order(np.asarray(pred_scores, np.float64))
  order = order[np.argsort(pred_group[order], kind="stable")]
  pred_per_group = np.bincount(pred_group, minlength=num_groups)
  first_of_group = np.cumsum(pred_per_group) - pred_per_group
  rank = np.empty(num_preds, np.int64)
  rank[order] = np.arange(num_preds) - first_of_group[pred_group[order]]
  # Predictions of groups without GT stay FP; the others are matched round by round.
  has_gt = gt_per_group[pred_group] > 0
  by_round = np.lexsort((np.arange(num_preds), rank))
  by_round = by_round[has_gt[by_round]]
  round_bounds = np.searchsorted(rank[by_round], np.arange(int(rank.max()) + 2))

  locked = np.zeros((len(thresholds), len(gt_labels) + 1), bool)  # last column: padding slot, never used
  columns = np.arange(width)
  for k in range(len(round_bounds) - 1):
    active = by_round[round_bounds[k]:round_bounds[k + 1]]  # at most one prediction per group
    if len(active) == 0:
      continue
    candidates = table[pred_group[active]]  # [A, width]
    valid = candidates >= 0
    safe = np.where(valid, candidates, len(gt_labels))
    gathered = gt_segments[np.where(valid, candidates, 0)]  # [A, width, 2]; padding reads instance 0, masked below
    tiou = segment_tiou(pred_segments[active, 0, None], pred_segments[active, 1, None],
                        gathered[..., 0], gathered[..., 1])
    # Walking by descending tIoU and stopping at the first tIoU < threshold = taking the best free instance among
    # those with tIoU >= threshold; on equal tIoU the later instance (largest column) comes first.
    eligible = valid & (tiou >= thresholds[:, None, None]) & ~locked[:, safe]  # [K, A, width]
    masked = np.where(eligible, tiou, -1.0)
    best = masked.max(axis=-1, keepdims=True)
    pick = np.where(eligible & (masked == best), columns, -1).max(axis=-1)  # [K, A]
    matched = pick >= 0
    true_positive[:, active] = matched
    threshold_index, active_index = np.nonzero(matched)
    locked[threshold_index, candidates[active_index, pick[threshold_index, active_index]]] = True
  return true_positive


def interpolated_average_precision(true_positive: np.ndarray, num_positives: int) -> np.ndarray:
  """VOC all-point interpolated AP of ranked detections.

  Args:
    true_positive: [K, N] bool, in rank order (descending score).
    num_positives: number of GT instances (> 0).
  Returns:
    [K] AP in [0, 1].
  """
  hits = np.cumsum(true_positive, axis=1, dtype=np.float64)
  precision = hits / np.arange(1, true_positive.shape[1] + 1)
  recall = hits / num_positives
  k = true_positive.shape[0]
  precision = np.concatenate([np.zeros((k, 1)), precision, np.zeros((k, 1))], axis=1)
  recall = np.concatenate([np.zeros((k, 1)), recall, np.ones((k, 1))], axis=1)
  envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
  # Terms where recall does not change are zero, so summing all of them equals summing at the recall steps.
  return np.sum(np.diff(recall, axis=1) * envelope[:, 1:], axis=1)


def average_precision_at_tiou(gt_segments: np.ndarray, gt_videos: np.ndarray, gt_labels: np.ndarray,
                              pred_segments: np.ndarray, pred_videos: np.ndarray, pred_labels: np.ndarray,
                              pred_scores: np.ndarray, tiou_thresholds: Sequence[float],
                              num_classes: int) -> np.ndarray:
  """ActivityNet AP of every class at every tIoU threshold.

  Args: as `match_detections`; class ids lie in [0, num_classes).
  Returns:
    [K, num_classes] AP in [0, 1]; NaN for a class without GT instances, 0 for a class without predictions.
  """
  gt_labels = np.asarray(gt_labels, np.int64)
  pred_labels = np.asarray(pred_labels, np.int64)
  pred_scores = np.asarray(pred_scores, np.float64)
  true_positive = match_detections(gt_segments, gt_videos, gt_labels, pred_segments, pred_videos, pred_labels,
                                   pred_scores, tiou_thresholds)
  num_positives = np.bincount(gt_labels, minlength=num_classes)
  order = _rank_order(pred_scores)
  order = order[np.argsort(pred_labels[order], kind="stable")]  # by class, by rank inside a class
  bounds = np.searchsorted(pred_labels[order], np.arange(num_classes + 1))
  ap = np.zeros((len(tiou_thresholds), num_classes))
  for label in range(num_classes):
    if num_positives[label] == 0:
      ap[:, label] = np.nan
    elif bounds[label + 1] > bounds[label]:
      ranked = order[bounds[label]:bounds[label + 1]]
      ap[:, label] = interpolated_average_precision(true_positive[:, ranked], int(num_positives[label]))
  return ap


def detection_average_precision(
    ground_truth: Mapping[str, DetectionVideo], predictions: Mapping[str, Sequence[Detection]], *,
    tiou_thresholds: Sequence[float], subset: str | None = None, videos: Sequence[str] | None = None,
    drop_unknown_labels: bool = False) -> tuple[tuple[str, ...], np.ndarray]:
  """Per-class AP of ActivityNet-style detections.

  Args:
    ground_truth: video name -> annotations (hal_jax.data.localization_formats.read_detection_ground_truth).
    predictions: video name -> detections (hal_jax.data.localization_formats.read_detection_predictions).
    tiou_thresholds: K thresholds (see `parse_tiou_range`).
    subset: evaluate only GT videos of this subset (None: all).
    videos: the evaluated video list (e.g. THUMOS14's 210 test videos); None: every video of `subset`.
    drop_unknown_labels: drop (with a warning) predictions whose label is not a GT class instead of raising.
  Returns:
    class names (sorted GT labels of the evaluated videos) and AP [K, C] in [0, 1].
  Raises:
    ValueError: a listed or predicted video is not in the ground truth, a listed video is in another subset, a
      predicted label is unknown, a predicted segment ends before it starts, or the evaluated videos hold no GT
      instance.
  """
  if videos is None:
    evaluated = [name for name, video in ground_truth.items() if subset is None or video.subset == subset]
  else:
    evaluated = list(dict.fromkeys(videos))
    for name in evaluated:
      if name not in ground_truth:
        raise ValueError(f"video {name!r} of the evaluated list is not in the ground truth")
      if subset is not None and ground_truth[name].subset != subset:
        raise ValueError(f"video {name!r} of the evaluated list is in subset {ground_truth[name].subset!r}, "
                         f"not {subset!r}")
  video_index = {name: i for i, name in enumerate(evaluated)}
  class_names = tuple(sorted({a.label for name in evaluated for a in ground_truth[name].annotations}))
  if not class_names:
    raise ValueError("the evaluated videos have no ground-truth instances")
  class_index = {name: i for i, name in enumerate(class_names)}

  gt_rows = [(video_index[name], class_index[a.label], *a.segment)
             for name in evaluated for a in ground_truth[name].annotations]
  pred_rows, dropped = [], 0
  for name, detections in predictions.items():
    if name not in ground_truth:
      raise ValueError(f"predicted video {name!r} is not in the ground truth")
    if name not in video_index:
      continue  # Outside the evaluated list: the reference would count these as FPs (metrics.md 8.3).
    for detection in detections:
      label = class_index.get(detection.label)
      if label is None:
        if not drop_unknown_labels:
          raise ValueError(f"video {name!r}: label {detection.label!r} is not a ground-truth class")
        dropped += 1
        continue
      start, end = detection.segment
      if end < start:
        raise ValueError(f"video {name!r}: detection segment {list(detection.segment)} ends before it starts")
      pred_rows.append((video_index[name], label, start, end, detection.score))
  if dropped:
    warnings.warn(f"dropped {dropped} detection(s) whose label is not a ground-truth class", stacklevel=2)

  gt = np.array(gt_rows, np.float64).reshape(-1, 4)
  pred = np.array(pred_rows, np.float64).reshape(-1, 5)
  ap = average_precision_at_tiou(gt[:, 2:4], gt[:, 0].astype(np.int64), gt[:, 1].astype(np.int64),
                                 pred[:, 2:4], pred[:, 0].astype(np.int64), pred[:, 1].astype(np.int64), pred[:, 4],
                                 tiou_thresholds, len(class_names))
  return class_names, ap


def detection_scores(ground_truth: Mapping[str, DetectionVideo], predictions: Mapping[str, Sequence[Detection]], *,
                     tiou_thresholds: Sequence[float], subset: str | None = None,
                     videos: Sequence[str] | None = None, drop_unknown_labels: bool = False) -> dict[str, float]:
  """mAP per threshold and its average, 0-100.

  Args: as `detection_average_precision`.
  Returns:
    {"map@0.50": ..., ..., "average_map": ...}: keys carry the threshold with two decimals; mAP is the mean AP over
    all GT classes of the evaluated videos (a class without predictions counts as 0).
  """
  _, ap = detection_average_precision(ground_truth, predictions, tiou_thresholds=tiou_thresholds, subset=subset,
                                      videos=videos, drop_unknown_labels=drop_unknown_labels)
  mean_ap = ap.mean(axis=1) * 100.0
  scores = {f"map@{threshold:.2f}": float(value) for threshold, value in zip(tiou_thresholds, mean_ap)}
  scores["average_map"] = float(mean_ap.mean())
  return scores
