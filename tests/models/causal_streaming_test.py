"""Online segmentation: the causal pyramid transformer never looks ahead, and streaming equals it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax.models import pyramid_transformer as pt
from hal_jax.models import streaming


def _model(causal, num_layers=4):
  return pt.PyramidTransformer(num_classes=5, max_positions=160, hidden_dim=16, num_layers=num_layers, num_heads=2,
                               dropout_rate=0.1, min_block_size=4, causal=causal)


@pytest.mark.parametrize("frames", [10, 70])  # dense (2r+1 >= T in every layer) and blocked attention
def test_causal_outputs_up_to_t_ignore_later_frames(frames):
  model = _model(True)
  rng = np.random.default_rng(0)
  features = rng.normal(size=(2, frames, 6)).astype(np.float32)
  mask = np.ones((2, frames), bool)
  mask[1, frames - 3:] = False  # padding too
  params = model.init(jax.random.key(0), features, mask)["params"]
  t = frames // 2
  changed = features.copy()
  changed[:, t + 1:] = rng.normal(size=changed[:, t + 1:].shape) * 10
  run = lambda x: model.apply({"params": params}, x, mask, return_layer_states=True)
  before, after = run(features), run(changed)
  for layer, (a, b) in enumerate(zip(before.layer_outputs, after.layer_outputs)):
    # Tokens are [class tokens; frames]: frames 0..t start after the 5 class tokens.
    np.testing.assert_array_equal(np.asarray(a[:, 5:5 + t + 1]), np.asarray(b[:, 5:5 + t + 1]), err_msg=f"{layer}")
    assert not np.allclose(np.asarray(a[:, 5 + t + 1:]), np.asarray(b[:, 5 + t + 1:]))
  np.testing.assert_array_equal(np.asarray(before.frame_logits[:, :t + 1]), np.asarray(after.frame_logits[:, :t + 1]))
  # The class tokens read the whole video (video-level loss only), but no frame reads them: changing them (here
  # through the class-token table) leaves every frame output unchanged.
  shifted = dict(params, class_tokens=params["class_tokens"] + 1.0)
  moved = model.apply({"params": shifted}, features, mask)
  np.testing.assert_array_equal(np.asarray(moved.frame_logits), np.asarray(before.frame_logits))
  assert not np.allclose(np.asarray(moved.video_logits), np.asarray(before.video_logits))


def test_offline_model_does_look_ahead():
  model = _model(False)
  features = np.random.default_rng(1).normal(size=(1, 40, 6)).astype(np.float32)
  mask = np.ones((1, 40), bool)
  params = model.init(jax.random.key(0), features, mask)["params"]
  changed = features.copy()
  changed[:, 30:] += 5.0
  a = model.apply({"params": params}, features, mask).frame_logits
  b = model.apply({"params": params}, changed, mask).frame_logits
  assert not np.allclose(np.asarray(a[:, :20]), np.asarray(b[:, :20]))


def test_causal_gradients_are_finite_with_padding():
  model = _model(True, num_layers=3)
  features = np.random.default_rng(2).normal(size=(2, 24, 6)).astype(np.float32)
  mask = np.arange(24)[None] < np.array([[24], [9]])
  params = model.init(jax.random.key(0), features, mask)["params"]

  def loss(p):
    out = model.apply({"params": p}, features, mask, deterministic=False, rngs={"dropout": jax.random.key(1)})
    return jnp.sum(jnp.where(mask[..., None], out.frame_logits, 0.0) ** 2) + jnp.sum(out.video_logits)

  grads = jax.grad(loss)(params)
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)


@pytest.mark.parametrize("length,chunk", [(150, 64), (37, 8)])
def test_streaming_equals_the_causal_model_on_the_whole_video(length, chunk):
  model = _model(True)
  features = np.random.default_rng(3).normal(size=(1, length, 6)).astype(np.float32)
  mask = np.ones((1, length), bool)
  params = model.init(jax.random.key(4), features, mask)["params"]
  whole = np.asarray(model.apply({"params": params}, features, mask).frame_logits[0])
  stream = streaming.StreamingSegmenter(model, params, chunk_size=chunk)
  state = stream.initial_state()
  logits, labels = [], []
  for start in range(0, length, chunk):
    state, out = stream.push_logits(state, features[0, start:start + chunk])
    logits.append(out)
    labels.append(np.argmax(out, -1))
  np.testing.assert_allclose(np.concatenate(logits), whole, atol=2e-5, rtol=1e-5)
  np.testing.assert_array_equal(np.concatenate(labels), np.argmax(whole, -1))
  # Memory is the band, not the video: 1 + 2 + 4 + 8 cached tokens whatever the length.
  assert sum(c.shape[0] for c in state.caches) == 15
  if length % chunk:
    with pytest.raises(ValueError, match="ended"):
      stream.push(state, features[0, :chunk])


def test_streaming_needs_a_causal_model():
  model = _model(False)
  with pytest.raises(ValueError, match="causal"):
    streaming.StreamingSegmenter(model, {}, chunk_size=8)
