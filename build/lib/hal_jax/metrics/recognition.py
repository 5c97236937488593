"""Metrics of hierarchical recognition (spec hclip.md §8): one class per taxonomy level for each clip.

Inputs are label paths ``[N, L]`` (int class ids per level, level 1 the coarsest) and the parent maps of the
taxonomy. Every score is on a 0-100 scale except ``score_mae`` (in the units of the leaf values):

* ``acc_l<l>``: top-1 accuracy at level l of the default (top-down filtered) predictions; ``acc_l<l>_flat`` of the
  unfiltered per-level arg-max, ``acc_l<l>_joint`` of the best joint path (when given).
* ``path_acc`` (``_flat``, ``_joint``): every level correct.
* ``consistency_flat``: share of unfiltered predictions whose path follows the parent map at every level (the
  filtered and joint paths are consistent by construction; they are checked, not scored).
* ``macro_f1`` (``_flat``): F1 at the last level, averaged over the classes that occur in the ground truth or the
  predictions (F1 of a class = 2 TP / (2 TP + FP + FN)).
* ``score_mae``: with leaf values (FMA: the score 0/1/2 of an (item, score) leaf), the mean absolute difference of
  the predicted and true leaf values among the clips whose level L-1 class (the FMA item) is predicted correctly;
  NaN when there is no such clip.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def consistent(paths: np.ndarray, parents: Sequence[np.ndarray]) -> np.ndarray:
  """[N] bool: whether each [N, L] path follows `parents` (per level [N_l] parent ids; parents[0] unused)."""
  ok = np.ones(len(paths), bool)
  for level in range(1, paths.shape[1]):
    ok &= np.asarray(parents[level])[paths[:, level]] == paths[:, level - 1]
  return ok


def macro_f1(true: np.ndarray, predicted: np.ndarray) -> float:
  """Macro-F1 (0-100) over the classes occurring in `true` or `predicted` ([N] int each)."""
  classes = np.union1d(true, predicted)
  f1 = []
  for c in classes:
    tp = np.sum((true == c) & (predicted == c))
    fp = np.sum((true != c) & (predicted == c))
    fn = np.sum((true == c) & (predicted != c))
    f1.append(2 * tp / (2 * tp + fp + fn))
  return 100.0 * float(np.mean(f1)) if f1 else float("nan")


def recognition_scores(labels: np.ndarray, filtered: np.ndarray, flat: np.ndarray, parents: Sequence[np.ndarray], *,
                       joint: np.ndarray | None = None, leaf_values: np.ndarray | None = None) -> dict[str, float]:
  """The module docstring's scores.

  Args:
    labels: [N, L] true paths (consistent).
    filtered: [N, L] top-down filtered predictions (the default).
    flat: [N, L] per-level arg-max predictions.
    parents: per level [N_l] int parent ids in level l - 1 (parents[0] is ignored).
    joint: [N, L] best joint paths, or None.
    leaf_values: [N_L] numbers of the leaves, or None (no score_mae).

  Raises:
    ValueError: no clips, shapes that differ, or a filtered / joint path that breaks the parent map.
  """
  labels, filtered, flat = (np.asarray(a, np.int64) for a in (labels, filtered, flat))
  if labels.ndim != 2 or not len(labels):
    raise ValueError(f"labels must be [N, L] with N >= 1, got {labels.shape}")
  variants = {"": filtered, "_flat": flat}
  if joint is not None:
    variants["_joint"] = np.asarray(joint, np.int64)
  for suffix, paths in variants.items():
    if paths.shape != labels.shape:
      raise ValueError(f"predictions{suffix or '_filtered'} have shape {paths.shape}, labels {labels.shape}")
    if suffix != "_flat" and not consistent(paths, parents).all():
      raise ValueError(f"predictions{suffix or '_filtered'} contain paths that break the taxonomy")
  scores = {}
  for suffix, paths in variants.items():
    correct = paths == labels
    for level in range(labels.shape[1]):
      scores[f"acc_l{level + 1}{suffix}"] = 100.0 * float(np.mean(correct[:, level]))
    scores[f"path_acc{suffix}"] = 100.0 * float(np.mean(correct.all(axis=1)))
  scores["consistency_flat"] = 100.0 * float(np.mean(consistent(flat, parents)))
  scores["macro_f1"] = macro_f1(labels[:, -1], filtered[:, -1])
  scores["macro_f1_flat"] = macro_f1(labels[:, -1], flat[:, -1])
  if leaf_values is not None:
    values = np.asarray(leaf_values, np.float64)
    parent_right = filtered[:, -2] == labels[:, -2] if labels.shape[1] > 1 else np.ones(len(labels), bool)
    errors = np.abs(values[filtered[:, -1]] - values[labels[:, -1]])[parent_right]
    scores["score_mae"] = float(np.mean(errors)) if len(errors) else float("nan")
  return scores
