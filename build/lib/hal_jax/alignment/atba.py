"""ATBA pseudo-labels (Xu & Zheng, CVPR 2024) as static-shape, jittable, vmappable array code.

Spec: ../shared/specs/hal_atba.md, section 5 (pseudo-label generation), 12 (behaviours to match) and 14.3 (the JAX
form). Per video, from the frame posteriors P [T_v, C] and the transcript a_1..a_M:

  1. boundary score v^b_t: JS-divergence similarities of the 7-frame window around t, weighted by a block template
     (+1 same side, -1 across, frame t on the "after" side), zero vectors beyond both ends; v^b_0 = -inf;
  2. greedy NMS: at most λ(M-1) picks, suppression radius int(T_v / M * μ);
  3. total score V[r, k] = action-transition score of transition r at candidate k + v^b at that candidate;
  4. drop-allowed DP: the strictly increasing choice of M-1 candidates with the largest total score, ties towards
     later candidates exactly like ATBA's 2(M-1)+1-state DP;
  5. pseudo-labels: frames [b_{r-1}, b_r) get a_r; -1 (ignore) on padding.

Everything is padded: posteriors [T, C] with `num_frames` valid frames, transcripts [M_max] padded with -1 with
`transcript_len` valid entries, and K_max = λ(M_max-1) candidate slots. The cost is linear in T (no T x T array):
O(T w_b C) for the boundary score, O(K_max T) for NMS, O(T M) for the transition score, O(K_max M) for the DP.

Degenerate cases (§5.8, where ATBA's code crashes): M = 1 labels every valid frame a_1; a video without a valid
pseudo-segmentation (T_v < M, or fewer than M-1 candidates) gets no pseudo-labels (all -1), see `Alignment.valid`.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# ATBA adds this to the mixture distribution before taking its log (models/loss.py, `pair_sim`).
_MIXTURE_EPS = 1e-32
_NEG_INF = -jnp.inf


class Alignment(NamedTuple):
  """The pseudo-labels of one video (or a batch, with a leading [B] axis) and the intermediate results.

  Attributes:
    labels: [T] int32 pseudo-label per frame; -1 on padding frames and when `valid` is False.
    boundaries: [M_max - 1] int32 first frame b_r of segment r+1 (0-based r); -1 for r >= M - 1 or when not valid.
    candidates: [K_max] int32 NMS candidate frames, increasing; -1 on unused slots.
    scores: [M_max - 1, K_max] float32 total score V (transition + boundary); -inf on unused rows and slots.
    boundary_score: [T] float32 v^b as NMS sees it: -inf at frame 0 and on padding.
    valid: [] bool, whether the video has a pseudo-segmentation (False for T_v < M, M = 0, or too few candidates).
  """
  labels: jax.Array
  boundaries: jax.Array
  candidates: jax.Array
  scores: jax.Array
  boundary_score: jax.Array
  valid: jax.Array


def _check_hyper_parameters(boundary_kernel: int, boundary_scale: float, transition_kernel: int,
                            candidate_multiplier: int) -> None:
  # ATBA's unfold-based windows only have T outputs for odd kernels; even ones crash its reshape.
  for name, kernel in (("boundary_kernel", boundary_kernel), ("transition_kernel", transition_kernel)):
    if not isinstance(kernel, numbers.Integral) or kernel < 1 or kernel % 2 == 0:
      raise ValueError(f"{name} must be a positive odd int, got {kernel!r}")
  if not boundary_scale >= 0:
    raise ValueError(f"boundary_scale must be >= 0, got {boundary_scale!r}")
  if not isinstance(candidate_multiplier, numbers.Integral) or candidate_multiplier < 1:
    raise ValueError(f"candidate_multiplier must be a positive int, got {candidate_multiplier!r}")


def masked_posteriors(logits: jax.Array, num_frames: jax.Array) -> jax.Array:
  """Softmax over classes in float32, with the zero vector on padding frames.

  The zero rows reproduce ATBA's per-video zero padding at the end of the sequence (not the softmax of whatever
  the padding logits are).

  Args:
    logits: [..., T, C] frame logits.
    num_frames: [...] int, valid frames per video.

  Returns:
    [..., T, C] float32 posteriors, zero on frames t >= num_frames.
  """
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  frames = jnp.arange(logits.shape[-2])
  valid = frames < jnp.asarray(num_frames)[..., None]
  return jnp.where(valid[..., None], probs, 0.0)


def boundary_score(posteriors: jax.Array, num_frames: jax.Array, *, kernel: int = 7) -> jax.Array:
  """Class-agnostic boundary score v^b of §5.2 (frame 0 is *not* set to -inf here).

  v^b_t = (1/w^2) sum_{a,b} K_ab Γ(P_{t-h+a}, P_{t-h+b}) with Γ(p, q) = 1 - 2 JS(p, q) / ln 2, P_j = 0 outside
  [0, T_v). Pair (a, b) of window t is the frame pair (t-h+a, t-h+b), which other windows share, so the w - 1 arrays
  G_d[i] = Γ(P_i, P_{i+d}) (d = 1..w-1) are computed once and every window sum reads shifted slices of them:
  O(T w C) instead of O(T w^2 C).

  Args:
    posteriors: [T, C] frame posteriors; rows at or beyond `num_frames` are treated as zero vectors.
    num_frames: [] int, valid frames T_v.
    kernel: w_b, odd window length.

  Returns:
    [T] float32 boundary score on valid frames, -inf on padding frames.
  """
  num_frames_padded = posteriors.shape[0]
  half = kernel // 2
  frames = jnp.arange(num_frames_padded)
  probs = jnp.where((frames < num_frames)[:, None], posteriors.astype(jnp.float32), 0.0)
  # Row i of `padded` is frame i - half, so window t covers rows t .. t + kernel - 1; the kernel - 1 extra zero rows
  # at the end give every offset a full-length slice.
  padded = jnp.pad(probs, ((half, half + kernel - 1), (0, 0)))
  length = num_frames_padded + 2 * half
  positive = padded > 0
  log_padded = jnp.log(jnp.where(positive, padded, 1.0))
  p, log_p, p_positive = padded[:length], log_padded[:length], positive[:length]

  def kl_to_mixture(x, log_x, x_positive, log_mixture):
    # KL(x || m) with 0 log 0 = 0, as PyTorch's kl_div does for zero targets.
    return jnp.sum(jnp.where(x_positive, x * (log_x - log_mixture), 0.0), axis=-1)

  def similarity(_, offset):
    q = jax.lax.dynamic_slice_in_dim(padded, offset, length)
    log_q = jax.lax.dynamic_slice_in_dim(log_padded, offset, length)
    q_positive = jax.lax.dynamic_slice_in_dim(positive, offset, length)
    log_mixture = jnp.log((p + q) / 2 + _MIXTURE_EPS)
    js = (kl_to_mixture(p, log_p, p_positive, log_mixture) + kl_to_mixture(q, log_q, q_positive, log_mixture)) / 2
    return None, 1.0 - js * (2.0 / math.log(2.0))

  # A scan rather than a Python loop over offsets keeps one offset's [T, C] temporaries alive at a time: at batch
  # 32 x 1024 frames on CPU this halved the page faults per call and cut the time by about a third.
  _, similarities = jax.lax.scan(similarity, None, jnp.arange(1, kernel))  # [kernel - 1, length]

  # The diagonal a = b contributes Γ(P, P) = 1 (also for the zero vector) for every a except the template's centre
  # (K_hh = 0): a constant w - 1. Γ(p, p) is exactly 1 in float32 because the 1e-32 vanishes next to any p > 1e-25.
  total = jnp.full((num_frames_padded,), float(kernel - 1), jnp.float32)
  for offset in range(1, kernel):
    for a in range(kernel - offset):
      same_side = (a >= half) == (a + offset >= half)
      # Factor 2: the template and Γ are symmetric, so (a, b) and (b, a) contribute the same term.
      weight = 2.0 if same_side else -2.0
      total = total + weight * similarities[offset - 1, a:a + num_frames_padded]
  score = total / (kernel * kernel)
  return jnp.where(frames < num_frames, score, _NEG_INF)


def nms_radius_table(max_frames: int, max_transcript: int, scale: float) -> np.ndarray:
  """[max_transcript + 1, max_frames + 1] int32 table of ATBA's suppression radius int(T_v / M * μ).

  ATBA evaluates this in Python doubles; float32 (or exact rational) arithmetic differs when the true value is an
  integer (e.g. T_v = 70, M = 3, μ = 0.3 gives 6 in doubles, not 7), so the table is built in float64 on the host
  once per trace and looked up on device. Row M = 0 (no transcript) is 0.
  """
  num_frames = np.arange(max_frames + 1, dtype=np.float64)[None, :]
  transcript_len = np.arange(max_transcript + 1, dtype=np.float64)[:, None]
  with np.errstate(divide="ignore", invalid="ignore"):
    radius = np.where(transcript_len > 0, num_frames / np.maximum(transcript_len, 1.0) * scale, 0.0)
  return np.trunc(radius).astype(np.int32)


def select_candidates(score: jax.Array, num_frames: jax.Array, transcript_len: jax.Array, *, max_transcript: int,
                      scale: float = 0.3, multiplier: int = 4) -> tuple[jax.Array, jax.Array]:
  """Greedy NMS of §5.3: at most λ(M-1) arg-max picks, each suppressing |t - pick| <= int(T_v / M * μ).

  Args:
    score: [T] boundary score with -inf on frames that may not be picked (frame 0, padding).
    num_frames: [] int, T_v.
    transcript_len: [] int, M.
    max_transcript: M_max (static), which fixes K_max = λ(M_max - 1) slots.
    scale: μ.
    multiplier: λ.

  Returns:
    candidates: [K_max] int32 picked frames in increasing order, -1 on unused slots.
    mask: [K_max] bool, True on the n used slots (a prefix).
  """
  num_frames_padded = score.shape[0]
  num_slots = multiplier * (max_transcript - 1)
  radius_table = jnp.asarray(nms_radius_table(num_frames_padded, max_transcript, scale))
  radius = radius_table[transcript_len, num_frames]
  limit = multiplier * (transcript_len - 1)
  frames = jnp.arange(num_frames_padded)

  def pick(slot, carry):
    working, picks, used = carry
    best = jnp.argmax(working)  # first index on ties, like torch.max
    ok = (working[best] > _NEG_INF) & (slot < limit)
    picks = picks.at[slot].set(best.astype(jnp.int32))
    used = used.at[slot].set(ok)
    working = jnp.where(ok & (jnp.abs(frames - best) <= radius), _NEG_INF, working)
    return working, picks, used

  init = (score, jnp.zeros((num_slots,), jnp.int32), jnp.zeros((num_slots,), bool))
  _, picks, used = jax.lax.fori_loop(0, num_slots, pick, init)
  # Picks are distinct frames; unused slots sort after every frame and become -1.
  order = jnp.sort(jnp.where(used, picks, num_frames_padded))
  mask = order < num_frames_padded
  return jnp.where(mask, order, -1), mask


def transition_score(posteriors: jax.Array, transcript: jax.Array, candidates: jax.Array, *,
                     kernel: int = 31) -> jax.Array:
  """Action-transition score V^a of §5.4 from cumulative sums along time.

  V^a[r, k] = (1 / 2w) [sum_{j=c-g}^{c-1} (P_{j,a_r} - P_{j,a_{r+1}}) + sum_{j=c}^{c+w-g-1} (P_{j,a_{r+1}} - P_{j,a_r})]
  with c = candidates[k], g = w // 2 (g frames before, g + 1 after the candidate for odd w) and zero padding.

  Args:
    posteriors: [T, C] posteriors, already zero on padding frames.
    transcript: [M_max] int32 labels (-1 padding is read as class 0; those rows are masked by the caller).
    candidates: [K] int32 frames (-1 slots are read as frame 0; masked by the caller).
    kernel: w_a, odd.

  Returns:
    [M_max - 1, K] float32 transition scores.
  """
  num_frames_padded = posteriors.shape[0]
  before = kernel // 2
  columns = posteriors[:, jnp.clip(transcript, 0)].astype(jnp.float32)  # [T, M_max]
  difference = columns[:, :-1] - columns[:, 1:]  # [T, M_max - 1]: P_{a_r} - P_{a_{r+1}}
  # cumulative[t] = sum of difference over frames < t, so a window [lo, hi) sums to cumulative[hi] - cumulative[lo].
  cumulative = jnp.concatenate([jnp.zeros_like(difference[:1]), jnp.cumsum(difference, axis=0)])
  centre = jnp.clip(candidates, 0, num_frames_padded - 1)
  start = jnp.clip(centre - before, 0, num_frames_padded)
  stop = jnp.clip(centre + kernel - before, 0, num_frames_padded)
  sum_before = cumulative[centre] - cumulative[start]  # [K, M_max - 1]
  sum_after = cumulative[stop] - cumulative[centre]
  return ((sum_before - sum_after) / (2 * kernel)).T


def drop_allowed_dp(scores: jax.Array, num_transitions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Best strictly increasing assignment of transitions 1..N to candidate slots (§5.6, §14.3).

  F_r(k) = max(F_{r-1}(k-1) + V[r, k], F_r(k-1)), F_0 = 0, F_r(-1) = -inf, choosing "place" when the first term is
  >= the second. On ties this selects exactly what ATBA's 2N+1-state DP selects (later candidates), because its
  backtracking makes the same comparisons: a state "placed at k" is preferred over "dropped at k" on equal cost.

  Args:
    scores: [R, K] float32, row r = transition r+1; -inf on slots that may not be used.
    num_transitions: [] int, N <= R (rows >= N are ignored).

  Returns:
    slots: [R] int32 chosen slot k_r for r < N (strictly increasing), -1 for r >= N.
    feasible: [] bool, False when no assignment with finite score exists (then `slots` is meaningless).
  """
  num_rows, num_slots = scores.shape

  def forward(best, column):
    # best[r] = F_{r+1}(k-1); shifting in F_0 = 0 gives F_r(k-1) for the "place" branch.
    placed = jnp.concatenate([jnp.zeros((1,), best.dtype), best[:-1]]) + column
    place = placed >= best
    return jnp.where(place, placed, best), place

  best, place = jax.lax.scan(forward, jnp.full((num_rows,), _NEG_INF, jnp.float32), scores.T.astype(jnp.float32))
  last = best[jnp.clip(num_transitions - 1, 0, num_rows - 1)]
  feasible = (num_transitions <= 0) | (last > _NEG_INF)

  def backward(carry, inputs):
    remaining, slots = carry
    slot, place_at_slot = inputs
    row = jnp.maximum(remaining - 1, 0)
    placed = (remaining > 0) & place_at_slot[row]
    slots = slots.at[row].set(jnp.where(placed, slot, slots[row]))
    return (remaining - placed.astype(remaining.dtype), slots), None

  init = (jnp.asarray(num_transitions, jnp.int32), jnp.full((num_rows,), -1, jnp.int32))
  (_, slots), _ = jax.lax.scan(backward, init, (jnp.arange(num_slots, dtype=jnp.int32), place), reverse=True)
  return slots, feasible


