"""Recognition metrics against a golden example worked by hand (hal_jax/metrics/recognition.py)."""

import math

import numpy as np
import pytest

from hal_jax.metrics import recognition

# Taxonomy: level 1 {A=0, B=1}; level 2 {a1=0, a2=1 under A; b1=2 under B}; leaf values a1=0, a2=2, b1=1.
PARENTS = (np.zeros([0], np.int32), np.array([0, 0, 1]))
LEAF_VALUES = np.array([0.0, 2.0, 1.0])
A, B, A1, A2, B1 = 0, 1, 0, 1, 2
LABELS = np.array([[A, A1], [A, A2], [B, B1], [A, A2]])
FILTERED = np.array([[A, A1], [A, A1], [A, A2], [A, A2]])
FLAT = np.array([[A, A1], [A, B1], [A, B1], [A, A2]])


def test_golden_example_worked_by_hand():
  scores = recognition.recognition_scores(LABELS, FILTERED, FLAT, PARENTS, joint=FILTERED, leaf_values=LEAF_VALUES)
  expected = {
      "acc_l1": 75.0, "acc_l2": 50.0, "path_acc": 50.0,  # clips 1-4: (✓✓) (✓✗) (✗✗) (✓✓)
      "acc_l1_flat": 75.0, "acc_l2_flat": 75.0, "path_acc_flat": 50.0,  # (✓✓) (✓✗) (✗✓) (✓✓)
      "acc_l1_joint": 75.0, "acc_l2_joint": 50.0, "path_acc_joint": 50.0,
      "consistency_flat": 50.0,  # clips 2 and 3 put b1 under A
      # Filtered leaves [a1 a1 a2 a2] vs [a1 a2 b1 a2]: F1 a1 = 2/3, a2 = 2/4, b1 = 0 -> 7/18.
      "macro_f1": 100 * 7 / 18,
      # Flat leaves [a1 b1 b1 a2]: F1 a1 = 1, a2 = 2/3, b1 = 2/3 -> 7/9.
      "macro_f1_flat": 100 * 7 / 9,
      # Item right on clips 1, 2, 4: |0-0|, |0-2|, |2-2| -> 2/3.
      "score_mae": 2 / 3,
  }
  assert scores.keys() == expected.keys()
  for key, value in expected.items():
    assert scores[key] == pytest.approx(value), key


def test_score_mae_undefined_without_a_right_parent_and_absent_without_values():
  labels = np.array([[B, B1]])
  wrong = np.array([[A, A1]])
  assert math.isnan(recognition.recognition_scores(labels, wrong, wrong, PARENTS, leaf_values=LEAF_VALUES)
                    ["score_mae"])
  assert "score_mae" not in recognition.recognition_scores(labels, wrong, wrong, PARENTS)


def test_inconsistent_filtered_paths_are_rejected():
  with pytest.raises(ValueError, match="break the taxonomy"):
    recognition.recognition_scores(LABELS, FLAT, FLAT, PARENTS)


def test_three_levels_consistency_checks_every_level():
  parents = (np.zeros([0], np.int32), np.array([0, 1]), np.array([0, 0, 1]))
  paths = np.array([[0, 0, 1], [1, 1, 2], [0, 1, 2], [1, 0, 0]])  # the last two break level 2 / level 1
  np.testing.assert_array_equal(recognition.consistent(paths, parents), [True, True, False, False])
