"""End-to-end tests of the training loop on the tiny synthetic preset: determinism, exact resume, devices, NaN stop."""

import os

import jax
import numpy as np
import pytest

from configs import atba as atba_config
from hal_jax import checkpoint
from hal_jax import errors
from hal_jax import inference
from hal_jax import metric_writer
from hal_jax import sharding
from hal_jax import train

pytestmark = pytest.mark.slow


def _config(**overrides):
  config = atba_config.get_config("test")
  with config.unlocked():
    config.progress = False
    config.tensorboard = False
    config.update(overrides)
  return config


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  return workdir, train.train_and_evaluate(_config(), workdir)


def test_trains_and_evaluates(uninterrupted):
  workdir, result = uninterrupted
  config = _config()
  assert result.steps == config.num_epochs * 3  # 12 videos, batch 4.
  for key in ("mof", "mof_bg", "edit", "f1@50", "iou", "iod", "iou_tasl", "iod_tasl"):
    assert np.isfinite(result.eval_metrics[key]), key
  records = metric_writer.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert any("eval/mof" in r for r in records)
  assert any("train/frame_ce" in r for r in records), "stage 2 (pseudo-labels) never ran"
  assert os.path.exists(os.path.join(workdir, "config.json"))


def test_same_seed_gives_bitwise_equal_params(uninterrupted, tmp_path):
  _, first = uninterrupted
  second = train.train_and_evaluate(_config(), str(tmp_path))
  for a, b in zip(_leaves(first.state), _leaves(second.state)):
    np.testing.assert_array_equal(a, b)


def test_other_seed_gives_other_params(uninterrupted, tmp_path):
  _, first = uninterrupted
  other = train.train_and_evaluate(_config(seed=1, num_epochs=1), str(tmp_path))
  assert any(a.shape != b.shape or not np.array_equal(a, b)
             for a, b in zip(_leaves(first.state), _leaves(other.state)))


@pytest.mark.parametrize("stop_at", [5, 6])  # Mid-epoch in stage 1, and right at the stage switch (epoch 2 start).
def test_killed_and_resumed_run_ends_bitwise_equal(uninterrupted, tmp_path, stop_at):
  _, full = uninterrupted
  workdir = str(tmp_path)
  partial = train.train_and_evaluate(_config(), workdir, stop_after_steps=stop_at)
  assert partial.steps == stop_at
  resumed = train.train_and_evaluate(_config(), workdir)
  assert resumed.steps == full.steps
  for a, b in zip(_leaves(full.state), _leaves(resumed.state)):
    np.testing.assert_array_equal(a, b)


def test_one_device_and_four_devices_agree(uninterrupted, tmp_path):
  _, four = uninterrupted
  assert jax.device_count() == 4
  one = train.train_and_evaluate(_config(), str(tmp_path), mesh=sharding.make_mesh(jax.devices()[:1]))
  for a, b in zip(_leaves(four.state), _leaves(one.state)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path)
  # A learning rate this large sends the parameters to inf within a few steps.
  config = _config(learning_rate=1e30, checkpoint_every_steps=1, log_every_steps=1)
  with pytest.raises(errors.NonFiniteLossError, match="not finite") as info:
    train.train_and_evaluate(config, workdir)
  assert info.value.where.startswith("steps ")
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  steps = ckpt.all_steps()
  ckpt.close()
  assert steps, "no checkpoint was kept"
  # The newest checkpoint holds finite parameters.
  data_method = inference.restore_trained(config, workdir)
  params = data_method[2]
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))


def test_batch_not_divisible_by_devices_is_a_config_error(tmp_path):
  with pytest.raises(errors.ConfigError, match="batch_size"):
    train.train_and_evaluate(_config(batch_size=6), str(tmp_path))


def test_input_clock_measures_the_share_of_time_spent_waiting_for_batches():
  import time  # pylint: disable=import-outside-toplevel

  def slow_batches():
    for i in range(3):
      time.sleep(0.05)  # The pipeline starves the loop.
      yield i

  clock = train.InputClock()
  for _ in clock.timed(slow_batches()):
    with clock.excluded():
      time.sleep(0.05)  # Evaluation-like work: neither waiting nor training.
  assert clock.window_fraction() > 0.8
  for _ in clock.timed(range(3)):
    time.sleep(0.05)  # A fast pipeline: the loop only computes.
  assert clock.window_fraction() < 0.2


def test_input_wait_is_logged(uninterrupted):
  workdir, _ = uninterrupted
  records = metric_writer.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  waits = [r["train/input_wait_fraction"] for r in records if "train/loss" in r]
  assert waits and all(0.0 <= w <= 1.0 for w in waits)


def test_a_per_step_schedule_gets_the_fractional_epoch():
  """A method with `per_step_schedule` sees step / steps_per_epoch; others the integer epoch."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from hal_jax import experiment  # pylint: disable=g-import-not-at-top

  @dataclasses.dataclass(frozen=True)
  class Stub:
    per_step_schedule: bool
    name: str = "stub"

    def loss(self, params, batch, rng, stage):
      del batch, rng, stage
      return jnp.sum(params["w"] ** 2), {}

    def learning_rate(self, epoch):
      return jnp.asarray(epoch, jnp.float32)

  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
  params = {"w": jnp.ones(2)}
  state = experiment.TrainState(step=jnp.asarray(5, jnp.int32), params=params, opt_state=tx.init(params))
  for per_step, expected in ((True, 1.25), (False, 1.0)):
    step = train.make_train_step(Stub(per_step), tx, stage=0, steps_per_epoch=4, dropout_key=jax.random.key(0))
    _, metrics = jax.jit(step)(state, {})
    assert float(metrics["learning_rate"][0]) == expected
