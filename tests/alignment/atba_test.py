"""Tests for hal_jax.alignment.atba against the spec's reference values and a NumPy transcription of ATBA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax.alignment import atba
from tests.alignment import atba_numpy_reference as reference

# §5.9 worked example: T_v = 12, C = 3, transcript (0, 1, 2), four frames per action.
GOLDEN_POSTERIORS = np.array([[0.8, 0.1, 0.1]] * 4 + [[0.1, 0.8, 0.1]] * 4 + [[0.1, 0.1, 0.8]] * 4, np.float32)


# One jitted function per shape keeps the number of XLA compiles (seconds each on a shared CPU) small.
_boundary_score = jax.jit(atba.boundary_score, static_argnames="kernel")
_BOUNDARY_FRAMES = 25  # padded length of the boundary-score tests


def _step_posteriors(num_frames, step, num_classes=3):
  probs = np.zeros((num_frames, num_classes), np.float32)
  probs[:step, 0] = 1.0
  probs[step:, 1] = 1.0
  return probs


def test_boundary_score_of_an_ideal_step_is_48_over_49_and_24_over_49_beside_it():
  probs = _step_posteriors(_BOUNDARY_FRAMES, 10)
  score = np.asarray(_boundary_score(jnp.asarray(probs), 20))
  np.testing.assert_allclose(score[9:12], [24 / 49, 48 / 49, 24 / 49], atol=1e-6)
  np.testing.assert_allclose(score[4:7], 0.0, atol=1e-6)  # far from the step and from the ends


def test_boundary_score_of_constant_posteriors_is_inflated_near_both_ends():
  probs = np.tile(np.array([[0.5, 0.3, 0.2]], np.float32), (20, 1))
  # Padding rows hold garbage: they must be read as zero vectors and scored -inf.
  padded = np.concatenate([probs, np.full((_BOUNDARY_FRAMES - 20, 3), 7.0, np.float32)])
  score = np.asarray(_boundary_score(jnp.asarray(padded), 20))
  np.testing.assert_allclose(score[:3], [24 / 49, 12 / 49, 4 / 49], atol=1e-6)
  np.testing.assert_allclose(score[3:17], 0.0, atol=1e-6)
  np.testing.assert_allclose(score[17:20], [0.0, 4 / 49, 12 / 49], atol=1e-6)
  assert np.all(score[20:] == -np.inf)


def test_golden_example_of_section_5_9():
  result = jax.jit(atba.align)(jnp.asarray(GOLDEN_POSTERIORS), 12, jnp.array([0, 1, 2]), 3)
  result = jax.tree.map(np.asarray, result)
  expected_score = [-np.inf, 0.1719, 0.0816, 0.2190, 0.4379, 0.1460, 0.0730, 0.2190, 0.4379, 0.1460, 0.0816, 0.2449]
  np.testing.assert_allclose(result.boundary_score, expected_score, atol=5e-5)
  # w = int(12 / 3 * 0.3) = 1; NMS stops after 5 picks; K_max = 4 * 2 = 8 slots.
  np.testing.assert_array_equal(result.candidates, [1, 4, 6, 8, 11, -1, -1, -1])
  np.testing.assert_allclose(result.scores[:, :5],
                             [[0.1945, 0.5283, 0.1182, 0.4379, 0.2449], [0.1719, 0.4379, 0.1182, 0.5283, 0.2675]],
                             atol=5e-5)
  assert np.all(result.scores[:, 5:] == -np.inf)
  np.testing.assert_array_equal(result.boundaries, [4, 8])
  np.testing.assert_array_equal(result.labels, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
  assert bool(result.valid)


def test_nms_radius_uses_python_double_arithmetic_like_atba():
  table = atba.nms_radius_table(200, 10, 0.3)
  for num_frames, transcript_len in [(70, 3), (12, 3), (140, 6), (5, 5), (199, 7), (0, 4)]:
    assert table[transcript_len, num_frames] == int(num_frames / transcript_len * 0.3)
  assert table[3, 70] == 6  # the exact value 7 is an integer that doubles round just below
  assert np.all(table[0] == 0)


def test_nms_breaks_ties_towards_the_first_frame_like_torch_max():
  score = jnp.array([-np.inf, 1.0, 0.0, 1.0, 0.0, 0.0])
  # Radius int(6 / 2 * 0.7) = 2: frame 1 wins the tie with frame 3 and suppresses 0..3; then frame 4 beats frame 5.
  candidates, mask = atba.select_candidates(score, 6, 2, max_transcript=2, scale=0.7)
  np.testing.assert_array_equal(candidates, [1, 4, -1, -1])
  np.testing.assert_array_equal(mask, [True, True, False, False])


_DP_TRIALS, _DP_ROWS, _DP_SLOTS = 300, 4, 10
_dp_batch = jax.jit(jax.vmap(atba.drop_allowed_dp))


def _dp_trials(rng, integer_scores):
  """Random [R, K] score matrices with N rows and n >= N - 1 slots in use (n = N - 1 is infeasible), -inf after."""
  rows = rng.integers(1, _DP_ROWS + 1, _DP_TRIALS)
  slots = np.array([rng.integers(r - 1, _DP_SLOTS + 1) for r in rows])
  shape = (_DP_TRIALS, _DP_ROWS, _DP_SLOTS)
  if integer_scores:
    scores = rng.integers(-2, 3, shape).astype(np.float32)
    scores[:_DP_TRIALS // 10] = 0.0  # all-zero matrices: everything ties
  else:
    scores = rng.normal(size=shape).astype(np.float32)
  used = np.arange(_DP_SLOTS)[None, None, :] < slots[:, None, None]
  chosen, feasible = _dp_batch(jnp.asarray(np.where(used, scores, -np.inf), jnp.float32), jnp.asarray(rows))
  return rows, slots, scores, np.asarray(chosen), np.asarray(feasible)


def test_dp_equals_brute_force_over_strictly_increasing_choices():
  rows, slots, scores, chosen, feasible = _dp_trials(np.random.default_rng(0), integer_scores=False)
  np.testing.assert_array_equal(feasible, slots >= rows)
  assert (~feasible).any()
  for n_rows, n_slots, matrix, picks in zip(rows[feasible], slots[feasible], scores[feasible], chosen[feasible]):
    picks_used = picks[:n_rows]
    assert np.all(np.diff(picks_used) > 0) and picks_used[0] >= 0 and picks_used[-1] < n_slots
    assert np.all(picks[n_rows:] == -1)
    value = sum(matrix[r, k] for r, k in enumerate(picks_used))
    best = reference.brute_force_best(matrix[:n_rows, :n_slots].astype(np.float64))
    assert value == pytest.approx(best, abs=1e-5)


def test_dp_selects_the_same_candidates_as_atbas_dp_including_ties():
  rows, slots, scores, chosen, feasible = _dp_trials(np.random.default_rng(1), integer_scores=True)
  for n_rows, n_slots, matrix, picks in zip(rows[feasible], slots[feasible], scores[feasible], chosen[feasible]):
    np.testing.assert_array_equal(picks[:n_rows], reference.atba_dp(matrix[:n_rows, :n_slots]))
  # All-zero scores pick the last N candidates.
  zeros = [i for i in range(_DP_TRIALS // 10) if feasible[i]]
  assert zeros
  for i in zeros:
    np.testing.assert_array_equal(chosen[i, :rows[i]], np.arange(slots[i] - rows[i], slots[i]))


# (T_v, M) per video: ordinary, M = 1, M = 2, T_v close to M, T_v = M, T_v < M, a padding video (0, 0), a short video
# with fewer candidates than λ(M-1), and a transcript with a repeated (consecutive) label.
VIDEO_SHAPES = [(40, 4), (60, 6), (25, 1), (30, 2), (7, 5), (5, 5), (6, 5), (3, 5), (0, 0), (12, 6), (55, 4)]


def _random_batch(rng, shapes, padded_frames, max_transcript, num_classes=5, repeat_last=False):
  """Logits [B, T, C] with noisy piecewise-constant structure, garbage on padding, and -1 padded transcripts."""
  batch = len(shapes)
  logits = rng.normal(0.0, 3.0, (batch, padded_frames, num_classes)).astype(np.float32)  # garbage padding
  transcript = np.full((batch, max_transcript), -1, np.int32)
  for i, (num_frames, num_segments) in enumerate(shapes):
    labels = [int(rng.integers(num_classes))]
    while len(labels) < num_segments:
      labels.append(int(rng.choice([c for c in range(num_classes) if c != labels[-1]])))
    if repeat_last and i == batch - 1 and num_segments >= 2:
      labels[-1] = labels[-2]  # should not happen after collapsing; its transition score is 0
    transcript[i, :num_segments] = labels
    if num_frames >= num_segments > 0:
      cuts = np.sort(rng.choice(np.arange(1, num_frames), num_segments - 1, replace=False)) if num_segments > 1 else []
      truth = np.repeat(labels, np.diff(np.concatenate([[0], cuts, [num_frames]])).astype(int))
      logits[i, :num_frames] = 2.5 * np.eye(num_classes)[truth] + rng.normal(0.0, 1.0, (num_frames, num_classes))
  num_frames = np.array([s[0] for s in shapes], np.int32)
  transcript_len = np.array([s[1] for s in shapes], np.int32)
  return logits, num_frames, transcript, transcript_len


_masked_posteriors = jax.jit(atba.masked_posteriors)


def _align_logits(logits, num_frames, transcript, transcript_len, **hyper):
  """The batch alignment as NumPy arrays (slicing device arrays eagerly would compile one op per shape)."""
  posteriors = _masked_posteriors(jnp.asarray(logits), jnp.asarray(num_frames))
  result = atba.align_batch(posteriors, num_frames, transcript, transcript_len, **hyper)
  return jax.tree.map(np.asarray, result)


def _check_against_reference(logits, num_frames, transcript, transcript_len, **hyper):
  """Asserts that every field of the batch alignment equals the NumPy transcription; returns the alignment."""
  result = _align_logits(logits, num_frames, transcript, transcript_len, **hyper)
  expected_valid = []
  for i, (t_v, m) in enumerate(zip(num_frames, transcript_len)):
    expected = reference.pseudo_labels(reference.softmax(logits[i, :t_v]), list(transcript[i, :m]), **hyper)
    expected_valid.append(bool(np.any(expected["labels"] >= 0)))
    np.testing.assert_array_equal(result.labels[i, :t_v], expected["labels"], err_msg=f"video {i}")
    assert np.all(result.labels[i, t_v:] == -1)
    if t_v:
      np.testing.assert_allclose(result.boundary_score[i, :t_v], expected["boundary_score"], atol=2e-6)
    if m >= 2:
      n = len(expected["candidates"])
      np.testing.assert_array_equal(result.candidates[i, :n], expected["candidates"])
      assert np.all(result.candidates[i, n:] == -1)
      if expected["boundaries"]:
        np.testing.assert_allclose(result.scores[i, :m - 1, :n], expected["scores"], atol=2e-6)
        np.testing.assert_array_equal(result.boundaries[i, :m - 1], expected["boundaries"])
  np.testing.assert_array_equal(result.valid, expected_valid)
  return result


def test_pipeline_matches_numpy_reference_on_a_mixed_batch():
  result = _check_against_reference(*_random_batch(np.random.default_rng(2), VIDEO_SHAPES, 64, 6, repeat_last=True))
  # The cases the batch is meant to cover really occur.
  valid = result.valid
  assert valid[[0, 1, 2, 3, 4, 5, 6, 9, 10]].all() and not valid[[7, 8]].any()
  assert np.sum(result.candidates[9] >= 0) < 4 * 5  # short video: fewer than λ(M-1) candidates


def test_pipeline_matches_numpy_reference_with_other_hyper_parameters():
  shapes = VIDEO_SHAPES[:-1] + [(10, 6)]
  batch = _random_batch(np.random.default_rng(3), shapes, 64, 6)
  result = _check_against_reference(*batch, boundary_kernel=5, boundary_scale=0.6, transition_kernel=23,
                                    candidate_multiplier=2)
  # μ = 0.6 can leave fewer than M - 1 candidates although T_v >= M (ATBA asserts): no pseudo-labels then.
  num_frames, transcript_len = batch[1], batch[3]
  assert not result.valid[(num_frames >= transcript_len) & (transcript_len > 0)].all()
  assert result.valid[[0, 1, 2, 3]].all()


def test_pseudo_segments_are_non_empty_and_in_transcript_order():
  rng = np.random.default_rng(5)
  shapes = [(int(rng.integers(m, 65)), int(m)) for m in rng.integers(1, 7, len(VIDEO_SHAPES))]
  logits, num_frames, transcript, transcript_len = _random_batch(rng, shapes, 64, 6)
  result = _align_logits(logits, num_frames, transcript, transcript_len)
  assert result.valid.all()
  for i, (t_v, m) in enumerate(zip(num_frames, transcript_len)):
    edges = np.concatenate([[0], result.boundaries[i, :m - 1], [t_v]])
    assert np.all(np.diff(edges) >= 1)
    np.testing.assert_array_equal(result.labels[i, :t_v], np.repeat(transcript[i, :m], np.diff(edges)))
    assert np.all(result.boundaries[i, m - 1:] == -1)


def test_labels_do_not_depend_on_frame_or_transcript_padding():
  logits, num_frames, transcript, transcript_len = _random_batch(np.random.default_rng(6), VIDEO_SHAPES, 64, 6)
  small = _align_logits(logits, num_frames, transcript, transcript_len)
  garbage = np.random.default_rng(7).normal(0.0, 5.0, (len(VIDEO_SHAPES), 32, logits.shape[2])).astype(np.float32)
  wide_transcript = np.pad(transcript, ((0, 0), (0, 3)), constant_values=-1)
  large = np.asarray(atba.pseudo_labels_batch(np.concatenate([logits, garbage], axis=1), num_frames,
                                              wide_transcript, transcript_len))
  np.testing.assert_array_equal(large[:, :64], small.labels)
  assert np.all(large[:, 64:] == -1)
  assert np.any(small.labels >= 0)


def test_batch_alignment_traces_once_for_a_batch_shape():
  traces = []

  @jax.jit
  def step(logits, num_frames, transcript, transcript_len):
    traces.append(None)  # runs only while tracing
    return atba.pseudo_labels_batch(logits, num_frames, transcript, transcript_len)

  for seed in range(3):
    rng = np.random.default_rng(seed)
    shapes = [(int(rng.integers(5, 32)), int(rng.integers(1, 5))) for _ in range(4)]
    step(*_random_batch(rng, shapes, 32, 4)).block_until_ready()
  assert len(traces) == 1


def test_invalid_hyper_parameters_raise():
  with pytest.raises(ValueError, match="boundary_kernel"):
    atba.align(jnp.asarray(GOLDEN_POSTERIORS), 12, jnp.array([0, 1, 2]), 3, boundary_kernel=6)
  with pytest.raises(ValueError, match="candidate_multiplier"):
    atba.align(jnp.asarray(GOLDEN_POSTERIORS), 12, jnp.array([0, 1, 2]), 3, candidate_multiplier=0)
