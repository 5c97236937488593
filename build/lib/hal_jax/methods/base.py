"""The Method protocol: what the one training loop (`hal_jax.train`) needs from a method.

A method is a handful of pure functions over plain pytrees, so the loop never branches on the method:

  init(rng, batch) -> params
  loss(params, batch, rng, stage) -> (scalar loss, aux)       aux: {name: (sum, count)} for logging
  predict(params, batch) -> {name: array}                      e.g. frame_logits [batch, frames, classes]
  learning_rate(epoch) -> float32 scalar                       the method's schedule (jittable; epoch a traced int)

A method whose schedule changes within an epoch (e.g. a linear warm-up over the steps of the first epoch) sets
``per_step_schedule = True``: `learning_rate` then gets the fractional epoch ``step / steps_per_epoch`` (float32)
instead of the integer epoch.

`stage` is a static Python int (methods like ATBA train in stages: stage 0 = video loss only, stage 1 = with
pseudo-labels), so each stage compiles once and no stage pays for another's work. The loop resets the optimizer at
the start of every stage after the first (ATBA creates a fresh optimizer at its stage switch).

A method may also carry non-trainable state that the loop refreshes between epochs (HAAN's k-means pseudo-labels).
It then has four more members, and its `loss` takes the state as a fifth argument:

  refresh_data(train_split) -> data                             what `refresh` reads (once per run, host side)
  init_state(data) -> state                                     before any restore; the same shapes as later states
  refresh_due(epoch) -> bool                                    whether `refresh` runs before `epoch`
  refresh(params, state, data, key) -> (state, {name: float})   new state and diagnostics to log
  loss(params, batch, rng, stage, state) -> (loss, aux)

The loop keeps the state in its train state (checkpointed with the parameters, so a resumed run continues with the
state an uninterrupted run would have) and derives the refresh key of epoch e from the seed (see hal_jax.train).

A config file names its method by module (``config.method = "hal_jax.methods.atba"``); that module exposes
``make_method(config, label_names) -> Method``. This is a module path, not a registry: adding a method adds a module.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol

import jax
import ml_collections

from hal_jax import errors
from hal_jax.tasks.base import Task

Batch = Mapping[str, jax.Array]
Params = Any
Aux = dict[str, tuple[jax.Array, jax.Array]]


class Method(Protocol):
  """A training method. See the module docstring."""

  name: str

  def stage_for_epoch(self, epoch: int) -> int:
    """The training stage (0-based) of `epoch`."""

  def init(self, rng: jax.Array, batch: Batch) -> Params:
    """Initial parameters for batches shaped like `batch`."""

  def loss(self, params: Params, batch: Batch, rng: jax.Array, stage: int) -> tuple[jax.Array, Aux]:
    """Scalar training loss (masked means) and `(sum, count)` pairs to log."""

  def predict(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
    """Inference outputs (eval mode, no dropout), masked like the batch."""

  def learning_rate(self, epoch: jax.Array) -> jax.Array:
    """The learning rate of `epoch` (float32 scalar; `epoch` is traced inside the jitted step)."""


def has_state(method: Method) -> bool:
  """Whether `method` carries refreshed non-trainable state (see the module docstring)."""
  return all(callable(getattr(method, name, None))
             for name in ("refresh_data", "init_state", "refresh_due", "refresh"))


def _method_module(config: ml_collections.ConfigDict):
  try:
    return importlib.import_module(config.method)
  except ImportError as error:
    raise errors.ConfigError("config.method", f"cannot import {config.method!r} ({error})") from None


def method_task(config: ml_collections.ConfigDict) -> Task:
  """The task of ``config.method``: its module's ``TASK`` (segmentation when it names none). The task is a module
  constant, not a method attribute, because the data (and so the classes a method is made for) come first."""
  return getattr(_method_module(config), "TASK", Task.SEGMENTATION)


def make_method(config: ml_collections.ConfigDict, label_names: tuple[str, ...]) -> Method:
  """Imports ``config.method`` and builds its method from `config` for data with classes `label_names`."""
  module = _method_module(config)
  if not hasattr(module, "make_method"):
    raise errors.ConfigError("config.method",
                             f"module {config.method!r} has no make_method(config, label_names)")
  return module.make_method(config, label_names)
