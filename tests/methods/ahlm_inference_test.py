"""Tests for hal_jax.methods.ahlm_inference: LCS pruning, proposals, snapping, scoring, NMS, localize."""

import itertools

import numpy as np
import pytest

from hal_jax.methods import ahlm_inference as inference


def reference_lcs(similar: np.ndarray) -> int:
  """The textbook O(nm) dynamic programme."""
  n, m = similar.shape
  table = np.zeros((n + 1, m + 1), int)
  for i, j in itertools.product(range(1, n + 1), range(1, m + 1)):
    if similar[i - 1, j - 1]:
      table[i, j] = table[i - 1, j - 1] + 1
    else:
      table[i, j] = max(table[i - 1, j], table[i, j - 1])
  return int(table[n, m])


def test_lcs_length_matches_the_textbook_programme():
  rng = np.random.default_rng(0)
  for _ in range(200):
    n, m = rng.integers(1, 9, 2)
    similar = rng.random((n, m)) < rng.uniform(0.1, 0.7)
    assert inference.lcs_length(similar) == reference_lcs(similar)
  assert inference.lcs_length(np.eye(4, dtype=bool)[::-1]) == 1  # anti-diagonal: order matters


def test_lcs_prune_merges_repeated_parts_and_keeps_orthogonal_ones():
  a, b = np.eye(4)[0], np.eye(4)[1]
  same = np.stack([a] * 12)
  np.testing.assert_array_equal(inference.lcs_prune(same, np.array([4, 8]), 0.65, 0.5), [])
  two = np.stack([a] * 6 + [b] * 6)
  # 3 and 9 split identical parts (merged); 6 separates orthogonal parts (kept).
  np.testing.assert_array_equal(inference.lcs_prune(two, np.array([3, 6, 9]), 0.65, 0.5), [6])
  np.testing.assert_array_equal(inference.lcs_prune(two, np.zeros([0], np.int64), 0.65, 0.5), [])


def test_lcs_prune_compares_the_merged_part_with_the_next_one():
  # Parts [0, 2) = a, [2, 4) = a, [4, 6) = b mixed with a: after merging at 2, the merged part (4 x a) against
  # [a, b] has LCS 1 >= 0.5 * 2, so 4 goes too.
  a, b = np.eye(3)[0], np.eye(3)[1]
  features = np.stack([a, a, a, a, b, a])
  np.testing.assert_array_equal(inference.lcs_prune(features, np.array([2, 4]), 0.65, 0.5), [])
  np.testing.assert_array_equal(inference.lcs_prune(features, np.array([2, 4]), 0.65, 0.75), [4])


def test_foreground_change_points_look_at_both_sides():
  foreground = np.array([0.1, 0.1, 0.6, 0.1, 0.1, 0.1])
  np.testing.assert_array_equal(inference.foreground_change_points(np.array([1, 2, 3, 5]), foreground, 0.5), [2, 3])


def test_attention_runs_cover_every_threshold():
  foreground = np.array([0.0, 0.3, 0.6, 0.6, 0.2, 0.7, 0.0])
  runs = inference.attention_runs(foreground, (0.1, 0.5))
  # θ = 0.1: [1, 6); θ = 0.5: [2, 4) and [5, 6).
  np.testing.assert_array_equal(runs, [[1, 6], [2, 4], [5, 6]])
  # Duplicates across thresholds appear once.
  np.testing.assert_array_equal(inference.attention_runs(foreground, (0.5, 0.55)), [[2, 4], [5, 6]])
  assert inference.attention_runs(np.zeros(5), (0.5,)).shape == (0, 2)
  np.testing.assert_array_equal(inference.attention_runs(np.ones(3), (0.5,)), [[0, 3]])


