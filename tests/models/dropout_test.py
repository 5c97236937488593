"""Tests of hal_jax.models.dropout: keep rate, independence, unbiasedness, determinism, sharding, gradients."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax import sharding
from hal_jax.models import dropout


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_rate_matches_within_binomial_noise(rate):
  n = 1 << 20
  kept = float(jnp.mean(dropout.dropout(jnp.ones([n]), rate, jax.random.key(3)) > 0))
  sigma = np.sqrt(rate * (1 - rate) / n)
  assert abs(kept - (1 - rate)) < 5 * sigma


def test_neighbours_and_keys_are_uncorrelated():
  n = 1 << 18
  bits = np.asarray(dropout.random_bits(jax.random.key(0), (n,)))
  other = np.asarray(dropout.random_bits(jax.random.key(1), (n,)))
  u, v = bits / 2**32, other / 2**32
  for a, b in ((u[:-1], u[1:]), (u[:-2], u[2:]), (u, v), (u[:-1024], u[1024:])):  # Lags 1, 2, a row; another key.
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)
  # Every bit position is a fair coin.
  ones = np.unpackbits(bits.view(np.uint8)).reshape(-1, 32).mean(axis=0)
  assert np.all(np.abs(ones - 0.5) < 5 * 0.5 / np.sqrt(n))


def test_expectation_is_preserved_and_values_are_scaled_exactly():
  x = jnp.linspace(1.0, 2.0, 1 << 16)
  y = dropout.dropout(x, 0.1, jax.random.key(7))
  kept = y != 0
  np.testing.assert_allclose(np.asarray(y[kept]), np.asarray(x[kept]) / dropout.keep_probability(0.1), rtol=1e-6)
  assert float(jnp.mean(y)) == pytest.approx(float(jnp.mean(x)), rel=0.01)


def test_identity_zero_and_full_rates():
  x = jnp.arange(6.0)
  np.testing.assert_array_equal(dropout.dropout(x, 0.3, None), x)
  np.testing.assert_array_equal(dropout.dropout(x, 0.0, jax.random.key(0)), x)
  np.testing.assert_array_equal(dropout.dropout(x, 1.0, jax.random.key(0)), jnp.zeros(6))


def test_same_key_same_mask_and_every_key_its_own():
  x = jnp.ones([64, 33])
  a = dropout.dropout(x, 0.5, jax.random.key(0))
  np.testing.assert_array_equal(a, dropout.dropout(x, 0.5, jax.random.key(0)))
  assert not np.array_equal(a, dropout.dropout(x, 0.5, jax.random.key(1)))


def test_mask_does_not_depend_on_sharding():
  """Positions are global, so a batch sharded over 4 devices gets the mask of the unsharded array."""
  mesh = sharding.make_mesh(jax.devices()[:4])
  x = jnp.ones([8, 16, 5])
  fn = jax.jit(lambda v: dropout.dropout(v, 0.5, jax.random.key(2)))
  sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  np.testing.assert_array_equal(np.asarray(fn(sharded)), np.asarray(fn(x)))


def test_module_uses_the_dropout_stream_and_passes_gradients_through_kept_elements():
  module = dropout.Dropout(0.5)
  x = jnp.ones([4, 8])
  y = module.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(4)})
  np.testing.assert_array_equal(module.apply({}, x, deterministic=True), x)
  grad = jax.grad(lambda v: jnp.sum(module.apply({}, v, deterministic=False, rngs={"dropout": jax.random.key(4)})))(x)
  np.testing.assert_allclose(grad, np.where(np.asarray(y) != 0, 2.0, 0.0))
  with pytest.raises(flax.errors.InvalidRngError):
    module.apply({}, x, deterministic=False)
