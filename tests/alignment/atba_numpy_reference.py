"""A plain NumPy transcription of ATBA's pseudo-label generation, used only as a test oracle.

It follows ../shared/specs/hal_atba.md §5 literally, one video at a time, with Python loops where ATBA's code has
them (models/loss.py, `BoundaryDetector`): the full w x w pair-similarity matrix per window, the NMS loop with early
stop, the 2(M-1)+1-state DP with ATBA's tie rules, and the §5.8 choices for the cases where ATBA crashes. It is
written in float64 and independently of hal_jax.alignment.atba (no shared code), so that agreement means something.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
  """[T, C] -> [T, C] float64 softmax over classes."""
  logits = np.asarray(logits, np.float64)
  shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return shifted / shifted.sum(axis=-1, keepdims=True)


def template(kernel: int) -> np.ndarray:
  """[w, w] block template: +1 same side, -1 across, 0 at the centre (the centre frame is on the "after" side)."""
  half = kernel // 2
  side = np.arange(kernel) >= half
  matrix = np.where(side[:, None] == side[None, :], 1.0, -1.0)
  matrix[half, half] = 0.0
  return matrix


def pair_similarity(p: np.ndarray, q: np.ndarray) -> float:
  """Γ(p, q) = 1 - 2 JS(p, q) / ln 2 with natural logs, 1e-32 in the mixture's log and 0 log 0 = 0."""
  mixture = (p + q) / 2
  kl_p = sum(pc * (math.log(pc) - math.log(mc + 1e-32)) for pc, mc in zip(p, mixture) if pc > 0)
  kl_q = sum(qc * (math.log(qc) - math.log(mc + 1e-32)) for qc, mc in zip(q, mixture) if qc > 0)
  js = (kl_p + kl_q) / 2
  return -(js / math.log(2) * 2 - 1)


def boundary_score(probs: np.ndarray, kernel: int = 7) -> np.ndarray:
  """[T_v, C] posteriors -> [T_v] v^b (frame 0 not yet set to -inf), zero vectors outside the video."""
  num_frames, num_classes = probs.shape
  half = kernel // 2
  padded = np.zeros((num_frames + 2 * half, num_classes))
  padded[half:half + num_frames] = probs
  weights = template(kernel)
  score = np.zeros(num_frames)
  for t in range(num_frames):
    window = padded[t:t + kernel]
    similarity = np.array([[pair_similarity(window[a], window[b]) for b in range(kernel)] for a in range(kernel)])
    score[t] = np.mean(weights * similarity)
  return score


def nms_candidates(score: np.ndarray, num_boundaries: int, radius: int, multiplier: int = 4) -> list[int]:
  """ATBA's greedy NMS: at most multiplier * num_boundaries picks, sorted increasingly."""
  working = score.copy()
  picks = []
  for _ in range(multiplier * num_boundaries):
    index = int(np.argmax(working))
    if working[index] == -np.inf:
      break
    picks.append(index)
    working[max(0, index - radius):min(len(working), index + radius + 1)] = -np.inf
  return sorted(picks)


def transition_score(probs: np.ndarray, transcript: list[int], candidates: list[int], kernel: int = 31) -> np.ndarray:
  """[M-1, n] V^a: g frames before (+a_r - a_{r+1}), g+1 frames after (the reverse), zero padded, mean over 2w."""
  num_frames = probs.shape[0]
  half = kernel // 2
  scores = np.zeros((len(transcript) - 1, len(candidates)))
  for r in range(len(transcript) - 1):
    first, second = transcript[r], transcript[r + 1]
    for k, centre in enumerate(candidates):
      total = 0.0
      for offset in range(kernel):
        frame = centre - half + offset
        if 0 <= frame < num_frames:
          sign = 1.0 if offset < half else -1.0
          total += sign * (probs[frame, first] - probs[frame, second])
      scores[r, k] = total / (2 * kernel)
  return scores


