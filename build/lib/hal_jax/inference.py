"""Prediction and scoring of trained parameters: in the training loop (test and validation scores) and after it
(``--mode=eval`` / ``--mode=predict`` restore a workdir's parameters with `restore_trained`).

Scoring prediction *files* from the command line is `hal_jax.evaluate`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections

from hal_jax import checkpoint as checkpoint_lib
from hal_jax import errors
from hal_jax import experiment as experiment_lib
from hal_jax import latent_probe
from hal_jax import model_selection
from hal_jax import sharding
from hal_jax.methods import base


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


def evaluate_test(method: base.Method, params: Any, data, mesh, predict: Callable | None = None) -> dict[str, float]:
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
  experiment = experiment_lib.build(config, workdir)
  expect = {"method": experiment.method.name}
  best = model_selection.open_best(config, workdir) if os.path.isdir(
      os.path.join(workdir, model_selection.DIRECTORY)) else None
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoints_to_keep)
  try:
    restored = best.restore(experiment.abstract_state, expect=expect) if best is not None else None
    if restored is None:
      restored = checkpointer.restore_latest(experiment.abstract_state, expect=expect)
  finally:
    checkpointer.close()
    if best is not None:
      best.close()
  if restored is None:
    raise errors.CheckpointError(os.path.join(workdir, "checkpoints"), "no checkpoint to evaluate; train first")
  return experiment.data, experiment.method, restored.state.params, experiment.mesh, restored.step
