"""HAAN through the one training loop: concept refreshes, their checkpointed state, exact resume, checkpoint
selection on the held-out validation videos, and predictions that score through the evaluate CLI."""

import os

import jax
import numpy as np
import pytest

from configs import haan as haan_config
from hal_jax import evaluate
from hal_jax import inference
from hal_jax.tasks import localization as localization_task
from hal_jax import metric_writer
from hal_jax import model_selection
from hal_jax import train

pytestmark = pytest.mark.slow


def _config(**overrides):
  config = haan_config.get_config("test")
  with config.unlocked():
    config.progress = False
    config.tensorboard = False
    config.num_epochs = 3
    config.recluster_every = 2  # Refreshes before epochs 0 and 2.
    config.checkpoint_every_steps = 1
    config.update(overrides)
  return config


def _records(workdir):
  return metric_writer.read_metrics(os.path.join(workdir, "metrics.jsonl"))


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("haan_full"))
  return workdir, train.train_and_evaluate(_config(), workdir)


def test_refreshes_before_the_due_epochs_and_fills_the_pseudo_labels(uninterrupted):
  workdir, result = uninterrupted
  refreshes = [r for r in _records(workdir) if "refresh/kmeans_iterations" in r]
  steps_per_epoch = result.steps // 3
  assert [(r["epoch"], r["step"]) for r in refreshes] == [(0, 0), (2, 2 * steps_per_epoch)]
  labels = np.asarray(result.state.method_state.pseudo_labels)
  num_concepts = _config().num_concepts
  data = localization_task.load(_config(), workdir)
  lengths = np.array([len(v.features) for v in data.train.videos])
  valid = np.arange(labels.shape[1])[None, :] < lengths[:, None]
  assert labels.shape[0] == len(data.train.videos)  # Only the videos left after the validation hold-out.
  assert np.all((labels[valid] >= 0) & (labels[valid] < num_concepts))
  assert np.all(labels[~valid] == num_concepts)


def test_train_losses_are_logged(uninterrupted):
  workdir, _ = uninterrupted
  train_records = [r for r in _records(workdir) if "train/loss" in r]
  assert train_records and all(np.isfinite(r["train/loss"]) for r in train_records)
  assert all({"train/mil", "train/pseudo", "train/concept", "train/coarse"} <= set(r) for r in train_records)


@pytest.mark.parametrize("stop_at", [1, 4])  # Mid refresh period; right at the epoch that refreshes next.
def test_killed_and_resumed_run_ends_bitwise_equal(uninterrupted, tmp_path, stop_at):
  _, full = uninterrupted
  workdir = str(tmp_path)
  train.train_and_evaluate(_config(), workdir, stop_after_steps=stop_at)
  resumed = train.train_and_evaluate(_config(), workdir)
  for a, b in zip(_leaves(full.state.params), _leaves(resumed.state.params), strict=True):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(_leaves(full.state.method_state), _leaves(resumed.state.method_state), strict=True):
    np.testing.assert_array_equal(a, b)
  assert resumed.eval_metrics["average_map"] == full.eval_metrics["average_map"]


def test_selects_the_checkpoint_with_the_best_validation_score(uninterrupted):
  workdir, result = uninterrupted
  records = _records(workdir)
  validation = [(r["step"], r["validation/average_map"]) for r in records if "validation/average_map" in r]
  assert len(validation) == 3  # One evaluation per epoch; no test score in the choice.
  best_step = max(validation, key=lambda pair: (pair[1], -pair[0]))[0]  # Ties keep the earlier state.
  assert result.eval_metrics["selected_step"] == best_step
  assert os.path.isdir(os.path.join(workdir, model_selection.DIRECTORY, str(best_step)))
  # The reported score is the selected state's test score.
  test_at_best = next(r["eval/average_map"] for r in records if r["step"] == best_step and "eval/average_map" in r)
  assert result.eval_metrics["average_map"] == test_at_best
  assert {"coarse_average_map", "map@0.10", "map@0.50"} <= set(result.eval_metrics)


def test_predict_writes_detections_that_score_through_the_evaluate_cli(uninterrupted, tmp_path):
  workdir, result = uninterrupted
  data, method, params, mesh, step = inference.restore_trained(_config(), workdir)
  assert step == result.eval_metrics["selected_step"]  # eval/predict use the selected checkpoint too.
  out_dir = str(tmp_path / "predictions")
  assert data.write_predictions(inference.predict_batches(method, params, data.test_pipeline, mesh), out_dir) == len(
      data.test.videos)
  # drop_unknown_labels: the tiny test split lacks some classes that the model predicts.
  cli_scores = evaluate.evaluate_localization_files(
      os.path.join(data.data_dir, "gt.json"), os.path.join(out_dir, localization_task.DETECTIONS_FILE),
      subset="test", tiou_thresholds=data.tiou_thresholds, drop_unknown_labels=True)
  assert cli_scores["average_map"] == pytest.approx(result.eval_metrics["average_map"], abs=1e-9)


def test_last_state_is_reported_without_selection(tmp_path):
  result = train.train_and_evaluate(_config(select_checkpoint="last", num_epochs=1), str(tmp_path))
  assert "selected_step" not in result.eval_metrics
  assert not os.path.exists(os.path.join(tmp_path, model_selection.DIRECTORY))