def align(posteriors: jax.Array, num_frames: jax.Array, transcript: jax.Array, transcript_len: jax.Array, *,
          boundary_kernel: int = 7, boundary_scale: float = 0.3, transition_kernel: int = 31,
          candidate_multiplier: int = 4) -> Alignment:
  """ATBA boundary alignment of one video.

  Args:
    posteriors: [T, C] frame posteriors (rows at or beyond `num_frames` are ignored).
    num_frames: [] int, valid frames T_v.
    transcript: [M_max] int labels, -1 padded.
    transcript_len: [] int, M.
    boundary_kernel: w_b (`bdy-kernel`).
    boundary_scale: μ (`bdy-scale`).
    transition_kernel: w_a (`cs-kernel`).
    candidate_multiplier: λ (`candidate-mul`).

  Returns:
    The `Alignment` (labels [T], boundaries [M_max - 1], candidates [K_max], ...).
  """
  _check_hyper_parameters(boundary_kernel, boundary_scale, transition_kernel, candidate_multiplier)
  num_frames_padded = posteriors.shape[0]
  transcript = jnp.asarray(transcript, jnp.int32)
  if transcript.shape[0] < 2:
    # One column of transitions keeps every array non-empty; M_max = 1 then behaves like M = 1.
    transcript = jnp.pad(transcript, (0, 2 - transcript.shape[0]), constant_values=-1)
  max_transcript = transcript.shape[0]
  num_frames = jnp.clip(jnp.asarray(num_frames, jnp.int32), 0, num_frames_padded)
  transcript_len = jnp.clip(jnp.asarray(transcript_len, jnp.int32), 0, max_transcript)
  frames = jnp.arange(num_frames_padded)
  probs = jnp.where((frames < num_frames)[:, None], posteriors.astype(jnp.float32), 0.0)

  # The first segment needs at least one frame, so frame 0 is never a boundary.
  score = boundary_score(probs, num_frames, kernel=boundary_kernel).at[0].set(_NEG_INF)
  candidates, candidate_mask = select_candidates(score, num_frames, transcript_len, max_transcript=max_transcript,
                                                 scale=boundary_scale, multiplier=candidate_multiplier)
  transitions = jnp.arange(max_transcript - 1)
  usable = (transitions < transcript_len - 1)[:, None] & candidate_mask[None, :]
  total = transition_score(probs, transcript, candidates, kernel=transition_kernel)
  total = total + score[jnp.clip(candidates, 0)][None, :]
  total = jnp.where(usable, total, _NEG_INF)

  slots, feasible = drop_allowed_dp(total, transcript_len - 1)
  valid = feasible & (transcript_len >= 1) & (num_frames >= 1)
  placed = (transitions < transcript_len - 1) & valid
  boundaries = jnp.where(placed, candidates[jnp.clip(slots, 0)], -1)
  # Segment index of frame t = number of boundaries b_r <= t; unused boundaries sit beyond the last frame.
  segment = jnp.sum(frames[:, None] >= jnp.where(placed, boundaries, num_frames_padded)[None, :], axis=1)
  labels = jnp.where(valid & (frames < num_frames), transcript[segment], -1)
  return Alignment(labels=labels, boundaries=boundaries, candidates=candidates, scores=total, boundary_score=score,
                   valid=valid)


