"""Tests for hal_jax.models.attention_mil: shapes, masking, per-video top-k pooling, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax.models import attention_mil

B, T, D, C = 2, 16, 6, 3


@pytest.fixture(scope="module")
def setup():
  model = attention_mil.AttentionMIL(num_classes=C, embed_dim=12, attention_dim=8, dropout_rate=0.5)
  features = jax.random.normal(jax.random.key(0), (B, T, D))
  mask = jnp.ones((B, T), bool)
  params = jax.jit(lambda k: model.init(k, features, mask, deterministic=True))(jax.random.key(1))["params"]
  return model, params, features, mask


def test_shapes_and_the_spec_widths(setup):
  model, params, features, mask = setup
  out = model.apply({"params": params}, features, mask, deterministic=True)
  assert out.cas_logits.shape == (B, T, C + 1)  # the extra background class
  assert out.attention.shape == (B, T, 3)
  np.testing.assert_allclose(np.sum(out.attention, axis=-1), 1.0, rtol=1e-5)
  full = attention_mil.AttentionMIL(num_classes=20)
  shapes = jax.eval_shape(lambda: full.init(jax.random.key(0), jnp.zeros((1, 8, 2048)), jnp.ones((1, 8), bool),
                                            deterministic=True))["params"]
  assert shapes["embedding"]["kernel"].shape == (3, 2048, 2048)
  assert shapes["attention_hidden"]["kernel"].shape == (3, 2048, 512)
  assert shapes["attention_out"]["kernel"].shape == (1, 512, 3)
  assert shapes["classifier"]["kernel"].shape == (1, 2048, 21)


def test_padding_leaves_the_valid_prefix_unchanged(setup):
  model, params, features, mask = setup
  short = model.apply({"params": params}, features, mask, deterministic=True)
  padded = jnp.pad(features, ((0, 0), (0, 5), (0, 0)), constant_values=3.0)  # garbage behind the mask
  padded_mask = jnp.pad(mask, ((0, 0), (0, 5)))
  long = model.apply({"params": params}, padded, padded_mask, deterministic=True)
  np.testing.assert_allclose(long.cas_logits[:, :T], short.cas_logits, atol=1e-5)
  np.testing.assert_allclose(long.attention[:, :T], short.attention, atol=1e-5)
  num_frames = jnp.full((B,), T)
  np.testing.assert_allclose(attention_mil.branch_video_logits(long, padded_mask, num_frames),
                             attention_mil.branch_video_logits(short, mask, num_frames), atol=1e-5)


def test_masked_topk_mean_matches_numpy_with_per_video_k():
  rng = np.random.default_rng(0)
  values = rng.normal(size=(3, 10, 4)).astype(np.float32)
  lengths = np.array([10, 7, 1])
  mask = np.arange(10)[None] < lengths[:, None]
  k = np.array([3, 2, 1])
  got = attention_mil.masked_topk_mean(jnp.asarray(values), jnp.asarray(mask), jnp.asarray(k), max_k=3)
  for b in range(3):
    expected = np.sort(values[b, :lengths[b]], axis=0)[::-1][:k[b]].mean(axis=0)
    np.testing.assert_allclose(got[b], expected, rtol=1e-5)
  empty = attention_mil.masked_topk_mean(jnp.ones((1, 4, 2)), jnp.zeros((1, 4), bool), jnp.ones(1, jnp.int32), 1)
  np.testing.assert_array_equal(empty, 0.0)


def test_topk_counts_follow_the_spec_divisors():
  num_frames = jnp.array([16, 7, 2, 0])
  np.testing.assert_array_equal(attention_mil.topk_counts(num_frames, 8), [2, 1, 1, 1])
  np.testing.assert_array_equal(attention_mil.topk_counts(num_frames, 3), [5, 2, 1, 1])


def test_branch_logits_pool_attention_weighted_cas():
  # Hand-made outputs: T_v = 8, so k_fg = 1 and k_ct = k_bg = 2.
  cas = np.zeros((1, 8, 2), np.float32)
  cas[0, :, 0] = np.arange(8)
  cas[0, :, 1] = 1.0
  attention = np.tile(np.array([0.5, 0.25, 0.25], np.float32), (1, 8, 1))
  outputs = attention_mil.MILOutputs(cas_logits=jnp.asarray(cas), attention=jnp.asarray(attention))
  logits = attention_mil.branch_video_logits(outputs, jnp.ones((1, 8), bool), jnp.array([8]))
  np.testing.assert_allclose(logits[0, attention_mil.FOREGROUND], [0.5 * 7, 0.5], rtol=1e-6)
  np.testing.assert_allclose(logits[0, attention_mil.CONTEXT], [0.25 * 6.5, 0.25], rtol=1e-6)
  np.testing.assert_allclose(logits[0, attention_mil.BACKGROUND], [0.25 * 6.5, 0.25], rtol=1e-6)


def test_gradients_are_finite_use_dropout_and_skip_padding(setup):
  model, params, features, mask = setup
  mask = mask.at[1, 10:].set(False)

  def loss(p, x, key):
    out = model.apply({"params": p}, x, mask, deterministic=False, rngs={"dropout": key})
    logits = attention_mil.branch_video_logits(out, mask, jnp.sum(mask, axis=1))
    return jnp.sum(jax.nn.log_softmax(logits)[..., 0])

  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  (param_grads, feature_grads) = grad(params, features, jax.random.key(0))
  for leaf in jax.tree.leaves(param_grads):
    assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)
  np.testing.assert_array_equal(feature_grads[1, 10:], 0.0)
  # Dropout is on: another key gives another gradient.
  other, _ = grad(params, features, jax.random.key(1))
  assert not np.allclose(other["classifier"]["kernel"], param_grads["classifier"]["kernel"])
