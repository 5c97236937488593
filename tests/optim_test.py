"""Tests for the optimizer and ATBA's learning-rate schedule (spec hal_atba.md §8.3 check values)."""

import numpy as np
import pytest

from hal_jax import optim
from hal_jax.methods import atba


@pytest.mark.parametrize("epoch,expected", [
    (0, 0.01), (9, 1.0), (39, 1.0), (40, 0.1), (45, 0.6), (49, 1.0), (50, 1.0), (225, 0.505), (399, 0.0100),
])
def test_spec_check_values_for_400_epochs(epoch, expected):
  lr = atba.epoch_learning_rate(epoch, base_lr=1.0, warmup_epochs=10, stage_epoch=40, num_epochs=400)
  np.testing.assert_allclose(float(lr), expected, atol=2e-4)


def test_scales_with_base_rate():
  lr = atba.epoch_learning_rate(45, base_lr=5e-4, warmup_epochs=10, stage_epoch=40, num_epochs=400)
  np.testing.assert_allclose(float(lr), 0.6 * 5e-4, rtol=1e-5)


def test_coupled_decay_is_adam_on_gradient_plus_l2():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  params = {"w": jnp.array([1.0, -2.0])}
  grads = {"w": jnp.array([0.5, 0.0])}
  for coupled, reference in ((True, optax.chain(optax.add_decayed_weights(0.1), optax.adam(0.01))),
                             (False, optax.adamw(0.01, weight_decay=0.1))):
    config = ml_collections.ConfigDict(dict(learning_rate=0.01, weight_decay=0.1, coupled_weight_decay=coupled))
    tx = optim.make_optimizer(config)
    updates, _ = tx.update(grads, tx.init(params), params)
    expected, _ = reference.update(grads, reference.init(params), params)
    np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-5)
    if coupled:
      # The decay goes through Adam's normalisation: the zero-gradient entry moves by a full step, lr.
      np.testing.assert_allclose(float(updates["w"][1]), 0.01, rtol=1e-4)
    else:
      # Decoupled: it only decays, by lr · wd · w.
      np.testing.assert_allclose(float(updates["w"][1]), 0.002, rtol=1e-4)


def test_exempt_parameters_are_not_decayed():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  params = {"dense": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}, "log_scale": jnp.ones(())}
  grads = {"dense": {"kernel": jnp.zeros(2), "bias": jnp.zeros(2)}, "log_scale": jnp.zeros(())}
  for coupled in (False, True):
    config = ml_collections.ConfigDict(dict(learning_rate=0.1, weight_decay=0.5, coupled_weight_decay=coupled,
                                            weight_decay_exempt="bias,log_scale"))
    tx = optim.make_optimizer(config)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(jnp.max(jnp.abs(updates["dense"]["kernel"]))) > 0
    assert float(jnp.max(jnp.abs(updates["dense"]["bias"]))) == 0 and float(updates["log_scale"]) == 0
