"""Tests of hal_jax.models.latent: reparameterisation, the Gaussian KL, the MLP decoder and HAL's variational tap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax.models import latent
from hal_jax.models import pyramid_transformer as pt

BATCH, CLASSES, FRAMES, HIDDEN = 2, 3, 9, 8
RADIUS = 2


def _leaky_relu(x, slope=0.2):
  return np.where(x >= 0, x, slope * x)


def _decode_numpy(params, z):
  """Linear -> LeakyReLU(0.2) -> Linear, transcribed in float64."""
  h = z @ np.asarray(params["hidden"]["kernel"], np.float64) + np.asarray(params["hidden"]["bias"], np.float64)
  return (_leaky_relu(h) @ np.asarray(params["output"]["kernel"], np.float64)
          + np.asarray(params["output"]["bias"], np.float64))


def test_reparameterize_has_the_requested_mean_and_variance():
  mean = np.array([0.0, 1.5, -2.0, 0.3], np.float32)
  log_var = np.array([0.0, np.log(4.0), np.log(0.25), -1.0], np.float32)
  samples = latent.reparameterize(jax.random.key(0), jnp.broadcast_to(mean, (40000, 4)), jnp.asarray(log_var))
  samples = np.asarray(samples, np.float64)
  assert samples.shape == (40000, 4)
  # Standard errors: sd / 200 for the mean, about sd² / 140 for the variance.
  np.testing.assert_allclose(samples.mean(axis=0), mean, atol=0.03)
  np.testing.assert_allclose(samples.var(axis=0), np.exp(log_var), rtol=0.04)
  # The noise is per entry: the four columns are uncorrelated.
  standardised = (samples - mean) / np.exp(0.5 * log_var)
  off_diagonal = np.corrcoef(standardised.T)[~np.eye(4, dtype=bool)]
  assert np.max(np.abs(off_diagonal)) < 0.03


def test_reparameterize_is_exactly_mean_plus_scaled_key_noise():
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(3, 5)).astype(np.float32)
  log_var = rng.normal(size=(3, 5)).astype(np.float32)
  key = jax.random.key(7)
  noise = np.asarray(jax.random.normal(key, (3, 5), jnp.float32))
  z = np.asarray(latent.reparameterize(key, jnp.asarray(mean), jnp.asarray(log_var)))
  np.testing.assert_allclose(z, mean + np.exp(0.5 * log_var) * noise, rtol=1e-5, atol=1e-6)
  other = np.asarray(latent.reparameterize(jax.random.key(8), jnp.asarray(mean), jnp.asarray(log_var)))
  assert not np.allclose(z, other)


def test_gaussian_kl_matches_the_closed_form():
  rng = np.random.default_rng(1)
  mean = rng.normal(size=(4, 6)).astype(np.float32)
  log_var = rng.normal(scale=1.5, size=(4, 6)).astype(np.float32)
  # KL(N(μ, σ²) ‖ N(0, 1)) = log(1/σ) + (σ² + μ²)/2 − 1/2 per dimension, written with σ rather than log σ².
  sigma = np.exp(0.5 * log_var.astype(np.float64))
  expected = np.sum(-np.log(sigma) + (sigma**2 + mean.astype(np.float64)**2) / 2 - 0.5, axis=-1)
  kl = np.asarray(latent.gaussian_kl(jnp.asarray(mean), jnp.asarray(log_var)))
  assert kl.shape == (4,)
  np.testing.assert_allclose(kl, expected, rtol=1e-5)


def test_gaussian_kl_is_zero_only_at_the_prior():
  zeros = jnp.zeros((2, 5))
  np.testing.assert_array_equal(np.asarray(latent.gaussian_kl(zeros, zeros)), np.zeros(2))
  # Moving either parameter away from the prior costs: μ = 1 costs 1/2, log σ² = 1 costs (e − 2)/2 per dimension.
  mean_only = latent.gaussian_kl(zeros.at[0, 0].set(1.0), zeros)
  np.testing.assert_allclose(np.asarray(mean_only), [0.5, 0.0], atol=1e-7)
  var_only = latent.gaussian_kl(zeros, zeros.at[1, 2].set(1.0))
  np.testing.assert_allclose(np.asarray(var_only), [0.0, (np.e - 2.0) / 2], rtol=1e-6)


def test_mlp_decoder_matches_numpy():
  decoder = latent.MlpDecoder(out_dim=5)
  z = np.random.default_rng(2).normal(size=(2, 3, HIDDEN)).astype(np.float32)
  params = decoder.init(jax.random.key(0), jnp.asarray(z))["params"]
  assert params["hidden"]["kernel"].shape == (HIDDEN, HIDDEN)
  assert params["output"]["kernel"].shape == (HIDDEN, 5)
  out = np.asarray(decoder.apply({"params": params}, jnp.asarray(z)))
  expected = _decode_numpy(params, z.astype(np.float64))
  assert out.shape == (2, 3, 5)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
  # The hidden layer has negative pre-activations, so the leaky slope is really exercised.
  hidden = z @ np.asarray(params["hidden"]["kernel"]) + np.asarray(params["hidden"]["bias"])
  assert (hidden < 0).any()


def _tap_inputs(seed=0):
  rng = np.random.default_rng(seed)
  layer_input = rng.normal(size=(BATCH, CLASSES + FRAMES, HIDDEN)).astype(np.float32)
  layer_output = rng.normal(size=(BATCH, CLASSES + FRAMES, HIDDEN)).astype(np.float32)
  frame_mask = np.arange(FRAMES)[None] < np.array([[FRAMES], [5]])
  return jnp.asarray(layer_input), jnp.asarray(layer_output), jnp.asarray(frame_mask)


def _tap(stop_gradient_target=False):
  return latent.VariationalTap(radius=RADIUS, num_classes=CLASSES, num_heads=2, dropout_rate=0.1,
                               stop_gradient_target=stop_gradient_target)


@pytest.fixture(scope="module")
def tap_setup():
  layer_input, layer_output, frame_mask = _tap_inputs()
  tap = _tap()
  params = tap.init(jax.random.key(0), layer_input, layer_output, frame_mask, jax.random.key(1))["params"]
  return tap, params, layer_input, layer_output, frame_mask


def test_tap_parameters_and_zero_initialised_log_variance(tap_setup):
  tap, params, layer_input, layer_output, frame_mask = tap_setup
  assert set(params) == {"variance_layer", "log_var", "decoder"}
  np.testing.assert_array_equal(np.asarray(params["log_var"]["kernel"]), np.zeros((HIDDEN, HIDDEN)))
  np.testing.assert_array_equal(np.asarray(params["log_var"]["bias"]), np.zeros(HIDDEN))
  out = tap.apply({"params": params}, layer_input, layer_output, frame_mask, jax.random.key(1))
  for name in latent.TapOutput._fields:
    assert getattr(out, name).shape == (BATCH, FRAMES, HIDDEN), name
  np.testing.assert_array_equal(np.asarray(out.log_var), 0.0)


def test_tap_outputs_are_the_documented_tensors(tap_setup):
  tap, params, layer_input, layer_output, frame_mask = tap_setup
  key = jax.random.key(3)
  out = tap.apply({"params": params}, layer_input, layer_output, frame_mask, key)
  # μ is the main layer's output and the target is the layer's input, frame tokens only (class tokens dropped).
  np.testing.assert_array_equal(np.asarray(out.mean), np.asarray(layer_output)[:, CLASSES:])
  np.testing.assert_array_equal(np.asarray(out.target), np.asarray(layer_input)[:, CLASSES:])
  # σ = 1 at init: z = μ + ε with ε the key's standard normal noise.
  noise = np.asarray(jax.random.normal(key, (BATCH, FRAMES, HIDDEN)))
  np.testing.assert_allclose(np.asarray(out.sample), np.asarray(out.mean) + noise, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out.reconstruction),
                             _decode_numpy(params["decoder"], np.asarray(out.sample, np.float64)), rtol=1e-4,
                             atol=1e-5)
  other = tap.apply({"params": params}, layer_input, layer_output, frame_mask, jax.random.key(4))
  assert not np.allclose(np.asarray(out.sample), np.asarray(other.sample))


def test_tap_log_variance_reads_the_variance_layer_on_the_layer_input(tap_setup):
  tap, params, layer_input, layer_output, frame_mask = tap_setup
  rng = np.random.default_rng(5)
  kernel = 0.3 * rng.normal(size=(HIDDEN, HIDDEN)).astype(np.float32)
  bias = 0.1 * rng.normal(size=HIDDEN).astype(np.float32)
  params = {**params, "log_var": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}
  key = jax.random.key(6)
  out = tap.apply({"params": params}, layer_input, layer_output, frame_mask, key)
  # Var_ℓ: a separate encoder layer with the tap layer's radius, applied to H⁽ℓ⁾ (not to the layer output).
  variance_tokens = pt.EncoderLayer(radius=RADIUS, num_heads=2).apply(
      {"params": params["variance_layer"]}, layer_input, frame_mask, True)
  expected = np.asarray(variance_tokens)[:, CLASSES:] @ kernel + bias
  np.testing.assert_allclose(np.asarray(out.log_var), expected, rtol=1e-4, atol=1e-5)
  noise = np.asarray(jax.random.normal(key, (BATCH, FRAMES, HIDDEN)))
  np.testing.assert_allclose(np.asarray(out.sample), np.asarray(out.mean) + np.exp(0.5 * expected) * noise,
                             rtol=1e-4, atol=1e-5)


def test_tap_dropout_only_when_not_deterministic(tap_setup):
  tap, params, layer_input, layer_output, frame_mask = tap_setup
  params = {**params, "log_var": {"kernel": jnp.full((HIDDEN, HIDDEN), 0.1), "bias": jnp.zeros(HIDDEN)}}
  run = lambda deterministic, seed: np.asarray(tap.apply(
      {"params": params}, layer_input, layer_output, frame_mask, jax.random.key(0), deterministic,
      rngs={"dropout": jax.random.key(seed)}).log_var)
  np.testing.assert_array_equal(run(True, 1), run(True, 2))
  assert not np.allclose(run(False, 1), run(False, 2))


@pytest.mark.parametrize("stop_gradient_target", [False, True])
def test_stop_gradient_target_switch(tap_setup, stop_gradient_target):
  _, params, layer_input, layer_output, frame_mask = tap_setup
  tap = _tap(stop_gradient_target)
  weights = jnp.asarray(np.random.default_rng(7).normal(size=(BATCH, FRAMES, HIDDEN)).astype(np.float32))

  def target_term(x):
    out = tap.apply({"params": params}, x, layer_output, frame_mask, jax.random.key(0))
    return jnp.sum(out.target * weights)

  grad = np.asarray(jax.grad(target_term)(layer_input))
  expected = np.zeros((BATCH, CLASSES + FRAMES, HIDDEN), np.float32)
  if not stop_gradient_target:
    expected[:, CLASSES:] = np.asarray(weights)  # d target / d H⁽ℓ⁾ is the identity on the frame tokens.
  np.testing.assert_allclose(grad, expected, atol=1e-7)

  # The reconstruction loss: with the switch off, its gradient reaches H⁽ℓ⁾ through the target; with it on, the only
  # other path (the variance layer) is closed at init by the zero-initialised U, so the gradient vanishes.
  def reconstruction_loss(x):
    out = tap.apply({"params": params}, x, layer_output, frame_mask, jax.random.key(0))
    return jnp.mean(jnp.square(out.reconstruction - out.target))

  grad = np.asarray(jax.grad(reconstruction_loss)(layer_input))
  assert np.all(np.isfinite(grad))
  if stop_gradient_target:
    np.testing.assert_array_equal(grad, 0.0)
  else:
    assert np.abs(grad[:, CLASSES:]).max() > 1e-4
    np.testing.assert_array_equal(grad[:, :CLASSES], 0.0)
