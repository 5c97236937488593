"""AHLM's localization inference on the host (spec ../shared/specs/ahlm.md section 5), plain NumPy.

The number of change points and proposals is data dependent, so this runs after `Ahlm.predict` on fetched arrays,
never inside a train step. Per video of T_v snippets (indices 0..T_v-1; a segment [s, e) ends exclusively):

1.-3. classes kept K = {c : p^fg_c >= 0.2} (else the arg-max), snippet scores s_{t,c} = a^fg_t softmax(M_t)_c;
4.-5. the DFC's raw change points are pruned left to right: a boundary between parts L and R is deleted when the
      longest common subsequence of L and R, matching snippets with cosine >= 0.65, covers >= 50 % of the shorter
      part (paper: "LCS, cosine threshold 0.65"; the walk and the 50 % are project choices);
6.    foreground change points: max(a^fg_{b-1}, a^fg_b) >= 0.5;
7.    proposals (class agnostic): (a) maximal runs of a^fg >= θ for θ = 0.10, 0.15, ..., 0.90; (b) each end of (a)
      snapped to the nearest foreground change point within w snippets (ties: the earlier one); (c) intervals between
      consecutive foreground change points (and 0, T_v) with mean a^fg >= 0.5;
8.    score of [s, e) for class c: mean of s_{·,c} inside - mean over [s - m, s) ∪ [e, e + m) (clipped; m =
      max(1, floor((e - s) / 4))) + 0.2 p^fg_c;
9.    class-wise greedy NMS, dropping proposals whose tIoU with a kept one exceeds 0.5.

Thresholding and run extraction are vectorised over thresholds (`diff` of a padded mask), scoring over proposals and
classes (prefix sums); only the LCS walk and NMS loop.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Avoids 0/0 in the cosine of all-zero snippets (their cosine with anything is then 0, so they never match).
_NORM_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
  """The inference hyper-parameters (spec sections 4-5; `use_change_points=False` is the EFC-only ablation)."""
  class_threshold: float = 0.2
  attention_thresholds: tuple[float, ...] = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))
  foreground_threshold: float = 0.5
  snap_window: int = 3
  video_score_weight: float = 0.2
  nms_tiou: float = 0.5
  lcs_cosine: float = 0.65
  lcs_ratio: float = 0.5
  use_change_points: bool = True


def lcs_length(similar: np.ndarray) -> int:
  """Length of the longest common subsequence of two sequences, given which pairs match.

  The row recurrence dp[i, j] = dp[i-1, j-1] + 1 if match else max(dp[i-1, j], dp[i, j-1]) equals a running
  maximum over the row of (match ? dp[i-1, j-1] + 1 : dp[i-1, j]), because a row grows by at most 1 per step; so
  each row is one vectorised pass, and the loop runs over the shorter sequence.

  Args:
    similar: [n, m] bool, similar[i, j] = element i of the first sequence matches element j of the second.
  """
  if similar.shape[0] > similar.shape[1]:
    similar = similar.T
  previous = np.zeros(similar.shape[1] + 1, np.int64)
  for row in similar:
    candidates = np.where(row, previous[:-1] + 1, previous[1:])
    previous = np.concatenate([[0], np.maximum.accumulate(candidates)])
  return int(previous[-1])


def lcs_prune(features: np.ndarray, boundaries: np.ndarray, cosine: float, ratio: float) -> np.ndarray:
  """Deletes redundant change points by LCS comparison of neighbouring parts (module docstring, step 5).

  Args:
    features: [T, D] the video's snippet features.
    boundaries: [K] strictly increasing change points in (0, T) (a change point is the first snippet of a part).
    cosine: snippets match when their cosine similarity is >= this.
    ratio: a boundary goes when LCS / min(|L|, |R|) >= this.
  Returns:
    [K'] int64, the kept change points (a subsequence of `boundaries`).
  """
  length = features.shape[0]
  unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), _NORM_EPS)
  ends = np.append(boundaries, length)
  kept, start = [], 0
  for k, boundary in enumerate(boundaries):
    left, right = unit[start:boundary], unit[boundary:ends[k + 1]]
    common = lcs_length(left @ right.T >= cosine)
    if common < ratio * min(len(left), len(right)):
      kept.append(int(boundary))
      start = boundary
    # else: merged; the merged part is compared with the next part.
  return np.array(kept, np.int64)


def foreground_change_points(boundaries: np.ndarray, foreground: np.ndarray, threshold: float) -> np.ndarray:
  """Change points b with max(a^fg_{b-1}, a^fg_b) >= threshold: [K] -> [K'] int64."""
  boundaries = np.asarray(boundaries, np.int64)
  if boundaries.size == 0:
    return boundaries
  return boundaries[np.maximum(foreground[boundaries - 1], foreground[boundaries]) >= threshold]


def attention_runs(foreground: np.ndarray, thresholds: tuple[float, ...]) -> np.ndarray:
  """Every maximal run [s, e) of foreground >= θ, for every θ (duplicates removed).

  Args:
    foreground: [T] foreground attention.
    thresholds: the θ values.
  Returns:
    [P, 2] int64 (start, end), sorted.
  """
  above = foreground[None, :] >= np.asarray(thresholds)[:, None]  # [n_thr, T]
  edges = np.diff(np.pad(above.astype(np.int8), ((0, 0), (1, 1))), axis=1)
  # Row-major order pairs the k-th start of a row with its k-th end.
  starts = np.nonzero(edges == 1)[1]
  ends = np.nonzero(edges == -1)[1]
  return np.unique(np.stack([starts, ends], axis=1).reshape(-1, 2), axis=0)


def snap(proposals: np.ndarray, boundaries: np.ndarray, window: int) -> np.ndarray:
  """Moves each start and end to the nearest boundary within `window` snippets (ties: the earlier boundary).

  Args:
    proposals: [P, 2] int (start, end).
    boundaries: [K] sorted change points.
    window: w.
  Returns:
    [P', 2] int64, the snapped proposals with end > start (duplicates removed).
  """
  if boundaries.size == 0 or proposals.size == 0:
    return proposals.reshape(-1, 2).astype(np.int64)
  distance = np.abs(proposals[:, :, None] - boundaries[None, None, :])  # [P, 2, K]
  nearest = np.argmin(distance, axis=-1)  # first minimum = the earlier boundary on ties
  close = np.take_along_axis(distance, nearest[..., None], axis=-1)[..., 0] <= window
  snapped = np.where(close, boundaries[nearest], proposals).astype(np.int64)
  snapped = snapped[snapped[:, 1] > snapped[:, 0]]
  return np.unique(snapped, axis=0).reshape(-1, 2)


def change_point_intervals(boundaries: np.ndarray, foreground: np.ndarray, threshold: float) -> np.ndarray:
  """Intervals between consecutive points of boundaries ∪ {0, T} whose mean foreground is >= threshold: [P, 2]."""
  length = len(foreground)
  edges = np.unique(np.concatenate([[0, length], boundaries])).astype(np.int64)
  intervals = np.stack([edges[:-1], edges[1:]], axis=1)
  cumulative = np.concatenate([[0.0], np.cumsum(foreground, dtype=np.float64)])
  means = (cumulative[intervals[:, 1]] - cumulative[intervals[:, 0]]) / (intervals[:, 1] - intervals[:, 0])
  return intervals[means >= threshold]


def outer_inner_scores(proposals: np.ndarray, snippet_scores: np.ndarray, video_scores: np.ndarray,
                       video_score_weight: float) -> np.ndarray:
  """Outer-inner contrast plus the weighted video score (module docstring, step 8).

  Args:
    proposals: [P, 2] int (start, end), 0 <= start < end <= T.
    snippet_scores: [T, K] s_{t,c} of the kept classes.
    video_scores: [K] p^fg_c of the kept classes.
    video_score_weight: the weight of the video score (0.2).
  Returns:
    [P, K] scores (the outer mean is 0 for a proposal that covers the whole video).
  """
  length = snippet_scores.shape[0]
  cumulative = np.concatenate([np.zeros([1, snippet_scores.shape[1]]), np.cumsum(snippet_scores, axis=0,
                                                                                  dtype=np.float64)])
  start, end = proposals[:, 0], proposals[:, 1]
  margin = np.maximum(1, (end - start) // 4)
  before, after = np.maximum(start - margin, 0), np.minimum(end + margin, length)
  inner = (cumulative[end] - cumulative[start]) / (end - start)[:, None]
  outer_sum = cumulative[start] - cumulative[before] + cumulative[after] - cumulative[end]
  outer_count = ((start - before) + (after - end))[:, None]
  outer = np.divide(outer_sum, outer_count, out=np.zeros_like(outer_sum), where=outer_count > 0)
  return inner - outer + video_score_weight * video_scores[None, :]


def nms(proposals: np.ndarray, scores: np.ndarray, tiou: float) -> np.ndarray:
  """Greedy hard NMS of one class: indices kept, by descending score; drops tIoU > `tiou` with a kept one.

  Args:
    proposals: [P, 2] (start, end). scores: [P].
  Returns:
    [P'] int64 indices into `proposals`.
  """
  order = np.argsort(-scores, kind="stable")
  start, end = proposals[:, 0].astype(np.float64), proposals[:, 1].astype(np.float64)
  kept = []
  while order.size:
    best, rest = order[0], order[1:]
    kept.append(best)
    intersection = np.clip(np.minimum(end[best], end[rest]) - np.maximum(start[best], start[rest]), 0, None)
    union = (end[best] - start[best]) + (end[rest] - start[rest]) - intersection
    overlap = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    order = rest[overlap <= tiou]
  return np.array(kept, np.int64)


def localize(features: np.ndarray, cas_logits: np.ndarray, attention: np.ndarray, video_probs: np.ndarray,
             raw_change_points: np.ndarray, settings: InferenceSettings) -> tuple[np.ndarray, np.ndarray]:
  """Detections of one video (module docstring).

  Args:
    features: [T, D] snippet features (for the LCS pruning).
    cas_logits: [T, C + 1] the CAS (last column background).
    attention: [T, 3] (foreground, context, background) attention.
    video_probs: [C + 1] p^fg.
    raw_change_points: [K] the DFC's change points, sorted, in (0, T).
    settings: the hyper-parameters.
  Returns:
    detections: [N, 4] float64 rows (class id, score, start, end), start / end in snippets, end exclusive.
    change_points: [K'] int64 the change points after LCS pruning (empty without change points).
  """
  num_classes = cas_logits.shape[1] - 1
  foreground = attention[:, 0].astype(np.float64)
  class_probs = video_probs[:num_classes]
  classes = np.flatnonzero(class_probs >= settings.class_threshold)
  if classes.size == 0:
    classes = np.array([int(np.argmax(class_probs))])
  logits = cas_logits.astype(np.float64)
  softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
  softmax /= softmax.sum(axis=1, keepdims=True)
  snippet_scores = foreground[:, None] * softmax[:, classes]

  proposals = attention_runs(foreground, settings.attention_thresholds)
  pruned = np.zeros([0], np.int64)
  if settings.use_change_points:
    pruned = lcs_prune(features.astype(np.float64), np.asarray(raw_change_points, np.int64), settings.lcs_cosine,
                       settings.lcs_ratio)
    boundaries = foreground_change_points(pruned, foreground, settings.foreground_threshold)
    proposals = np.concatenate([snap(proposals, boundaries, settings.snap_window),
                                change_point_intervals(boundaries, foreground, settings.foreground_threshold)])
    proposals = np.unique(proposals, axis=0).reshape(-1, 2)
  if proposals.size == 0:
    return np.zeros([0, 4]), pruned
  scores = outer_inner_scores(proposals, snippet_scores, class_probs[classes], settings.video_score_weight)
  rows = []
  for k, label in enumerate(classes):
    kept = nms(proposals, scores[:, k], settings.nms_tiou)
    rows.append(np.column_stack([np.full(len(kept), label), scores[kept, k], proposals[kept]]))
  return np.concatenate(rows).astype(np.float64), pruned
