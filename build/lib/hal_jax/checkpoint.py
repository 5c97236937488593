"""Orbax checkpoints of the training state, with the data position, for exact resume.

A checkpoint holds two items:
  * ``state``: the train state pytree (params, optimizer state, step), saved with `StandardSave` and restored into
    the abstract state of the current run (shapes, dtypes and shardings come from the current model, so a
    checkpoint of another model shape is detected before anything is overwritten);
  * ``meta``: JSON with the method, the data position ``(epoch, batch_in_epoch)`` and a fingerprint of the parameter
    shapes.

Orbax writes each step into a temporary directory and renames it when complete, so a process killed mid-save leaves
no half-written step that looks finished.

Restoring tells three kinds of failure apart (`restore_latest`):
  * **corrupt** (the step's files are damaged or missing: `OSError`, `ValueError`, `KeyError` from Orbax or JSON, or
    metadata that is not a checkpoint's): the step is skipped with a warning and the next older one is tried. The
    skipped steps stay on disk until this run's first save, which moves them into ``<directory>.unreadable/`` (so a
    resumed run never collides with them, and the rotation never counts them);
  * **another method, other parameter shapes**: `CheckpointError` at once, nothing touched (use a new workdir);
  * anything else is a bug and propagates with its traceback.
When checkpoints exist and none of them restores, `restore_latest` raises `CheckpointError` naming the directory and
each step's reason, and changes nothing: a run never silently starts over beside its own unreadable checkpoints.
Only `start_over=True` (the command line's ``--start_over``) trains from step 0 then, setting the unreadable steps
aside at the first save.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from hal_jax import errors

# What a damaged or incomplete step raises when read: missing or unreadable files (OSError), truncated or garbled
# JSON and tensorstore data (ValueError, JSONDecodeError), a missing item (KeyError). Every other exception is a bug.
CORRUPT_ERRORS = (OSError, ValueError, KeyError)
# Metadata keys every checkpoint written by `Checkpointer.save` has.
_META_KEYS = ("step", "shapes", "method")
UNREADABLE_SUFFIX = ".unreadable"


class CorruptCheckpoint(Exception):
  """A step's metadata parsed but is not a checkpoint's (not an object, keys missing, another step's)."""


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
    self._unreadable: set[int] = set()  # Steps `restore_latest` skipped as corrupt.

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Writes `state` and `meta` as checkpoint `step` (collectively on every process) and waits for it.

    The first save after `restore_latest` skipped unreadable steps moves them aside first (see the module docstring).
    """
    self._set_aside_unreadable()
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
    """The metadata of `step`; `CORRUPT_ERRORS` or `CorruptCheckpoint` when it cannot be a checkpoint's."""
    try:
      meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except RecursionError:  # Python's JSON parser recurses per nesting level; ours is one flat object.
      raise CorruptCheckpoint("metadata nested too deeply") from None
    if not isinstance(meta, dict):
      raise CorruptCheckpoint(f"metadata is a {type(meta).__name__}, not an object")
    missing = [key for key in _META_KEYS if key not in meta]
    if missing:
      raise CorruptCheckpoint(f"metadata lacks {', '.join(missing)}")
    if meta["step"] != step:
      raise CorruptCheckpoint(f"metadata says step {meta['step']!r}")
    return meta

  def latest_meta(self) -> tuple[int, dict[str, Any]] | None:
    """(step, metadata) of the newest checkpoint whose metadata reads, without reading its state; None if there is
    no checkpoint.

    Raises:
      CheckpointError: checkpoints exist but the metadata of none of them reads.
    """
    reasons = {}
    for step in reversed(self.all_steps()):
      try:
        return step, self._read_meta(step)
      except (*CORRUPT_ERRORS, CorruptCheckpoint) as error:
        reasons[step] = _reason(error)
    if reasons:
      raise self._none_restores(reasons)
    return None

  def restore_latest(self, abstract_state: Any, *, expect: dict[str, Any],
                     on_fallback: Callable[[str], None] | None = None, start_over: bool = False) -> Restored | None:
    """Restores the newest readable checkpoint into `abstract_state`, or returns None when there is none.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct` (with shardings) describing the current run's state.
      expect: metadata entries that must match (e.g. ``{"method": ...}``); a mismatch raises `CheckpointError`.
      on_fallback: called with a one-line message for each corrupt step that is skipped.
      start_over: when checkpoints exist and none restores, return None (train from step 0; the next `save` sets
        them aside) instead of raising.

    Raises:
      CheckpointError: a checkpoint of another method or of other parameter shapes (nothing is touched); or
        checkpoints exist, none restores and not `start_over` (nothing is touched; the message names each step's
        reason).
    """
    fingerprint = shape_fingerprint(abstract_state)
    reasons: dict[int, str] = {}
    for step in reversed(self.all_steps()):
      step_dir = os.path.join(self.directory, str(step))
      try:
        meta = self._read_meta(step)
        corrupt = None
      except (*CORRUPT_ERRORS, CorruptCheckpoint) as error:
        corrupt = error
      if corrupt is None:
        for key, value in expect.items():
          if meta.get(key) != value:
            raise errors.CheckpointError(
                step_dir, f"checkpoint was written with {key}={meta.get(key)!r}, this run has {key}={value!r}; "
                "use a new --workdir")
        if meta["shapes"] != fingerprint:
          raise errors.CheckpointError(
              step_dir, "checkpoint holds a model of different parameter shapes than this config; use a new --workdir")
        try:
          restored = self._manager.restore(
              step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))["state"]
          return Restored(state=restored, step=step, meta=meta)
        except CORRUPT_ERRORS as error:
          corrupt = error
      reasons[step] = _reason(corrupt)
      self._unreadable.add(step)
      message = f"{step_dir}: unreadable checkpoint ({reasons[step]}), falling back to the previous one"
      logging.warning(message)
      if on_fallback is not None:
        on_fallback(message)
    if not reasons:
      return None
    if not start_over:
      raise self._none_restores(reasons)
    logging.warning("%s: no checkpoint restores; starting over from step 0 (--start_over); the unreadable steps are "
                    "moved to %s at the first save", self.directory, self.directory + UNREADABLE_SUFFIX)
    return None

  def _none_restores(self, reasons: dict[int, str]) -> errors.CheckpointError:
    listed = "; ".join(f"step {step}: {reason}" for step, reason in reasons.items())
    return errors.CheckpointError(
        self.directory, f"none of the {len(reasons)} checkpoints restores ({listed}); nothing was changed. Move "
        "the directory away, or pass --start_over to set them aside and train from step 0")

  def _set_aside_unreadable(self) -> None:
    """Moves the steps `restore_latest` skipped into ``<directory>.unreadable/`` (process 0; all processes wait)."""
    if not self._unreadable:
      return
    if jax.process_index() == 0:
      target = self.directory + UNREADABLE_SUFFIX
      os.makedirs(target, exist_ok=True)
      for step in sorted(self._unreadable):
        source = os.path.join(self.directory, str(step))
        if os.path.exists(source):
          destination = os.path.join(target, str(step))
          suffix = 1
          while os.path.exists(destination):  # An earlier run set a step of the same number aside.
            destination, suffix = os.path.join(target, f"{step}.{suffix}"), suffix + 1
          shutil.move(source, destination)
          logging.warning("%s: unreadable checkpoint moved to %s", source, destination)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes("hal_jax_checkpoint_set_aside")
    self._unreadable.clear()
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()



def _reason(error: Exception) -> str:
  """One short line saying why a step did not restore: the exception's type and the start of its message."""
  text = " ".join(str(error).split())
  text = text if len(text) <= 120 else text[:117] + "..."
  return f"{type(error).__name__}: {text}" if text else type(error).__name__
