"""The one training loop of hal_jax, for every method (see `hal_jax.methods.base.Method`).

`train_and_evaluate(config, workdir)` reads top to bottom:
  1. builds the experiment (`hal_jax.experiment.build`): checks the config, reads and validates the data, builds the
     method and initialises its parameters shape-first, replicated on a ('data',) mesh;
  2. restores the newest readable checkpoint of the workdir, if any (params, optimizer state, step; the data
     position follows from the step because every epoch has the same number of batches);
  3. runs one jitted, state-donating train step per batch (one compile per training stage), evaluating every
     `config.eval_every_epochs` epochs (`hal_jax.inference`) and saving every `config.checkpoint_every_steps` steps;
     on SIGTERM/SIGINT it saves and returns, at a step that every process of a multi-process job agrees on
     (`_StopRequest`);
  4. stops with `NonFiniteLossError` on a non-finite loss, naming the steps, before the next save, so the last
     checkpoint on disk is the last good one.

The loop's state is explicit: the `TrainState` (what training changes) and a `_Progress` (the step, the metrics not
yet logged, the last save, the last scores), passed to each helper together with the `_Run` it works in.

Randomness (`hal_jax.experiment`): the dropout key of a step is `fold_in(dropout_key, step)`, the refresh key of an
epoch `fold_in(refresh_key, epoch)`; the data order and temporal sampling are pure functions of `(seed, epoch)`. So a
run killed anywhere and resumed ends bitwise equal to an uninterrupted one on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from hal_jax import checkpoint as checkpoint_lib
from hal_jax import errors
from hal_jax import experiment as experiment_lib
from hal_jax import inference
from hal_jax import metric_writer as metric_writer_lib
from hal_jax import model_selection
from hal_jax import sharding
from hal_jax.experiment import TrainState
from hal_jax.methods import base


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
  # A logging window may span a stage switch, after which a method logs more terms (e.g. pseudo-label losses).
  merged = dict(acc)
  for k, v in new.items():
    merged[k] = (acc[k][0] + v[0], acc[k][1] + v[1]) if k in acc else v
  return merged


def make_train_step(method: base.Method, tx: optax.GradientTransformation, *, stage: int, steps_per_epoch: int,
                    dropout_key: jax.Array) -> Callable[[TrainState, Any], tuple]:
  """The (unjitted) train step of one stage: loss, gradients, the method's learning rate and the update."""

  extra = (lambda state: {"state": state.method_state}) if base.has_state(method) else (lambda state: {})
  # The schedule's epoch: fractional for a method that changes its rate within an epoch (hal_jax.methods.base).
  epoch_of = ((lambda step: step.astype(jnp.float32) / steps_per_epoch) if getattr(method, "per_step_schedule", False)
              else (lambda step: step // steps_per_epoch))

  def train_step(state: TrainState, batch: Mapping[str, jax.Array]):
    rng = jax.random.fold_in(dropout_key, state.step)
    loss_fn = functools.partial(method.loss, batch=batch, rng=rng, stage=stage, **extra(state))
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    learning_rate = method.learning_rate(epoch_of(state.step))
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
  """Turns SIGTERM/SIGINT into a request to save a checkpoint and stop, at a step that every process agrees on.

  One process stops at the next step boundary. With several, a signal often reaches one process only (a preemption
  notice for one host, a `kill`), yet all must stop at the same step: each step's gradient all-reduce and the
  checkpoint save are collective, so a process that stopped alone would leave the others waiting in a collective
  until the coordination service's heartbeat timeout. So the processes agree: every `every`-th step (the loop's
  logging steps, where it already waits for the device to fetch the metrics, so no extra host-device
  synchronisation is added), each contributes its flag to one all-gather of a scalar per process
  (`multihost_utils.process_allgather`) and all of them stop if any flag is set. A stop lands at most `every` steps
  after the signal.

  Why not JAX's preemption sync point (`multihost_utils.reached_preemption_sync_point`): it learns of SIGTERM
  through a C++ handler of its own, which the Python handler that SIGINT and one-process runs need would replace
  (a signal has one handler), and it does not cover SIGINT.
  """

  def __init__(self, every: int):
    self.requested = False
    self._every = max(1, every)
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

  def due(self, step: int) -> bool:
    """Whether to save and stop after `step` (every process calls this after every step and gets the same answer)."""
    if jax.process_count() == 1:
      return self.requested
    if step % self._every:
      return False
    flags = multihost_utils.process_allgather(np.int32(self.requested))  # [processes], the same on each.
    if not flags.any():
      return False
    logging.warning("Stopping at step %d: a stop (SIGTERM/SIGINT) was requested on process(es) %s", step,
                    np.flatnonzero(flags).tolist())
    return True

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _Compiled:
  """The run's jitted functions: one train step per stage (compiled on first use), prediction, optimizer reset."""

  def __init__(self, experiment: experiment_lib.Experiment, steps_per_epoch: int):
    self._experiment = experiment
    self._steps_per_epoch = steps_per_epoch
    self._dropout_key = experiment_lib.stream_key(experiment.config, experiment_lib.DROPOUT_STREAM)
    self._replicated = sharding.replicated_sharding(experiment.mesh)
    self._steps: dict[int, Callable] = {}
    self.predict = jax.jit(experiment.method.predict)  # One wrapper per run: each bucket length compiles once.
    self.reset_opt = jax.jit(experiment.tx.init, out_shardings=self._replicate_like(experiment.state.opt_state))

  def _replicate_like(self, tree: Any) -> Any:
    return jax.tree.map(lambda _: self._replicated, tree)

  def step(self, stage: int) -> Callable:
    """The jitted, state-donating train step of `stage`."""
    if stage not in self._steps:
      e = self._experiment
      fn = make_train_step(e.method, e.tx, stage=stage, steps_per_epoch=self._steps_per_epoch,
                           dropout_key=self._dropout_key)
      self._steps[stage] = jax.jit(fn, donate_argnums=0, out_shardings=(self._replicate_like(e.state), None))
    return self._steps[stage]


@dataclasses.dataclass(frozen=True)
class _Run:
  """What the loop works with, fixed for the run: the experiment, its outputs (writer, checkpoints, best state),
  the compiled functions and the input clock."""
  experiment: experiment_lib.Experiment
  writer: metric_writer_lib.MetricWriter
  checkpointer: checkpoint_lib.Checkpointer
  best: model_selection.BestCheckpoint | None
  compiled: _Compiled
  clock: InputClock
  steps_per_epoch: int
  total_steps: int

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.experiment.config

  @property
  def method(self) -> base.Method:
    return self.experiment.method

  def position(self, step: int) -> dict[str, Any]:
    """The checkpoint metadata of `step`: the method and the data position."""
    epoch, batch_in_epoch = divmod(step, self.steps_per_epoch)
    return {"method": self.method.name, "epoch": epoch, "batch_in_epoch": batch_in_epoch}

  def evaluate(self, params: Any) -> dict[str, float]:
    e = self.experiment
    return inference.evaluate_test(e.method, params, e.data, e.mesh, self.compiled.predict)


@dataclasses.dataclass
class _Progress:
  """What the loop changes besides the train state.

  Attributes:
    step: the global step (the number of train steps done).
    last_saved: the step of the newest checkpoint this run wrote or resumed from (None: none yet).
    pending: `(step, device metrics)` not yet checked for finiteness and logged.
    eval_metrics: the scores of the last evaluation (empty before the first).
  """
  step: int
  last_saved: int | None
  pending: list[tuple[int, dict]] = dataclasses.field(default_factory=list)
  eval_metrics: dict[str, float] = dataclasses.field(default_factory=dict)


def _flush_pending(run: _Run, progress: _Progress) -> None:
  """Fetches the pending metrics, stops on a non-finite loss, logs the means."""
  if not progress.pending:
    return
  first, last = progress.pending[0][0], progress.pending[-1][0]
  acc = None
  for _, metrics in progress.pending:
    acc = _accumulate(acc, metrics)
  progress.pending = []
  means = _reduce_aux(jax.device_get(acc))
  if not math.isfinite(means["loss"]):
    good = progress.last_saved if progress.last_saved is not None else "none"
    raise errors.NonFiniteLossError(f"steps {first}-{last}", f"the training loss is not finite; the last good "
                                    f"checkpoint is step {good} in {run.checkpointer.directory}")
  run.writer.write_scalars(last + 1, {"epoch": last // run.steps_per_epoch,
                                      "train/input_wait_fraction": run.clock.window_fraction(),
                                      **{f"train/{k}": v for k, v in means.items()}})


def _save(run: _Run, progress: _Progress, state: TrainState) -> None:
  _flush_pending(run, progress)
  with run.clock.excluded():
    run.checkpointer.save(progress.step, state, run.position(progress.step))
  progress.last_saved = progress.step


def _start_epoch(run: _Run, state: TrainState, epoch: int, step: int) -> TrainState:
  """The state at the start of `epoch`: a fresh optimizer at a stage switch, the method's refreshed state."""
  method = run.method
  if epoch > 0 and method.stage_for_epoch(epoch) != method.stage_for_epoch(epoch - 1):
    # A method that trains in stages starts each one with a fresh optimizer (`base.Method`): reset Adam's moments.
    state = state.replace(opt_state=run.compiled.reset_opt(state.params))
  if run.experiment.refresh_data is not None and method.refresh_due(epoch):
    with run.clock.excluded():
      state = _refresh(run, state, epoch, step)
  return state


def _refresh(run: _Run, state: TrainState, epoch: int, step: int) -> TrainState:
  """The method's state refreshed before `epoch` (e.g. re-clustered pseudo-labels), replicated."""
  refresh_key = experiment_lib.stream_key(run.config, experiment_lib.REFRESH_STREAM)
  method_state, info = run.method.refresh(state.params, state.method_state, run.experiment.refresh_data,
                                          jax.random.fold_in(refresh_key, epoch))
  run.writer.write_scalars(step, {"epoch": epoch, **{f"refresh/{k}": v for k, v in info.items()}})
  replicated = sharding.replicated_sharding(run.experiment.mesh)
  return state.replace(method_state=jax.device_put(method_state, replicated))


def _evaluate_and_select(run: _Run, progress: _Progress, state: TrainState, epoch: int) -> dict[str, float]:
  """Test scores of `state`; with checkpoint selection, also offers the state to the best checkpoint."""
  _flush_pending(run, progress)
  step = progress.step
  scores = run.evaluate(state.params)
  run.writer.write_scalars(step, {"epoch": epoch, **{f"eval/{k}": v for k, v in scores.items()}})
  best = run.best
  if best is not None:
    if best.mode == model_selection.TEST:
      chosen = scores
    else:
      e = run.experiment
      chosen = inference.evaluate_validation(e.method, state.params, e.data, e.mesh, run.compiled.predict)
    improved = best.consider(step, state, chosen, run.position(step))
    run.writer.write_scalars(step, {f"{best.mode}/{k}": v for k, v in chosen.items()} | {"selected": float(improved)})
  return scores


def _evaluation_due(run: _Run, epoch: int, batch_index: int, step: int) -> bool:
  """Whether the epoch ends here with an evaluation (every `eval_every_epochs` epochs and after the last step)."""
  last_batch = batch_index + 1 == run.steps_per_epoch
  return last_batch and ((epoch + 1) % run.config.eval_every_epochs == 0 or step == run.total_steps)


def _selected_result(run: _Run, progress: _Progress) -> dict[str, float]:
  """The run's result with checkpoint selection: the selected state's test scores, not the last state's."""
  if run.best.best_step == progress.step and progress.eval_metrics:
    return dict(progress.eval_metrics, selected_step=progress.step)  # The last state is the selected one: scored.
  selected = run.best.restore(run.experiment.abstract_state, expect={"method": run.method.name})
  if selected is None:
    return progress.eval_metrics
  return dict(run.evaluate(selected.state.params), selected_step=selected.step)


def _train(run: _Run, state: TrainState, progress: _Progress, stop: _StopRequest, stop_after_steps: int | None,
           bar) -> tuple[TrainState, bool]:
  """Trains from `progress.step` to the end of the run or a stop; returns the state and whether it stopped early."""
  start_epoch, start_batch = divmod(progress.step, run.steps_per_epoch)
  log_every = max(1, run.config.log_every_steps)
  # One input stream for the whole run: its prefetch runs across epoch boundaries.
  stream = run.experiment.data.train_pipeline.global_stream(run.experiment.mesh, start_epoch, start_batch,
                                                            run.config.num_epochs - start_epoch)
  for epoch, batch_index, batch in run.clock.timed(stream):
    if batch_index == 0:
      state = _start_epoch(run, state, epoch, progress.step)
    state, metrics = run.compiled.step(run.method.stage_for_epoch(epoch))(state, batch)
    progress.pending.append((progress.step, metrics))
    progress.step += 1
    bar.update(1)
    if progress.step % log_every == 0:
      _flush_pending(run, progress)
    if _evaluation_due(run, epoch, batch_index, progress.step):
      # Before the save of the same step: a run killed in between re-runs the epoch and evaluates again.
      with run.clock.excluded():
        progress.eval_metrics = _evaluate_and_select(run, progress, state, epoch)
    stopping = stop.due(progress.step) or progress.step == stop_after_steps  # The same on every process.
    if progress.step % run.config.checkpoint_every_steps == 0 or stopping:
      _save(run, progress, state)
    if stopping:
      return state, True
  if progress.last_saved != progress.step:
    _save(run, progress, state)
  return state, False


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, stop_after_steps: int | None = None,
                       mesh: jax.sharding.Mesh | None = None, start_over: bool = False) -> TrainResult:
  """Trains `config`'s method in `workdir` (resuming if it holds checkpoints) and evaluates it.

  Args:
    config: a locked experiment config (see configs/).
    workdir: the run directory (checkpoints, metrics.jsonl, config.json, predictions).
    stop_after_steps: stop (after saving) once the global step reaches this value; used by tests of resumption.
    mesh: the ('data',) mesh to train on (default: every device).
    start_over: train from step 0 when the workdir holds checkpoints but none of them restores (they are set aside
      at the first save); without it such a run stops with `CheckpointError` (hal_jax.checkpoint).
  """
  experiment = experiment_lib.build(config, workdir, mesh)  # Checks the config and every data file first.
  primary = jax.process_index() == 0
  best = model_selection.open_best(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoints_to_keep)
  # Restored before anything is written: a workdir whose checkpoints do not restore is left as it was (issue 19).
  fallbacks = []
  restored = checkpointer.restore_latest(experiment.abstract_state, expect={"method": experiment.method.name},
                                         on_fallback=fallbacks.append, start_over=start_over)
  writer = metric_writer_lib.MetricWriter(workdir, enabled=primary, tensorboard=config.get("tensorboard", True))
  writer.write_config(workdir, config.to_dict())
  for message in fallbacks:
    writer.write_scalars(0, {"warning": message})
  state = experiment.state if restored is None else restored.state
  if restored is not None:
    logging.info("Resumed from step %d", restored.step)
  if best is not None:
    best.resume()
  steps_per_epoch = experiment.data.train_pipeline.num_batches_per_epoch
  run = _Run(experiment=experiment, writer=writer, checkpointer=checkpointer, best=best,
             compiled=_Compiled(experiment, steps_per_epoch), clock=InputClock(), steps_per_epoch=steps_per_epoch,
             total_steps=config.num_epochs * steps_per_epoch)
  progress = _Progress(step=int(state.step), last_saved=None if restored is None else restored.step)
  bar = metric_writer_lib.progress_bar(run.total_steps, progress.step,
                                       enabled=primary and config.get("progress", True))
  try:
    with _StopRequest(config.log_every_steps) as stop:
      state, stopped = _train(run, state, progress, stop, stop_after_steps, bar)
      if stopped:
        return TrainResult(state=state, eval_metrics=progress.eval_metrics, steps=progress.step)
      if best is not None:
        progress.eval_metrics = _selected_result(run, progress)
        if "selected_step" in progress.eval_metrics:
          writer.write_scalars(progress.step, {f"selected/{k}": v for k, v in progress.eval_metrics.items()})
  finally:
    bar.close()
    checkpointer.close()
    if best is not None:
      best.close()
    writer.close()
  eval_metrics = progress.eval_metrics or run.evaluate(state.params)
  return TrainResult(state=state, eval_metrics=eval_metrics, steps=progress.step)
