"""Streaming (online) segmentation with a causal `PyramidTransformer`: chunks of frames in, their labels out.

A causal encoder (``causal=True``) lets frame t of layer ℓ read only the layer's inputs at t - r_ℓ .. t
(r_ℓ = 2**ℓ) and no class token. So a chunk of n new frames needs, per layer, only the last r_ℓ inputs of that
layer from before the chunk: `StreamingSegmenter` keeps exactly those (a cache of Σ_ℓ r_ℓ = 2**L - 1 tokens in all,
whatever the video's length), runs every layer on [cache; chunk], and returns the chunk's frame logits and labels.
They equal the causal model run on the whole video (up to float rounding of a different summation order; tested).

Frames are feature steps after temporal downsampling (what the pipeline feeds the model). Usage::

  stream = StreamingSegmenter(method.model, params, chunk_size=64)   # HAL: params of its "encoder"
  state = stream.initial_state()
  for chunk in chunks:                                               # [n <= 64, D] each; only the last may be short
    state, labels = stream.push(state, chunk)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hal_jax.models import pyramid_transformer as pt


class StreamState(NamedTuple):
  """What a stream keeps between chunks.

  Attributes:
    caches: per layer ℓ, its last r_ℓ input tokens [r_ℓ, d].
    cache_masks: per layer, [r_ℓ] bool, False where the stream has not produced a frame yet.
    position: frames seen so far (the next frame's position), int32 scalar.
    closed: True after a chunk shorter than the chunk size (the video's end).
  """
  caches: tuple[jax.Array, ...]
  cache_masks: tuple[jax.Array, ...]
  position: jax.Array
  closed: bool = False


def _encoder_params(params: Any) -> Any:
  """The encoder's parameters: HAL keeps them under "encoder" next to its training-only taps."""
  return params["encoder"] if "encoder" in params else params


class StreamingSegmenter:
  """Runs a causal `PyramidTransformer` chunk by chunk (module docstring)."""

  def __init__(self, model: pt.PyramidTransformer, params: Any, chunk_size: int):
    if not model.causal:
      raise ValueError("streaming needs a causal encoder (PyramidTransformer(causal=True), config.causal=True)")
    if chunk_size < 1:
      raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    self.model = model
    self.params = _encoder_params(params)
    self.chunk_size = chunk_size
    self.radii = tuple(pt.layer_radius(layer) for layer in range(model.num_layers))
    self._chunk = jax.jit(self._chunk_logits)

  def initial_state(self) -> StreamState:
    d = self.model.hidden_dim
    return StreamState(caches=tuple(jnp.zeros((r, d), jnp.float32) for r in self.radii),
                       cache_masks=tuple(jnp.zeros((r,), bool) for r in self.radii),
                       position=jnp.zeros((), jnp.int32))

  def _chunk_logits(self, params: Any, state: StreamState, features: jax.Array,
                    valid: jax.Array) -> tuple[StreamState, jax.Array]:
    """One chunk: features [n, D], valid [n] bool -> (new state, frame logits [n, C])."""
    m = self.model
    n = features.shape[0]
    x = nn.Dense(m.hidden_dim).apply({"params": params["input_projection"]}, features)
    # Padded by a chunk, so that a short last chunk never reads past the table (dynamic_slice would clamp).
    table = jnp.pad(params["position_embedding"], ((0, n), (0, 0)))
    x = x + jax.lax.dynamic_slice_in_dim(table, state.position, n)
    # Causal frames read no class token; the layer still wants some, and their outputs are dropped.
    class_tokens = params["class_tokens"][None]
    caches, masks = [], []
    for layer, radius in enumerate(self.radii):
      window = jnp.concatenate([state.caches[layer], x])
      window_mask = jnp.concatenate([state.cache_masks[layer], valid])
      encoder_layer = pt.EncoderLayer(radius=radius, num_heads=m.num_heads, dropout_rate=m.dropout_rate,
                                      min_block_size=m.min_block_size, causal=True)
      _, out = encoder_layer.apply({"params": params[f"layer_{layer}"]}, (class_tokens, window[None]),
                                   window_mask[None], True)
      caches.append(window[-radius:])
      masks.append(window_mask[-radius:])
      x = out[0, radius:]
    logits = nn.Dense(m.num_classes).apply({"params": params["classifier"]}, x)
    new_state = StreamState(tuple(caches), tuple(masks), state.position + jnp.sum(valid).astype(jnp.int32))
    return new_state, logits

  def push_logits(self, state: StreamState, features: np.ndarray) -> tuple[StreamState, np.ndarray]:
    """Feeds the next chunk, features [n, D] with 1 <= n <= chunk_size; returns the new state and logits [n, C].

    Raises:
      ValueError: after a short chunk (the stream ended), for an oversized chunk, or past the positional table.
    """
    features = np.asarray(features, np.float32)
    n = features.shape[0]
    if state.closed:
      raise ValueError("the stream ended with a chunk shorter than chunk_size; start a new one")
    if not 1 <= n <= self.chunk_size:
      raise ValueError(f"a chunk has 1..{self.chunk_size} frames, got {n}")
    if int(state.position) + n > self.model.max_positions:
      raise ValueError(f"the video is longer than the positional table (max_positions={self.model.max_positions})")
    padded = np.zeros((self.chunk_size, features.shape[1]), np.float32)
    padded[:n] = features
    new_state, logits = self._chunk(self.params, state, padded, np.arange(self.chunk_size) < n)
    return new_state._replace(closed=n < self.chunk_size), np.asarray(logits[:n])

  def push(self, state: StreamState, features: np.ndarray) -> tuple[StreamState, np.ndarray]:
    """As `push_logits`, returning the chunk's labels [n] int (argmax of the frame logits, the host's inference)."""
    state, logits = self.push_logits(state, features)
    return state, np.argmax(logits, axis=-1)