_STATIC = ("boundary_kernel", "boundary_scale", "transition_kernel", "candidate_multiplier")


@functools.partial(jax.jit, static_argnames=_STATIC)
def align_batch(posteriors: jax.Array, num_frames: jax.Array, transcript: jax.Array, transcript_len: jax.Array, *,
                boundary_kernel: int = 7, boundary_scale: float = 0.3, transition_kernel: int = 31,
                candidate_multiplier: int = 4) -> Alignment:
  """`align` over a batch: posteriors [B, T, C], num_frames [B], transcript [B, M_max], transcript_len [B].

  Returns an `Alignment` whose fields have a leading [B] axis.
  """
  single = functools.partial(align, boundary_kernel=boundary_kernel, boundary_scale=boundary_scale,
                             transition_kernel=transition_kernel, candidate_multiplier=candidate_multiplier)
  return jax.vmap(single)(posteriors, num_frames, transcript, transcript_len)


@functools.partial(jax.jit, static_argnames=_STATIC)
def pseudo_labels_batch(logits: jax.Array, num_frames: jax.Array, transcript: jax.Array, transcript_len: jax.Array,
                        *, boundary_kernel: int = 7, boundary_scale: float = 0.3, transition_kernel: int = 31,
                        candidate_multiplier: int = 4) -> jax.Array:
  """ATBA pseudo-labels of a batch from frame logits, without gradient.

  Args:
    logits: [B, T, C] frame logits (any float dtype; aligned in float32).
    num_frames: [B] int, valid frames per video.
    transcript: [B, M_max] int, -1 padded.
    transcript_len: [B] int, valid transcript entries.
    boundary_kernel, boundary_scale, transition_kernel, candidate_multiplier: w_b, μ, w_a, λ (static).

  Returns:
    [B, T] int32 pseudo-labels, -1 on padding frames and on videos without a valid pseudo-segmentation.
  """
  posteriors = masked_posteriors(jax.lax.stop_gradient(logits), num_frames)
  return align_batch(posteriors, num_frames, transcript, transcript_len, boundary_kernel=boundary_kernel,
                     boundary_scale=boundary_scale, transition_kernel=transition_kernel,
                     candidate_multiplier=candidate_multiplier).labels
