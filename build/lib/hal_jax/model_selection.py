"""Checkpoint selection on a held-out split: keeps the parameters with the best score seen so far.

`config.select_checkpoint` (default "last") and `config.selection_metric` (the score that is maximised, named by
the method's config, e.g. a localization method's "average_map"):
  * "last": no selection; the run's result is its final state.
  * "validation": at every evaluation the held-out training videos (`config.validation_fraction`, see
    `hal_jax.tasks.common.hold_out_validation`) are scored, and the state with the best score is written to
    ``<workdir>/best_checkpoint``; the run's result is that state's test score. The test split is never used to
    choose anything.
  * "test": the same on the test split: optimistic, for comparing with official code that selects this way.

The best checkpoint carries its score in its metadata, so a resumed run keeps comparing against it; a tie keeps
the earlier state (a resumed run that re-evaluates the same state changes nothing).
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from hal_jax import checkpoint as checkpoint_lib
from hal_jax import errors

LAST, VALIDATION, TEST = "last", "validation", "test"
DIRECTORY = "best_checkpoint"


def selection_mode(config: ml_collections.ConfigDict) -> str:
  """`config.select_checkpoint`, checked ("last" when the config has no such key)."""
  mode = config.get("select_checkpoint", LAST)
  if mode not in (LAST, VALIDATION, TEST):
    raise errors.ConfigError("config.select_checkpoint", f"must be {LAST!r}, {VALIDATION!r} or {TEST!r}, got "
                             f"{mode!r}")
  if mode == VALIDATION and not config.get("validation_fraction", 0.0):
    raise errors.ConfigError("config.select_checkpoint", "'validation' needs config.validation_fraction > 0")
  if mode != LAST and not config.get("selection_metric", ""):
    raise errors.ConfigError("config.selection_metric", f"selecting checkpoints ({mode!r}) needs the name of the "
                             "score to maximise")
  return mode


class BestCheckpoint:
  """The best-scoring state of a run so far, on disk in ``<workdir>/best_checkpoint`` (one Orbax step).

  Args:
    workdir: the run directory.
    mode: VALIDATION or TEST (what the score is computed on).
    metric: the score that is maximised (a key of the scores).
  """

  def __init__(self, workdir: str, mode: str, metric: str):
    self.mode = mode
    self.metric = metric
    self.directory = os.path.join(workdir, DIRECTORY)
    self._checkpointer = checkpoint_lib.Checkpointer(self.directory, keep=1)
    self.best_score: float | None = None
    self.best_step: int | None = None

  def resume(self) -> None:
    """Reads the stored best score and step (metadata only), so that later states are compared with them."""
    latest = self._checkpointer.latest_meta()
    if latest is not None:
      self.best_step, meta = latest
      self.best_score = float(meta["selection_score"])

  def consider(self, step: int, state: Any, scores: dict[str, float], meta: dict[str, Any]) -> bool:
    """Saves `state` when `scores[self.metric]` beats the best so far; returns whether it did."""
    if self.metric not in scores:
      raise errors.ConfigError("config.selection_metric", f"{self.metric!r} is not a score of this run "
                               f"({sorted(scores)})")
    score = float(scores[self.metric])
    if self.best_score is not None and score <= self.best_score:
      return False
    self._checkpointer.save(step, state, dict(meta, selection_score=score, selected_on=self.mode))
    self.best_score, self.best_step = score, step
    return True

  def restore(self, abstract_state: Any, expect: dict[str, Any]) -> checkpoint_lib.Restored | None:
    """The best state, or None when nothing was selected yet."""
    return self._checkpointer.restore_latest(abstract_state, expect=expect)

  def close(self) -> None:
    self._checkpointer.close()


def open_best(config: ml_collections.ConfigDict, workdir: str) -> BestCheckpoint | None:
  """The run's `BestCheckpoint`, or None when `config` selects the last state."""
  mode = selection_mode(config)
  return None if mode == LAST else BestCheckpoint(workdir, mode, config.selection_metric)

