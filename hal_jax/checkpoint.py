"""Orbax checkpoints of the training state, with the data position, for exact resume.

A checkpoint holds two items:
  * ``state``: the train state pytree (params, optimizer state, step), saved with `StandardSave` and restored into
    the abstract state of the current run (shapes, dtypes and shardings come from the current model, so a
    checkpoint of another model shape is detected before anything is overwritten);
  * ``meta``: JSON with the method, the data position ``(epoch, batch_in_epoch)`` and a fingerprint of the parameter
    shapes.

Orbax writes each step into a temporary directory and renames it when complete, so a process killed mid-save leaves
no half-written step that looks finished. A finished step that cannot be read (corrupted files) is skipped with a
warning and the previous one is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from hal_jax import errors


@dataclasses.dataclass(frozen=True)
class Restored:
  """A restored checkpoint: the state pytree, its step and its metadata dict."""
  state: Any
  step: int
  meta: dict[str, Any]


def shape_fingerprint(tree: Any) -> str:
  """A short hash of the tree structure, shapes and dtypes of `tree` (arrays or ShapeDtypeStructs)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  text = ";".join(f"{jax.tree_util.keystr(path)}:{tuple(leaf.shape)}:{leaf.dtype}" for path, leaf in leaves)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpointer:
  """Saves and restores train states in `directory` with an Orbax `CheckpointManager`.

  Args:
    directory: where step directories go (``<workdir>/checkpoints``).
    keep: how many of the latest checkpoints to keep (`preservation_policy=LatestN`).
  """

  def __init__(self, directory: str, *, keep: int = 3):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(keep),
        # Saves are synchronous: the loop only continues once the step directory is final, which keeps the
        # "last good checkpoint" guarantee simple when a later step fails.
        enable_async_checkpointing=False,
        create=True,
        cleanup_tmp_directories=True,
    )
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))
    except OSError as error:
      raise errors.CheckpointError(self.directory, f"cannot create the checkpoint directory ({error.strerror})")

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Writes `state` and `meta` as checkpoint `step` (collectively on every process) and waits for it."""
    meta = dict(meta, step=int(step), shapes=shape_fingerprint(state))
    try:
      self._manager.save(
          int(step),
          args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
          force=True,
      )
      self._manager.wait_until_finished()
    except OSError as error:
      raise errors.CheckpointError(self.directory, f"cannot write checkpoint {step} ({error.strerror or error})")

  def _read_meta(self, step: int) -> dict[str, Any]:
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def latest_meta(self) -> tuple[int, dict[str, Any]] | None:
    """(step, metadata) of the newest checkpoint whose metadata reads, without reading its state; None if none."""
    for step in reversed(self.all_steps()):
      try:
        return step, self._read_meta(step)
      except Exception:  # pylint: disable=broad-except  (unreadable: fall back as restore_latest does)
        continue
    return None

  def restore_latest(self, abstract_state: Any, *, expect: dict[str, Any],
                     on_fallback: Callable[[str], None] | None = None) -> Restored | None:
    """Restores the newest readable checkpoint into `abstract_state`, or returns None when there is none.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct` (with shardings) describing the current run's state.
      expect: metadata entries that must match (e.g. ``{"method": ...}``); a mismatch raises `CheckpointError`.
      on_fallback: called with a one-line message when an unreadable newest checkpoint is skipped.
    """
    fingerprint = shape_fingerprint(abstract_state)
    for step in reversed(self.all_steps()):
      step_dir = os.path.join(self.directory, str(step))
      try:
        meta = self._read_meta(step)
      except Exception as error:  # pylint: disable=broad-except  (any read failure means "corrupted")
        self._report_fallback(step_dir, error, on_fallback)
        continue
      for key, value in expect.items():
        if meta.get(key) != value:
          raise errors.CheckpointError(
              step_dir, f"checkpoint was written with {key}={meta.get(key)!r}, this run has {key}={value!r}; "
              "use a new --workdir")
      if meta.get("shapes") != fingerprint:
        raise errors.CheckpointError(
            step_dir, "checkpoint holds a model of different parameter shapes than this config; use a new --workdir")
      try:
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))["state"]
      except Exception as error:  # pylint: disable=broad-except
        self._report_fallback(step_dir, error, on_fallback)
        continue
      return Restored(state=restored, step=step, meta=meta)
    return None

  @staticmethod
  def _report_fallback(step_dir: str, error: Exception, on_fallback: Callable[[str], None] | None) -> None:
    message = f"{step_dir}: unreadable checkpoint ({type(error).__name__}), falling back to the previous one"
    logging.warning(message)
    if on_fallback is not None:
      on_fallback(message)

  def close(self) -> None:
    self._manager.close()