def test_snap_moves_ends_to_the_nearest_boundary_within_the_window():
  proposals = np.array([[5, 20], [9, 11], [30, 40]])
  boundaries = np.array([7, 10, 22])
  snapped = inference.snap(proposals, boundaries, 3)
  # [5, 20] -> [7, 22]; [9, 11] -> [10, 10] (dropped: empty); [30, 40] unchanged (nothing within 3).
  np.testing.assert_array_equal(snapped, [[7, 22], [30, 40]])
  # Ties go to the earlier boundary.
  np.testing.assert_array_equal(inference.snap(np.array([[5, 9]]), np.array([3, 7]), 3), [[3, 7]])
  np.testing.assert_array_equal(inference.snap(proposals, np.zeros([0], np.int64), 3), proposals)


def test_change_point_intervals_keep_foreground_parts():
  foreground = np.array([0.1, 0.1, 0.9, 0.8, 0.7, 0.2, 0.2, 0.6])
  np.testing.assert_array_equal(inference.change_point_intervals(np.array([2, 5, 7]), foreground, 0.5),
                                [[2, 5], [7, 8]])


def test_outer_inner_scores_by_hand():
  scores = np.array([[0.0], [0.0], [1.0], [1.0], [1.0], [1.0], [0.0], [0.5]])
  # [2, 6): inner 1, margin 1, outer {1, 6} -> 0; + 0.2 * 0.5.
  # [0, 8): no outer region -> outer 0; inner mean 4.5 / 8.
  got = inference.outer_inner_scores(np.array([[2, 6], [0, 8]]), scores, np.array([0.5]), 0.2)
  np.testing.assert_allclose(got[:, 0], [1.0 + 0.1, 4.5 / 8 + 0.1])
  # [6, 8): margin 1, outer {5} only (clipped at the end) -> 0.25 - 1.
  np.testing.assert_allclose(inference.outer_inner_scores(np.array([[6, 8]]), scores, np.array([0.0]), 0.2),
                             [[0.25 - 1.0]])


def test_nms_drops_overlaps_above_the_threshold():
  proposals = np.array([[0, 10], [1, 10], [0, 4], [20, 30], [0, 10]])
  scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
  # [1, 10] has tIoU 0.9 with [0, 10]; [0, 4] has 0.4 (kept); the duplicate goes.
  np.testing.assert_array_equal(inference.nms(proposals, scores, 0.5), [0, 2, 3])


def test_localize_finds_the_action_of_a_clean_video():
  length, num_classes = 40, 3
  foreground = np.full(length, 0.05)
  foreground[10:20] = 0.95
  attention = np.stack([foreground, 0.5 * (1 - foreground), 0.5 * (1 - foreground)], axis=1)
  cas = np.zeros((length, num_classes + 1))
  cas[10:20, 1] = 5.0
  video_probs = np.array([0.05, 0.9, 0.03, 0.02])
  features = np.zeros((length, 3))
  features[:, 0] = 1.0
  features[10:20] = [0.0, 1.0, 0.0]
  raw = np.array([4, 10, 13, 20, 30])
  detections, pruned = inference.localize(features, cas, attention, video_probs, raw,
                                          inference.InferenceSettings())
  np.testing.assert_array_equal(pruned, [10, 20])  # 4, 13 and 30 split identical parts
  assert np.all(detections[:, 0] == 1)  # only the class above 0.2
  best = detections[np.argmax(detections[:, 1])]
  np.testing.assert_array_equal(best[2:], [10, 20])
  efc_only, none = inference.localize(features, cas, attention, video_probs, raw,
                                      inference.InferenceSettings(use_change_points=False))
  assert none.size == 0 and efc_only.shape[1] == 4


@pytest.mark.parametrize("probs", [np.array([0.1, 0.15, 0.05, 0.7]), np.array([0.19, 0.1, 0.01, 0.7])])
def test_localize_falls_back_to_the_argmax_class(probs):
  attention = np.tile([0.9, 0.05, 0.05], (6, 1))
  detections, _ = inference.localize(np.ones((6, 2)), np.zeros((6, 4)), attention, probs, np.zeros([0], np.int64),
                                     inference.InferenceSettings())
  assert set(detections[:, 0]) == {int(np.argmax(probs[:3]))}
