"""Temporal action segmentation metrics: MoF, MoF-Bg, Edit, F1@k, IoU/IoD (ISBA and TASL definitions).

Exact semantics: ../shared/specs/metrics.md (sections 2-7). Inputs are lists of per-video int label arrays at the
same (raw) frame rate plus explicit background ids; string labels are mapped through mapping.txt first, so every
metric sees ints. All scores are on a 0-100 scale.

Every metric is computed from additive sufficient statistics (`SegmentationCounts`), so counts from several batches,
splits of a test set or hosts can be summed and turned into exactly the scores of the whole set:

  counts = segmentation_counts(gt_a, pred_a, ...) + segmentation_counts(gt_b, pred_b, ...)
  scores = counts.scores()

Reference implementations this matches (used as test oracles only): MS-TCN `eval.py` (Edit, F1, MoF), TCFPN-ISBA
metrics as copied into MuCon / ATBA (segment IoU/IoD, pooled MoF-Bg), TASL `compute_IoU_IoD` (frame-mask IoU/IoD).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np

# Overlap thresholds of MS-TCN's segmental F1 (keys f1@10, f1@25, f1@50).
F1_THRESHOLDS = (0.10, 0.25, 0.50)
# TASL adds this to the denominators of its frame-mask IoU/IoD; kept for parity with published numbers.
_TASL_EPSILON = 1e-6
# The label name MS-TCN drops from Edit/F1 (matched by name, so e.g. Breakfast's "SIL" is kept).
MSTCN_BACKGROUND_NAME = "background"


def mstcn_background_ids(class_names: Sequence[str]) -> tuple[int, ...]:
  """Ids whose name is exactly "background": MS-TCN's default Edit/F1 background rule (metrics.md section 4)."""
  return tuple(i for i, name in enumerate(class_names) if name == MSTCN_BACKGROUND_NAME)


@dataclasses.dataclass(frozen=True)
class Segments:
  """Maximal runs of equal labels of several videos laid end to end on one time axis.

  Frame positions are global (video v starts at the sum of the previous videos' lengths), so segments of different
  videos never overlap and one vectorised pass handles the whole set.

  Attributes:
    labels: [S] int64 label of each segment.
    starts: [S] int64 first frame (global position).
    ends: [S] int64 one past the last frame (exclusive).
    videos: [S] int64 index of the video the segment belongs to.
  """
  labels: np.ndarray
  starts: np.ndarray
  ends: np.ndarray
  videos: np.ndarray

  def drop(self, background_ids: Sequence[int]) -> Segments:
    """The segments whose label is not in `background_ids` (dropped runs still separated their neighbours)."""
    keep = ~np.isin(self.labels, np.asarray(background_ids, np.int64))
    return Segments(self.labels[keep], self.starts[keep], self.ends[keep], self.videos[keep])

  def per_video(self, num_videos: int) -> list[np.ndarray]:
    """The label sequence of each video's segments: `num_videos` arrays of [S_v] int64."""
    bounds = np.searchsorted(self.videos, np.arange(1, num_videos))
    return np.split(self.labels, bounds)


def extract_segments(labels: np.ndarray, video_starts: np.ndarray) -> Segments:
  """Runs of `labels` that break at label changes and at video starts.

  Args:
    labels: [N] int, the videos' frame labels concatenated.
    video_starts: [V] int, first global frame of each video (video_starts[0] == 0, strictly increasing).
  Returns:
    the segments, in time order.
  """
  is_start = np.zeros(len(labels), bool)
  is_start[video_starts] = True
  is_start[1:] |= labels[1:] != labels[:-1]
  starts = np.flatnonzero(is_start)
  ends = np.append(starts[1:], len(labels))
  videos = np.searchsorted(video_starts, starts, side="right") - 1
  return Segments(labels[starts], starts, ends, videos)


