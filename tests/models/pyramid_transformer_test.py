"""Tests for hal_jax.models.pyramid_transformer: shapes, padding invariance, masking, gradients, init, memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax.models import pyramid_transformer as pt

BATCH, FEATURE_DIM, HIDDEN, NUM_CLASSES = 2, 6, 16, 3
LENGTHS = np.array([37, 21])  # Valid frames per video; 37 is the shortest bucket below.


# Six layers: radii 1..32, so T=37 and T=64 take the dense path in the last layer and T=128 the blocked one.
MODEL = pt.PyramidTransformer(
    num_classes=NUM_CLASSES, max_positions=128, hidden_dim=HIDDEN, num_layers=6, num_heads=2)


def make_batch(frames, pad_seed=None):
  """features [B, frames, D] and frame_mask [B, frames] for videos of LENGTHS valid frames.

  The valid rows are the same for every `frames`; the padded rows are large random values drawn from `pad_seed`
  (by default from `frames`, so that every bucket pads differently).
  """
  valid = np.random.default_rng(0).normal(size=(BATCH, max(LENGTHS), FEATURE_DIM)).astype(np.float32)
  pad_rng = np.random.default_rng(1000 + frames if pad_seed is None else pad_seed)
  features = 10.0 * pad_rng.normal(size=(BATCH, frames, FEATURE_DIM)).astype(np.float32)
  mask = np.arange(frames)[None] < LENGTHS[:, None]
  for b, length in enumerate(LENGTHS):
    features[b, :length] = valid[b, :length]
  return jnp.asarray(features), jnp.asarray(mask)


@functools.lru_cache(maxsize=None)
def init_params():
  features, mask = make_batch(37)
  return jax.jit(MODEL.init)(jax.random.key(0), features, mask)


# Jitted because op-by-op dispatch of the model is many times slower than compiling it once per shape.
apply_model = jax.jit(MODEL.apply, static_argnames=("deterministic", "return_layer_states"))


def test_output_shapes():
  features, mask = make_batch(64)
  out = apply_model(init_params(), features, mask, return_layer_states=True)
  assert out.frame_logits.shape == (BATCH, 64, NUM_CLASSES)
  assert out.video_logits.shape == (BATCH, NUM_CLASSES)
  assert out.frame_tokens.shape == (BATCH, 64, HIDDEN)
  assert out.class_tokens.shape == (BATCH, NUM_CLASSES, HIDDEN)
  assert len(out.layer_inputs) == len(out.layer_outputs) == 6
  for states in (out.layer_inputs, out.layer_outputs):
    assert all(s.shape == (BATCH, NUM_CLASSES + 64, HIDDEN) for s in states)
  assert apply_model(init_params(), features, mask).layer_inputs is None


def test_heads_share_one_classifier_and_there_is_no_final_norm():
  features, mask = make_batch(64)
  params = init_params()
  with jax.default_matmul_precision("highest"):
    out = apply_model(params, features, mask, return_layer_states=True)
  classifier = params["params"]["classifier"]
  kernel, bias = np.asarray(classifier["kernel"]), np.asarray(classifier["bias"])
  last = np.asarray(out.layer_outputs[-1])
  np.testing.assert_allclose(np.asarray(out.class_tokens), last[:, :NUM_CLASSES], atol=1e-6)
  np.testing.assert_allclose(np.asarray(out.frame_tokens), last[:, NUM_CLASSES:], atol=1e-6)
  np.testing.assert_allclose(np.asarray(out.frame_logits), last[:, NUM_CLASSES:] @ kernel + bias, atol=1e-5)
  # Video logit c = class token c through the shared classifier, entry c.
  class_tokens = last[:, :NUM_CLASSES]
  want = np.einsum("bcd,dc->bc", class_tokens, kernel) + bias
  np.testing.assert_allclose(np.asarray(out.video_logits), want, atol=1e-5)


def test_layer_states_chain_and_encoder_layer_reproduces_them():
  # HAL's variance layer is an `EncoderLayer` on a tap's input; it must be the same computation as the main layer.
  features, mask = make_batch(64)
  params = init_params()
  with jax.default_matmul_precision("highest"):
    out = apply_model(params, features, mask, return_layer_states=True)
    for tap in (1, 2):
      layer = pt.EncoderLayer(radius=pt.layer_radius(tap), num_heads=2)
      again = layer.apply({"params": params["params"][f"layer_{tap}"]}, out.layer_inputs[tap], mask)
      np.testing.assert_allclose(np.asarray(again), np.asarray(out.layer_outputs[tap]), atol=1e-5)
  for layer in range(5):
    np.testing.assert_array_equal(np.asarray(out.layer_outputs[layer]), np.asarray(out.layer_inputs[layer + 1]))


def test_valid_outputs_do_not_depend_on_padding():
  params = init_params()
  with jax.default_matmul_precision("highest"):
    outs = [apply_model(params, *make_batch(frames)) for frames in (37, 64, 128)]
  for out in outs[1:]:
    np.testing.assert_allclose(np.asarray(out.video_logits), np.asarray(outs[0].video_logits), atol=1e-5)
    for b, length in enumerate(LENGTHS):
      np.testing.assert_allclose(
          np.asarray(out.frame_logits[b, :length]), np.asarray(outs[0].frame_logits[b, :length]), atol=1e-5)
  assert all(np.all(np.isfinite(np.asarray(out.frame_logits))) for out in outs)


def test_padded_features_do_not_leak():
  params = init_params()
  first = apply_model(params, *make_batch(64, pad_seed=1))
  second = apply_model(params, *make_batch(64, pad_seed=2))
  np.testing.assert_array_equal(np.asarray(first.video_logits), np.asarray(second.video_logits))
  for b, length in enumerate(LENGTHS):
    np.testing.assert_array_equal(np.asarray(first.frame_logits[b, :length]),
                                  np.asarray(second.frame_logits[b, :length]))


def test_gradients_are_finite_nonzero_and_zero_on_padding():
  features, mask = make_batch(64)
  params = init_params()

  def loss(params, features):
    out = MODEL.apply(params, features, mask, deterministic=False, rngs={"dropout": jax.random.key(3)})
    frame_term = jnp.sum(jnp.where(mask[..., None], out.frame_logits, 0.0) ** 2)
    return frame_term + jnp.sum(out.video_logits ** 2)

  param_grads, feature_grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, features)
  for path, grad in jax.tree_util.tree_leaves_with_path(param_grads):
    grad = np.asarray(grad)
    assert np.all(np.isfinite(grad)), path
    assert np.any(grad != 0), path
  feature_grads = np.asarray(feature_grads)
  mask = np.asarray(mask)
  assert np.all(feature_grads[~mask] == 0)
  assert np.all(np.any(feature_grads[mask] != 0, axis=-1))


def test_init_statistics():
  model = pt.PyramidTransformer(num_classes=64, max_positions=256, hidden_dim=32, num_layers=2)
  features, mask = jnp.zeros((1, 8, FEATURE_DIM)), jnp.ones((1, 8), bool)
  params = jax.jit(model.init)(jax.random.key(1), features, mask)["params"]
  class_tokens = np.asarray(params["class_tokens"])
  assert class_tokens.shape == (64, 32)
  assert abs(class_tokens.mean()) < 0.05 and abs(class_tokens.std() - 1.0) < 0.05
  positions = np.asarray(params["position_embedding"])
  assert positions.shape == (256, 32)
  assert abs(positions.mean()) < 5e-4 and abs(positions.std() - 0.01) < 5e-4

  def bound_check(array, bound):
    array = np.asarray(array)
    assert np.all(np.abs(array) <= bound) and np.abs(array).max() > 0.9 * bound, (np.abs(array).max(), bound)

  for name in ("layer_0", "layer_1"):
    layer = params[name]
    attention = layer["attention"]
    for bias in (attention["query_bias"], attention["value_bias"], attention["out"]["bias"]):
      assert np.all(np.asarray(bias) == 0)
    # No key bias: the softmax cancels it (see BandedSelfAttention).
    assert "bias" not in attention["qkv"] and "key_bias" not in attention
    bound_check(attention["qkv"]["kernel"], np.sqrt(6 / (32 + 3 * 32)))   # Xavier on the packed 3d x d matrix.
    bound_check(attention["out"]["kernel"], np.sqrt(6 / (32 + 32)))
    bound_check(layer["ffn_in"]["kernel"], np.sqrt(6 / (32 + 128)))
    bound_check(layer["ffn_in"]["bias"], 1 / np.sqrt(32))                   # PyTorch Linear default biases.
    bound_check(layer["ffn_out"]["bias"], 1 / np.sqrt(128))
    for norm in ("attention_norm", "ffn_norm"):
      assert np.all(np.asarray(layer[norm]["scale"]) == 1) and np.all(np.asarray(layer[norm]["bias"]) == 0)
  bound_check(params["input_projection"]["kernel"], 1 / np.sqrt(FEATURE_DIM))
  bound_check(params["classifier"]["kernel"], 1 / np.sqrt(32))
  bound_check(params["classifier"]["bias"], 1 / np.sqrt(32))


def test_dropout_is_deterministic_given_the_rng():
  features, mask = make_batch(64)
  params = init_params()
  train = lambda seed: apply_model(
      params, features, mask, deterministic=False, rngs={"dropout": jax.random.key(seed)}).frame_logits
  first, again, other = np.asarray(train(0)), np.asarray(train(0)), np.asarray(train(1))
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, other)
  assert not np.allclose(first, np.asarray(apply_model(params, features, mask).frame_logits))


def test_too_long_sequence_is_a_clear_error():
  params = init_params()
  with pytest.raises(ValueError, match="max_positions=128"):
    apply_model(params, *make_batch(129))


def _temp_bytes(frames):
  model = pt.PyramidTransformer(num_classes=4, max_positions=2048, hidden_dim=16, num_layers=5)
  features = jax.ShapeDtypeStruct((1, frames, FEATURE_DIM), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, frames), jnp.bool_)
  params = jax.eval_shape(model.init, jax.random.key(0), features, mask)
  compiled = jax.jit(model.apply).lower(params, features, mask).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_memory_grows_linearly_in_frames():
  small, large = _temp_bytes(512), _temp_bytes(2048)
  # 4x the frames: linear memory gives ~4x, a T x T attention buffer ~16x.
  assert large < 6 * small, (small, large)
  assert large < 2048 * 2048 * 4 / 4, large  # Well below one float32 T x T matrix.
