"""The one training loop of hal_jax, for every method (see `hal_jax.methods.base.Method`).

`train_and_evaluate(config, workdir)`:
  1. reads and validates the data (before anything is trained or written besides the workdir itself);
  2. builds the method, initialises its parameters shape-first (`jax.eval_shape`), replicated on a ('data',) mesh;
  3. restores the newest readable checkpoint of the workdir, if any (params, optimizer state, step; the data
     position follows from the step because every epoch has the same number of batches);
  4. runs one jitted, state-donating train step per batch (one compile per training stage), evaluating every
     `config.eval_every_epochs` epochs and saving every `config.checkpoint_every_steps` steps;
  5. stops with `NonFiniteLossError` on a non-finite loss, naming the steps, before the next save, so the last
     checkpoint on disk is the last good one.

Randomness: `config.seed` is the only seed. The init and dropout keys are `fold_in(key(seed), 0 | 1)`; the dropout key
of a step is `fold_in(dropout_key, step)`; the data order and temporal sampling are pure functions of
`(seed, epoch)`. So a run killed anywhere and resumed ends bitwise equal to an uninterrupted one on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from hal_jax import checkpoint as checkpoint_lib
from hal_jax import errors
from hal_jax import metric_writer as metric_writer_lib
from hal_jax import model_selection
from hal_jax import optim
from hal_jax import sharding
from hal_jax import workdir as workdir_lib
from hal_jax import experiment_data
from hal_jax import latent_probe
from hal_jax import localization_data
from hal_jax.methods import base

INIT_STREAM, DROPOUT_STREAM, REFRESH_STREAM = 0, 1, 2


@flax.struct.dataclass
class TrainState:
  """Everything training changes: the global step, the parameters, the optimizer state and, for methods with
  refreshed state (`base.has_state`, e.g. HAAN's pseudo-labels), that state (None otherwise)."""
  step: jax.Array
  params: Any
  opt_state: Any
  method_state: Any = None


@dataclasses.dataclass
class TrainResult:
  """What `train_and_evaluate` returns: the final state and the last evaluation's scalars."""
  state: TrainState
  eval_metrics: dict[str, float]
  steps: int


def _reduce_aux(metrics: Mapping[str, tuple[jax.Array, jax.Array]]) -> dict[str, float]:
  """Turns accumulated `(sum, count)` pairs into means."""
  out = {}
  for name, (total, count) in metrics.items():
    count = float(count)
    out[name] = float(total) / count if count else float("nan")
  return out


def _accumulate(acc: dict | None, new: Mapping[str, tuple[jax.Array, jax.Array]]) -> dict:
  if acc is None:
    return dict(new)
  # A logging window may span a stage switch, after which a method logs more terms (ATBA's stage 1).
  merged = dict(acc)
  for k, v in new.items():
    merged[k] = (acc[k][0] + v[0], acc[k][1] + v[1]) if k in acc else v
  return merged


def load_data(config: ml_collections.ConfigDict, workdir: str):
  """The experiment data of the method's task: segmentation splits, localization subsets or recognition clips."""
  task = base.method_task(config)
  if task is base.Task.DETECTION:
    return localization_data.load(config, workdir)
  if task.value == "recognition":
    from hal_jax.tasks import recognition  # pylint: disable=g-import-not-at-top
    return recognition.load(config, workdir)
  return experiment_data.load(config, workdir)


def make_train_step(method: base.Method, config: ml_collections.ConfigDict, tx, *, stage: int,
                    steps_per_epoch: int, dropout_key: jax.Array) -> Callable[[TrainState, Any], tuple]:
  """The (unjitted) train step of one stage: loss, gradients, the epoch's learning rate and the update."""

  extra = (lambda state: {"state": state.method_state}) if base.has_state(method) else (lambda state: {})

  def train_step(state: TrainState, batch: Mapping[str, jax.Array]):
    rng = jax.random.fold_in(dropout_key, state.step)
    loss_fn = functools.partial(method.loss, batch=batch, rng=rng, stage=stage, **extra(state))
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    learning_rate = optim.learning_rate_for_config(config, state.step // steps_per_epoch)
    opt_state = state.opt_state
    opt_state.hyperparams["learning_rate"] = learning_rate
    updates, opt_state = tx.update(grads, opt_state, state.params)
    params = jax.tree.map(lambda p, u: p + u, state.params, updates)
    one = jnp.ones((), jnp.float32)
    metrics = dict(aux)
    metrics["loss"] = (loss, one)
    metrics["learning_rate"] = (learning_rate, one)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


class InputClock:
  """Measures how long the loop waits for its next batch, per logging window.

  Wrap the batch iterator with `timed`; `window_fraction()` is the share of the training wall time since the
  previous call spent inside `next()` (the device runs asynchronously meanwhile, so this is time the input pipeline
  starved it). Work inside `excluded()` (evaluation, refreshes, saves) counts as neither.
  """

  def __init__(self):
    self._waited = self._excluded = 0.0
    self._window_start = time.perf_counter()

  @contextlib.contextmanager
  def excluded(self):
    started = time.perf_counter()
    try:
      yield
    finally:
      self._excluded += time.perf_counter() - started

  def timed(self, iterator):
    iterator = iter(iterator)
    while True:
      started = time.perf_counter()
      try:
        item = next(iterator)
      except StopIteration:
        return
      self._waited += time.perf_counter() - started
      yield item

  def window_fraction(self) -> float:
    now = time.perf_counter()
    fraction = self._waited / max(now - self._window_start - self._excluded, 1e-9)
    self._waited = self._excluded = 0.0
    self._window_start = now
    return fraction


class _StopRequest:
  """Turns SIGTERM/SIGINT into a request to save a checkpoint and stop at the next step boundary."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. a notebook kernel thread): no handler, nothing to restore.
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def init_state(method: base.Method, tx, config: ml_collections.ConfigDict, example_batch: Mapping[str, jax.Array],
               mesh: jax.sharding.Mesh, method_state: Any = None) -> tuple[TrainState, Any]:
  """Initial train state, replicated on `mesh`, and its abstract (shape + sharding) twin for restoring.

  `method_state` is the method's initial refreshed state (`base.has_state`), None for other methods.
  """
  init_key = jax.random.fold_in(jax.random.key(config.seed), INIT_STREAM)

  def make(batch, method_state):
    params = method.init(init_key, batch)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      method_state=method_state)

  abstract = jax.eval_shape(make, example_batch, method_state)
  replicated = sharding.replicated_sharding(mesh)
  shardings = jax.tree.map(lambda _: replicated, abstract)
  state = jax.jit(make, out_shardings=shardings)(example_batch, method_state)
  abstract = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), abstract,
                          shardings)
  return state, abstract


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, stop_after_steps: int | None = None,
                       mesh: jax.sharding.Mesh | None = None) -> TrainResult:
  """Trains `config`'s method in `workdir` (resuming if it holds checkpoints) and evaluates it.

  Args:
    config: a locked experiment config (see configs/).
    workdir: the run directory (checkpoints, metrics.jsonl, config.json, predictions).
    stop_after_steps: stop (after saving) once the global step reaches this value; used by tests of resumption.
    mesh: the ('data',) mesh to train on (default: every device).
  """
  workdir_lib.validate_config(config)
  model_selection.selection_mode(config)  # A bad selection setting fails before the data is read.
  primary = jax.process_index() == 0
  data = load_data(config, workdir)  # Validates every file before anything is trained.
  method = base.make_method(config, data.label_map.names)
  mesh = mesh or sharding.make_mesh()
  workdir_lib.check_batch_size(config, mesh.size)
  train_pipeline = data.train_pipeline
  steps_per_epoch = train_pipeline.num_batches_per_epoch
  total_steps = config.num_epochs * steps_per_epoch
  tx = optim.make_optimizer(config)
  example = sharding.shard_batch(train_pipeline.batch(0, 0), mesh)
  refresh_data = method.refresh_data(data.train) if base.has_state(method) else None
  state, abstract_state = init_state(method, tx, config, example, mesh,
                                     method.init_state(refresh_data) if refresh_data is not None else None)
  best = model_selection.open_best(config, workdir)

  os.makedirs(workdir, exist_ok=True)
  writer = metric_writer_lib.MetricWriter(workdir, enabled=primary, tensorboard=config.get("tensorboard", True))
  writer.write_config(workdir, config.to_dict())
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoints_to_keep)
  restored = checkpointer.restore_latest(abstract_state, expect={"method": method.name},
                                         on_fallback=lambda msg: writer.write_scalars(0, {"warning": msg}))
  if restored is not None:
    state = restored.state
    logging.info("Resumed from step %d", restored.step)
  if best is not None:
    best.resume()
  start_step = int(state.step)
  refresh_key = jax.random.fold_in(jax.random.key(config.seed), REFRESH_STREAM)

  dropout_key = jax.random.fold_in(jax.random.key(config.seed), DROPOUT_STREAM)
  replicated = sharding.replicated_sharding(mesh)
  steps: dict[int, Callable] = {}

  def step_fn(stage: int) -> Callable:
    if stage not in steps:
      fn = make_train_step(method, config, tx, stage=stage, steps_per_epoch=steps_per_epoch, dropout_key=dropout_key)
      steps[stage] = jax.jit(fn, donate_argnums=0, out_shardings=(jax.tree.map(lambda _: replicated, state),
                                                                 None))
    return steps[stage]

  predict = jax.jit(method.predict)  # One wrapper for the whole run: each bucket length compiles once.
  reset_opt = jax.jit(tx.init, out_shardings=jax.tree.map(lambda _: replicated, state.opt_state))
  eval_metrics: dict[str, float] = {}
  pending: list[tuple[int, dict]] = []  # (first step, device metrics) not yet checked for finiteness.
  last_saved = start_step if restored is not None else None
  log_every = max(1, config.log_every_steps)

  def flush_pending() -> None:
    """Fetches pending metrics, stops on a non-finite loss, logs the means."""
    nonlocal pending
    if not pending:
      return
    first = pending[0][0]
    acc = None
    for _, m in pending:
      acc = _accumulate(acc, m)
    last = pending[-1][0]
    pending = []
    means = _reduce_aux(jax.device_get(acc))
    if not math.isfinite(means["loss"]):
      raise errors.NonFiniteLossError(
          f"steps {first}-{last}", f"the training loss is not finite; the last good checkpoint is step "
          f"{last_saved if last_saved is not None else 'none'} in {checkpointer.directory}")
    writer.write_scalars(last + 1, {"epoch": last // steps_per_epoch, "train/input_wait_fraction":
                                    input_clock.window_fraction(), **{f"train/{k}": v for k, v in means.items()}})

  def position(step: int) -> dict[str, Any]:
    epoch, batch_in_epoch = divmod(step, steps_per_epoch)
    return {"method": method.name, "epoch": epoch, "batch_in_epoch": batch_in_epoch}

  def save(step: int) -> None:
    nonlocal last_saved
    flush_pending()
    with input_clock.excluded():
      checkpointer.save(step, state, position(step))
    last_saved = step

  def refresh(epoch: int) -> TrainState:
    """The method's state refreshed before `epoch` (HAAN: re-clustered pseudo-labels), replicated."""
    method_state, info = method.refresh(state.params, state.method_state, refresh_data,
                                        jax.random.fold_in(refresh_key, epoch))
    writer.write_scalars(step, {"epoch": epoch, **{f"refresh/{k}": v for k, v in info.items()}})
    return state.replace(method_state=jax.device_put(method_state, replicated))

  def evaluate_and_select(epoch: int) -> dict[str, float]:
    """Test scores of the current state; with checkpoint selection, also offers the state to `best`."""
    flush_pending()
    scores = evaluate(method, state.params, data, mesh, predict)
    writer.write_scalars(step, {"epoch": epoch, **{f"eval/{k}": v for k, v in scores.items()}})
    if best is not None:
      if best.mode == model_selection.TEST:
        chosen = scores
      else:
        chosen = evaluate_validation(method, state.params, data, mesh, predict)
      improved = best.consider(step, state, chosen, position(step))
      writer.write_scalars(step, {f"{best.mode}/{k}": v for k, v in chosen.items()} | {"selected": float(improved)})
    return scores

  input_clock = InputClock()
  bar = metric_writer_lib.progress_bar(total_steps, start_step, enabled=primary and config.get("progress", True))
  step = start_step
  start_epoch, start_batch = divmod(start_step, steps_per_epoch)
  try:
    with _StopRequest() as stop:
      # One input stream for the whole run: its prefetch runs across epoch boundaries.
      stream = train_pipeline.global_stream(mesh, start_epoch, start_batch, config.num_epochs - start_epoch)
      for epoch, batch_index, batch in input_clock.timed(stream):
        stage = method.stage_for_epoch(epoch)
        if batch_index == 0 and epoch > 0 and stage != method.stage_for_epoch(epoch - 1):
          # ATBA creates a fresh optimizer at its stage switch (spec §8.2): reset Adam's moments.
          state = state.replace(opt_state=reset_opt(state.params))
        if batch_index == 0 and refresh_data is not None and method.refresh_due(epoch):
          with input_clock.excluded():
            state = refresh(epoch)
        state, metrics = step_fn(stage)(state, batch)
        pending.append((step, metrics))
        step += 1
        bar.update(1)
        if step % log_every == 0:
          flush_pending()
        if batch_index + 1 == steps_per_epoch and ((epoch + 1) % config.eval_every_epochs == 0
                                                    or step == total_steps):
          # Before the save of the same step: a run killed in between re-runs the epoch and evaluates again.
          with input_clock.excluded():
            eval_metrics = evaluate_and_select(epoch)
        if step % config.checkpoint_every_steps == 0 or stop.requested or step == stop_after_steps:
          save(step)
        if stop.requested or step == stop_after_steps:
          return TrainResult(state=state, eval_metrics=eval_metrics, steps=step)
      if last_saved != step:
        save(step)
      if best is not None:
        # The run's result is the selected state's test score, not the last state's.
        if best.best_step == step and eval_metrics:
          eval_metrics = dict(eval_metrics, selected_step=step)  # The last state is the selected one: scored.
        else:
          selected = best.restore(abstract_state, expect={"method": method.name})
          if selected is not None:
            eval_metrics = dict(evaluate(method, selected.state.params, data, mesh, predict),
                                selected_step=selected.step)
        if "selected_step" in eval_metrics:
          writer.write_scalars(step, {f"selected/{k}": v for k, v in eval_metrics.items()})
  finally:
    bar.close()
    checkpointer.close()
    if best is not None:
      best.close()
    writer.close()
  if not eval_metrics:
    eval_metrics = evaluate(method, state.params, data, mesh, predict)
  return TrainResult(state=state, eval_metrics=eval_metrics, steps=step)


def predict_batches(method: base.Method, params: Any, pipeline, mesh,
                    predict: Callable | None = None) -> Iterator[tuple[dict, dict]]:
  """Yields `(host batch, host predictions)` of the whole global batch for every eval batch of `pipeline`, in order.

  With several processes each host reads its rows, and the global batch and predictions are gathered onto every
  process (`sharding.to_host`), so every host scores the whole split and gets the same numbers.
  `predict` is `jax.jit(method.predict)`; pass the same one to every call of a run, since each new jit wrapper
  compiles every bucket length again.
  """
  predict = predict or jax.jit(method.predict)
  gather = jax.process_count() > 1
  for batch in pipeline.epoch_batches(0):
    global_batch = sharding.shard_batch(batch, mesh)
    outputs = predict(params, global_batch)
    # One process already holds its (whole) host batch: only the predictions come back from the device.
    yield sharding.to_host((global_batch, outputs)) if gather else (batch, jax.device_get(outputs))


def evaluate(method: base.Method, params: Any, data, mesh, predict: Callable | None = None) -> dict[str, float]:
  """Scores `params` on the test split; on synthetic data also the identifiability of the latents (MCC).

  `predict`: as in `predict_batches`.
  """
  started = time.perf_counter()
  predict = predict or jax.jit(method.predict)
  test_predictions = list(predict_batches(method, params, data.test_pipeline, mesh, predict))
  scores = data.score(test_predictions)
  if data.has_true_latents and set(latent_probe.OUTPUT_KEYS) <= set(test_predictions[0][1]):
    train_latents = latent_probe.collect(predict_batches(method, params, data.train_eval_pipeline, mesh, predict),
                                         data.train_eval_pipeline, data.data_dir)
    test_latents = latent_probe.collect(test_predictions, data.test_pipeline, data.data_dir)
    scores.update(latent_probe.probe_scores(train_latents, test_latents))
  scores["seconds"] = time.perf_counter() - started
  return scores



def evaluate_validation(method: base.Method, params: Any, data, mesh,
                        predict: Callable | None = None) -> dict[str, float]:
  """Scores `params` on the held-out validation videos (data with `validation_pipeline`)."""
  return data.score_validation(list(predict_batches(method, params, data.validation_pipeline, mesh, predict)))


def restore_trained(config: ml_collections.ConfigDict, workdir: str):
  """The data, method, mesh and trained params of `workdir`, for eval and predict.

  The params are the selected checkpoint's (``<workdir>/best_checkpoint``) when the config selects checkpoints
  (hal_jax.model_selection), else the newest checkpoint's.

  Returns:
    (data, method, params, mesh, step).
  Raises:
    CheckpointError: the workdir holds no readable checkpoint of this config.
  """
  workdir_lib.validate_config(config)
  data = load_data(config, workdir)
  method = base.make_method(config, data.label_map.names)
  mesh = sharding.make_mesh()
  tx = optim.make_optimizer(config)
  example = sharding.shard_batch(data.test_pipeline.batch(0, 0), mesh)
  method_state = method.init_state(method.refresh_data(data.train)) if base.has_state(method) else None
  _, abstract_state = init_state(method, tx, config, example, mesh, method_state)
  expect = {"method": method.name}
  best = model_selection.open_best(config, workdir) if os.path.isdir(
      os.path.join(workdir, model_selection.DIRECTORY)) else None
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoints_to_keep)
  try:
    restored = best.restore(abstract_state, expect=expect) if best is not None else None
    if restored is None:
      restored = checkpointer.restore_latest(abstract_state, expect=expect)
  finally:
    checkpointer.close()
    if best is not None:
      best.close()
  if restored is None:
    raise errors.CheckpointError(os.path.join(workdir, "checkpoints"), "no checkpoint to evaluate; train first")
  return data, method, restored.state.params, mesh, restored.step