def atba_dp(scores: np.ndarray) -> list[int]:
  """ATBA's drop-allowed DP on [N, n] scores (n >= N >= 1), returning the chosen candidate indices.

  States per candidate: 2r = "r transitions placed, this candidate dropped", 2r - 1 = "transition r placed here".
  Costs are minimised; comparisons and tie rules are those of `BoundaryDetector.dp`.
  """
  cost = -np.asarray(scores, np.float64)
  num_transitions, num_candidates = cost.shape
  states = 2 * num_transitions + 1
  dist = np.full((num_candidates, states), np.inf)
  step = np.zeros((num_candidates, states), np.int64)  # how many states back the predecessor is
  dist[:num_candidates - num_transitions, 0] = 0.0
  dist[:num_candidates - num_transitions + 1, 1] = cost[0, :num_candidates - num_transitions + 1]
  step[:num_candidates - num_transitions + 1, 1] = 1
  for i in range(1, num_candidates):
    for j in range(2, states):
      if j % 2 == 0:
        if dist[i - 1, j] < dist[i - 1, j - 1]:
          dist[i, j], step[i, j] = dist[i - 1, j], 0
        else:
          dist[i, j], step[i, j] = dist[i - 1, j - 1], 1
      else:
        if dist[i - 1, j - 1] < dist[i - 1, j - 2]:
          dist[i, j], step[i, j] = cost[j // 2, i] + dist[i - 1, j - 1], 1
        else:
          dist[i, j], step[i, j] = cost[j // 2, i] + dist[i - 1, j - 2], 2
  chosen = []
  i = num_candidates - 1
  j = states - 1 if dist[-1, -1] < dist[-1, -2] else states - 2
  while i >= 0:
    if j % 2 == 1:
      chosen.append(i)
    j -= step[i, j]
    i -= 1
  return chosen[::-1]


def brute_force_best(scores: np.ndarray) -> float:
  """Max over strictly increasing choices of N of the n candidates of sum_r scores[r, k_r]."""
  num_transitions, num_candidates = scores.shape
  return max(sum(scores[r, k] for r, k in enumerate(choice))
             for choice in itertools.combinations(range(num_candidates), num_transitions))


def pseudo_labels(probs: np.ndarray, transcript: list[int], *, boundary_kernel: int = 7, boundary_scale: float = 0.3,
                  transition_kernel: int = 31, candidate_multiplier: int = 4) -> dict:
  """The whole pipeline on one video's valid posteriors [T_v, C] and its transcript (a Python list).

  Returns a dict with "labels" [T_v] (all -1 when there is no valid pseudo-segmentation), "boundaries",
  "candidates", "scores" ([M-1, n]) and "boundary_score" (frame 0 = -inf).
  """
  num_frames = probs.shape[0]
  num_segments = len(transcript)
  result = {"labels": np.full(num_frames, -1, np.int64), "boundaries": [], "candidates": [],
            "scores": np.zeros((max(num_segments - 1, 0), 0)), "boundary_score": np.zeros(0)}
  if num_frames == 0 or num_segments == 0:
    return result
  score = boundary_score(probs, boundary_kernel)
  score[0] = -np.inf
  result["boundary_score"] = score
  if num_segments == 1:  # §5.8: ATBA crashes; every frame gets a_1.
    result["labels"][:] = transcript[0]
    return result
  radius = int(num_frames / num_segments * boundary_scale)  # ATBA: int(t / t_len * self.win_scale)
  candidates = nms_candidates(score, num_segments - 1, radius, candidate_multiplier)
  result["candidates"] = candidates
  if len(candidates) < num_segments - 1:  # §5.8: T_v < M (or too few candidates): no pseudo-labels.
    return result
  scores = transition_score(probs, transcript, candidates, transition_kernel) + score[candidates][None, :]
  result["scores"] = scores
  boundaries = [candidates[k] for k in atba_dp(scores)]
  result["boundaries"] = boundaries
  edges = [0] + boundaries + [num_frames]
  for r, label in enumerate(transcript):
    result["labels"][edges[r]:edges[r + 1]] = label
  return result