def _overlapping_pairs(pred: Segments, gt: Segments) -> tuple[np.ndarray, np.ndarray]:
  """All (predicted, ground-truth) segment pairs with the same label and a positive overlap.

  Both inputs are sorted and non-overlapping, so for each predicted segment the ground-truth segments it overlaps
  form one contiguous index range: the pairs number at most S_pred + S_gt, where a dense [S_pred, S_gt] matrix could
  be huge for fragmented predictions. Only these pairs matter: every other pair scores <= 0 in F1 and ISBA.

  Returns:
    pred_index: [P] int64 (ascending), gt_index: [P] int64 (ascending within one predicted segment).
  """
  lo = np.searchsorted(gt.ends, pred.starts, side="right")  # first GT segment ending after the prediction starts
  hi = np.searchsorted(gt.starts, pred.ends, side="left")  # GT segments starting before the prediction ends
  counts = np.maximum(hi - lo, 0)
  pred_index = np.repeat(np.arange(len(counts)), counts)
  offsets = np.cumsum(counts) - counts
  gt_index = lo[pred_index] + np.arange(len(pred_index)) - offsets[pred_index]
  same = pred.labels[pred_index] == gt.labels[gt_index]
  return pred_index[same], gt_index[same]


def _pair_overlaps(pred: Segments, gt: Segments, pred_index: np.ndarray,
                   gt_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Intersection, hull and predicted length of each pair: three [P] int64 (float division happens later)."""
  ps, pe = pred.starts[pred_index], pred.ends[pred_index]
  gs, ge = gt.starts[gt_index], gt.ends[gt_index]
  intersection = np.minimum(pe, ge) - np.maximum(ps, gs)
  # The references divide by the hull max(e)-min(s), which equals the union for overlapping segments.
  hull = np.maximum(pe, ge) - np.minimum(ps, gs)
  return intersection, hull, pe - ps


def levenshtein(a: np.ndarray, b: np.ndarray) -> int:
  """Edit distance with unit insertion, deletion and substitution costs.

  One row of the dynamic programme at a time, vectorised along the row: with t[j] the best of "from above" and "from
  the diagonal", D[i, j] = min_k<=j (t[k] + j - k) = j + cummin(t - k), so the row needs no inner Python loop.

  Args:
    a: [M] labels. b: [N] labels.
  """
  if len(a) < len(b):
    a, b = b, a  # Loop over the shorter sequence.
  columns = np.arange(len(a) + 1)
  row = columns.copy()
  for i, label in enumerate(b, start=1):
    t = np.empty_like(row)
    t[0] = i
    t[1:] = np.minimum(row[1:] + 1, row[:-1] + (a != label))
    row = np.minimum.accumulate(t - columns) + columns
  return int(row[-1])


def _edit_score(pred_labels: np.ndarray, gt_labels: np.ndarray) -> float:
  """MS-TCN Edit of one video on a 0-100 scale; two empty sequences score 100 (the reference divides 0 by 0)."""
  longest = max(len(pred_labels), len(gt_labels))
  if longest == 0:
    return 100.0
  return (1.0 - levenshtein(pred_labels, gt_labels) / longest) * 100.0


def _f1_true_positives(pred: Segments, gt: Segments, thresholds: Sequence[float]) -> np.ndarray:
  """MS-TCN's matching: true positives at each threshold, summed over all videos.

  Each predicted segment picks its best GT segment (largest IoU, first one on ties) whether or not it is taken; it is
  a TP only if that IoU >= threshold and the GT segment is still free (no fall-back). Scanning predictions in time
  order, the GT segment is free exactly when no earlier prediction picked it with IoU >= threshold, so the TP count is
  the number of distinct GT segments picked with IoU >= threshold.

  Returns:
    [len(thresholds)] int64.
  """
  pred_index, gt_index = _overlapping_pairs(pred, gt)
  intersection, hull, _ = _pair_overlaps(pred, gt, pred_index, gt_index)
  iou = intersection / hull
  # Best pair of each predicted segment: largest IoU, then smallest GT index.
  order = np.lexsort((gt_index, -iou, pred_index))
  first = np.ones(len(order), bool)
  first[1:] = pred_index[order][1:] != pred_index[order][:-1]
  best_gt, best_iou = gt_index[order][first], iou[order][first]
  return np.array([len(np.unique(best_gt[best_iou >= threshold])) for threshold in thresholds], np.int64)


def _isba_video_means(pred: Segments, gt: Segments, num_videos: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """TCFPN-ISBA IoU/IoD: per GT segment the best same-label prediction (0 if none overlaps), averaged per video.

  Returns:
    iou_sum: [V] float64, iod_sum: [V] float64 sums over each video's GT segments; num_segments: [V] int64.
  """
  pred_index, gt_index = _overlapping_pairs(pred, gt)
  intersection, hull, pred_length = _pair_overlaps(pred, gt, pred_index, gt_index)
  best_iou = np.zeros(len(gt.labels))
  best_iod = np.zeros(len(gt.labels))
  np.maximum.at(best_iou, gt_index, intersection / hull)
  np.maximum.at(best_iod, gt_index, intersection / pred_length)
  return (np.bincount(gt.videos, best_iou, num_videos), np.bincount(gt.videos, best_iod, num_videos),
          np.bincount(gt.videos, minlength=num_videos))


def _predicted_segment_iou(pred: Segments, gt: Segments) -> np.ndarray:
  """Per predicted segment, the IoU with the same-label GT segment it overlaps most (0 if none): [S_pred] float64.

  "Overlaps most" is the largest intersection (ties: the larger IoU). The pose-aware segmentation paper's IoU
  (spec pose.md §7); unlike ISBA's it averages over predicted, not ground-truth, segments.
  """
  pred_index, gt_index = _overlapping_pairs(pred, gt)
  intersection, hull, _ = _pair_overlaps(pred, gt, pred_index, gt_index)
  iou = intersection / hull
  order = np.lexsort((-iou, -intersection, pred_index))
  first = np.ones(len(order), bool)
  first[1:] = pred_index[order][1:] != pred_index[order][:-1]
  best = np.zeros(len(pred.labels))
  best[pred_index[order][first]] = iou[order][first]
  return best


def _tasl_class_scores(gt: np.ndarray, pred: np.ndarray,
                       video_of_frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """TASL frame-mask IoU/IoD of every (video, class) pair whose class occurs in that video's ground truth.

  Args:
    gt, pred, video_of_frame: [N] int64 over the concatenated frames.
  Returns:
    video: [K], label: [K], iou: [K], iod: [K] (K = number of (video, class) pairs present in the ground truth).
  """
  low = min(gt.min(), pred.min())
  span = max(gt.max(), pred.max()) - low + 1
  gt_keys = video_of_frame * span + (gt - low)
  pred_keys = video_of_frame * span + (pred - low)
  keys, gt_count = np.unique(gt_keys, return_counts=True)
  # Frames predicted as a class the video's ground truth lacks are ignored, like in TASL.
  position = np.minimum(np.searchsorted(keys, pred_keys), len(keys) - 1)
  known = keys[position] == pred_keys
  pred_count = np.bincount(position[known], minlength=len(keys))
  hit = gt == pred
  intersection = np.bincount(position[hit], minlength=len(keys))  # gt == pred implies the key is known
  union = gt_count + pred_count - intersection
  iou = intersection / (union + _TASL_EPSILON)
  iod = intersection / (pred_count + _TASL_EPSILON)
  return keys // span, keys % span + low, iou, iod


@dataclasses.dataclass(frozen=True)
class SegmentationCounts:
  """Additive statistics from which every segmentation score follows; `+` merges two disjoint sets of videos.

  Attributes (all float64 scalars unless noted):
    correct, frames: pooled frame hits and frames (MoF).
    correct_fg, frames_fg: the same over frames whose GT label is not background (MoF-Bg).
    edit_sum, videos: sum of per-video Edit scores and number of videos.
    f1_tp, f1_fp, f1_fn: [len(F1_THRESHOLDS)] micro-summed segment counts.
    iou_sum, iod_sum, isba_videos: sums of per-video ISBA means (background included) and their video count.
    iou_nobg_sum, iod_nobg_sum, isba_nobg_videos: the same with background segments dropped; videos left without GT
      segments are skipped.
    iou_tasl_sum, iod_tasl_sum, tasl_videos: sums of per-video TASL means (all GT classes).
    iou_tasl_nobg_sum, iod_tasl_nobg_sum, tasl_nobg_videos: the same without background classes.
    iou_pred_sum, pred_segments: the per-predicted-segment IoU (`_predicted_segment_iou`) summed over the
      non-background predicted segments, and their number.
  """
  correct: float = 0.0
  frames: float = 0.0
  correct_fg: float = 0.0
  frames_fg: float = 0.0
  edit_sum: float = 0.0
  videos: float = 0.0
  f1_tp: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(F1_THRESHOLDS)))
  f1_fp: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(F1_THRESHOLDS)))
  f1_fn: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(F1_THRESHOLDS)))
  iou_sum: float = 0.0
  iod_sum: float = 0.0
  isba_videos: float = 0.0
  iou_nobg_sum: float = 0.0
  iod_nobg_sum: float = 0.0
  isba_nobg_videos: float = 0.0
  iou_tasl_sum: float = 0.0
  iod_tasl_sum: float = 0.0
  tasl_videos: float = 0.0
  iou_tasl_nobg_sum: float = 0.0
  iod_tasl_nobg_sum: float = 0.0
  tasl_nobg_videos: float = 0.0
  iou_pred_sum: float = 0.0
  pred_segments: float = 0.0

  def __add__(self, other: SegmentationCounts) -> SegmentationCounts:
    return SegmentationCounts(**{
        field.name: getattr(self, field.name) + getattr(other, field.name) for field in dataclasses.fields(self)})

  def scores(self) -> dict[str, float]:
    """The scores on a 0-100 scale; NaN where a score is undefined (no frames / no videos left to average)."""
    with np.errstate(invalid="ignore", divide="ignore"):
      def ratio(numerator, denominator):
        return float(np.float64(numerator) / np.float64(denominator) * 100.0)

      tp, fp, fn = self.f1_tp, self.f1_fp, self.f1_fn
      precision = np.nan_to_num(tp / (tp + fp))
      recall = np.nan_to_num(tp / (tp + fn))
      f1 = np.nan_to_num(2.0 * precision * recall / (precision + recall)) * 100.0
      scores = {"mof": ratio(self.correct, self.frames), "mof_bg": ratio(self.correct_fg, self.frames_fg),
                "edit": float(np.float64(self.edit_sum) / self.videos)}
      scores.update({f"f1@{round(t * 100)}": float(value) for t, value in zip(F1_THRESHOLDS, f1)})
      scores.update({
          "iou": ratio(self.iou_sum, self.isba_videos),
          "iod": ratio(self.iod_sum, self.isba_videos),
          "iou_tasl": ratio(self.iou_tasl_sum, self.tasl_videos),
          "iod_tasl": ratio(self.iod_tasl_sum, self.tasl_videos),
          "iou_nobg": ratio(self.iou_nobg_sum, self.isba_nobg_videos),
          "iod_nobg": ratio(self.iod_nobg_sum, self.isba_nobg_videos),
          "iou_tasl_nobg": ratio(self.iou_tasl_nobg_sum, self.tasl_nobg_videos),
          "iod_tasl_nobg": ratio(self.iod_tasl_nobg_sum, self.tasl_nobg_videos),
          "iou_pred": ratio(self.iou_pred_sum, self.pred_segments),
      })
    return scores


def _concatenate(gt_list: Sequence[np.ndarray],
                 pred_list: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Validated concatenation: gt [N] int64, pred [N] int64, video_starts [V] int64."""
  if len(gt_list) != len(pred_list):
    raise ValueError(f"{len(gt_list)} ground-truth videos but {len(pred_list)} predictions")
  if not gt_list:
    raise ValueError("no videos to evaluate")
  gts, preds = [], []
  for index, (gt, pred) in enumerate(zip(gt_list, pred_list)):
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.ndim != 1 or pred.ndim != 1:
      raise ValueError(f"video {index}: labels must be 1-D, got shapes {gt.shape} and {pred.shape}")
    if not (np.issubdtype(gt.dtype, np.integer) and np.issubdtype(pred.dtype, np.integer)):
      raise ValueError(f"video {index}: labels must be integer ids, got {gt.dtype} and {pred.dtype}")
    if len(gt) != len(pred):
      raise ValueError(f"video {index}: prediction has {len(pred)} frames, ground truth {len(gt)}")
    if len(gt) == 0:
      raise ValueError(f"video {index}: no frames")
    gts.append(gt.astype(np.int64))
    preds.append(pred.astype(np.int64))
  lengths = np.array([len(gt) for gt in gts])
  return np.concatenate(gts), np.concatenate(preds), np.cumsum(lengths) - lengths


def _as_ids(ids: Sequence[int] | int, name: str) -> tuple[int, ...]:
  # A bare int is a common slip (the ISBA reference crashes on it); a string would silently match nothing.
  if isinstance(ids, (int, np.integer)):
    return (int(ids),)
  ids = tuple(ids)
  if not all(isinstance(i, (int, np.integer)) for i in ids):
    raise TypeError(f"{name} must be integer label ids (map names through mapping.txt first), got {ids!r}")
  return tuple(int(i) for i in ids)


def segmentation_counts(gt_list: Sequence[np.ndarray], pred_list: Sequence[np.ndarray], *,
                        background_ids: Sequence[int], edit_f1_background_ids: Sequence[int] | None = None
                        ) -> SegmentationCounts:
  """Sufficient statistics of the segmentation metrics for a set of videos.

  Args:
    gt_list: V arrays [T_v] of int ground-truth ids.
    pred_list: V arrays [T_v] of int predicted ids (same lengths as the ground truth).
    background_ids: ids dropped by MoF-Bg (GT frames) and by the no-background IoU/IoD variants.
    edit_f1_background_ids: ids whose runs Edit and F1 drop; None means `background_ids`. To reproduce MS-TCN's
      published numbers pass `mstcn_background_ids(class_names)` (only the label named "background").
  Returns:
    the counts; `.scores()` gives the metrics.
  """
  background_ids = _as_ids(background_ids, "background_ids")
  edit_f1_background_ids = (background_ids if edit_f1_background_ids is None
                            else _as_ids(edit_f1_background_ids, "edit_f1_background_ids"))
  gt, pred, video_starts = _concatenate(gt_list, pred_list)
  num_videos = len(video_starts)
  video_of_frame = np.repeat(np.arange(num_videos), np.diff(np.append(video_starts, len(gt))))

  hit = gt == pred
  foreground = ~np.isin(gt, background_ids)

  gt_segments = extract_segments(gt, video_starts)
  pred_segments = extract_segments(pred, video_starts)

  # MS-TCN Edit and F1 (background runs dropped after extraction).
  gt_fg = gt_segments.drop(edit_f1_background_ids)
  pred_fg = pred_segments.drop(edit_f1_background_ids)
  edit_sum = sum(_edit_score(p, y) for p, y in zip(pred_fg.per_video(num_videos), gt_fg.per_video(num_videos)))
  tp = _f1_true_positives(pred_fg, gt_fg, F1_THRESHOLDS)

  # ISBA, background segments included (ATBA) and dropped (MuCon-style ignore list).
  iou, iod, counts = _isba_video_means(pred_segments, gt_segments, num_videos)
  iou_nobg, iod_nobg, counts_nobg = _isba_video_means(
      pred_segments.drop(background_ids), gt_segments.drop(background_ids), num_videos)
  kept = counts_nobg > 0
  if not kept.all():
    warnings.warn(f"ISBA IoU/IoD without background: skipped {np.sum(~kept)} video(s) whose ground truth is all "
                  "background", stacklevel=2)

  # The pose paper's IoU: per non-background predicted segment, pooled over the set.
  iou_pred = _predicted_segment_iou(pred_segments.drop(background_ids), gt_segments.drop(background_ids))

  # TASL: per video, the mean over the classes present in its ground truth.
  video, label, class_iou, class_iod = _tasl_class_scores(gt, pred, video_of_frame)
  classes = np.bincount(video, minlength=num_videos)
  not_bg = ~np.isin(label, background_ids)
  classes_nobg = np.bincount(video[not_bg], minlength=num_videos)
  kept_tasl = classes_nobg > 0
  if not kept_tasl.all():
    warnings.warn(f"TASL IoU/IoD without background: skipped {np.sum(~kept_tasl)} video(s) whose ground truth is "
                  "all background", stacklevel=2)

  def video_mean_sum(values, mask, per_video_count):
    sums = np.bincount(video[mask], values[mask], minlength=num_videos)
    keep = per_video_count > 0
    return float(np.sum(sums[keep] / per_video_count[keep]))

  every = np.ones(len(video), bool)
  return SegmentationCounts(
      correct=float(hit.sum()), frames=float(len(gt)),
      correct_fg=float(hit[foreground].sum()), frames_fg=float(foreground.sum()),
      edit_sum=float(edit_sum), videos=float(num_videos),
      f1_tp=tp.astype(np.float64), f1_fp=(len(pred_fg.labels) - tp).astype(np.float64),
      f1_fn=(len(gt_fg.labels) - tp).astype(np.float64),
      iou_sum=float(np.sum(iou / counts)), iod_sum=float(np.sum(iod / counts)), isba_videos=float(num_videos),
      iou_nobg_sum=float(np.sum(iou_nobg[kept] / counts_nobg[kept])),
      iod_nobg_sum=float(np.sum(iod_nobg[kept] / counts_nobg[kept])), isba_nobg_videos=float(kept.sum()),
      iou_tasl_sum=video_mean_sum(class_iou, every, classes),
      iod_tasl_sum=video_mean_sum(class_iod, every, classes), tasl_videos=float(num_videos),
      iou_tasl_nobg_sum=video_mean_sum(class_iou, not_bg, classes_nobg),
      iod_tasl_nobg_sum=video_mean_sum(class_iod, not_bg, classes_nobg), tasl_nobg_videos=float(kept_tasl.sum()),
      iou_pred_sum=float(np.sum(iou_pred)), pred_segments=float(len(iou_pred)),
  )


def segmentation_scores(gt_list: Sequence[np.ndarray], pred_list: Sequence[np.ndarray], *,
                        background_ids: Sequence[int], edit_f1_background_ids: Sequence[int] | None = None
                        ) -> dict[str, float]:
  """All segmentation metrics of a set of videos, 0-100.

  Args: as `segmentation_counts`.
  Returns:
    {"mof", "mof_bg", "edit", "f1@10", "f1@25", "f1@50", "iou", "iod", "iou_tasl", "iod_tasl", "iou_nobg",
    "iod_nobg", "iou_tasl_nobg", "iod_tasl_nobg", "iou_pred"}: MoF pooled over frames; MoF-Bg pooled over non-
    background GT frames; Edit averaged per video; F1 micro-summed; IoU/IoD averaged per video, `iou`/`iod` being
    ISBA's segment definition with background included (as ATBA reports it), `*_tasl` TASL's frame-mask definition
    over all GT classes, `*_nobg` the same without the background ids; `iou_pred` the pose-aware segmentation paper's
    IoU: per non-background predicted segment the IoU with the same-class GT segment it overlaps most (0 if none),
    averaged over all predicted segments of the set. NaN where undefined (e.g. no non-background frame).
  """
  return segmentation_counts(gt_list, pred_list, background_ids=background_ids,
                             edit_f1_background_ids=edit_f1_background_ids).scores()
