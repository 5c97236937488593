"""ATBA's encoder: a pre-norm Transformer with class tokens and pyramid local attention (spec hal_atba.md §4).

Tokens are [class tokens; frames]. Layer ℓ lets frames attend to frames within radius 2**ℓ (plus every class token);
class tokens attend to everything valid. Attention is banded (`banded_attention.py`), so time and memory grow linearly
with the number of frames. One classifier is shared by frames and class tokens; the video logit of class c is class
token c's own entry of that classifier (spec §4.4). There is no final LayerNorm (ATBA never applies its encoder's).

Initialisation follows ATBA's PyTorch code (spec §4.2, §12.20): Transformer matrices Xavier-uniform, attention biases
zero, FFN biases and the input projection / classifier with PyTorch's `nn.Linear` default, class tokens N(0, 1),
positions N(0, 0.01²).

HAL (spec §7.3) builds an extra "variance" layer at a tap with `EncoderLayer(radius=layer_radius(tap))` on the tap's
input tokens, which `PyramidTransformer(..., return_layer_states=True)` returns.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hal_jax.models import banded_attention as banded
from hal_jax.models import dropout as dropout_lib

# PyTorch's `nn.Linear` / `nn.Conv1d` default weight init, kaiming_uniform(a=sqrt(5)), is U(±1/sqrt(fan_in)):
# gain² = 2 / (1 + 5) = 1/3, bound = sqrt(3 · (1/3) / fan_in).
pytorch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# Xavier-uniform on a [fan_in, fan_out] kernel; for the packed [d, 3d] Q/K/V kernel this is PyTorch's bound on its
# packed [3d, d] `in_proj_weight`, sqrt(6 / (d + 3d)), not the per-matrix sqrt(6 / 2d).
xavier_uniform_init = nn.initializers.xavier_uniform()

LAYER_NORM_EPSILON = 1e-5  # PyTorch's default, ATBA's value.


def pytorch_default_bias_init(fan_in: int) -> nn.initializers.Initializer:
  """PyTorch's `nn.Linear` default bias init, U(±1/sqrt(fan_in)); the bias shape alone does not give fan_in."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def layer_radius(layer: int) -> int:
  """Attention radius (in frames) of 0-based encoder layer `layer`: 2**layer (spec §4.3)."""
  return 2**layer


Tokens = tuple[jax.Array, jax.Array]  # (class tokens [batch, C, d], frame tokens [batch, T, d]).


class PackedKernel(nn.Module):
  """A Xavier-uniform [fan_in, features] kernel parameter, returned rather than applied (its user slices it).

  Attributes:
    features: the kernel's output width.
  """
  features: int

  @nn.compact
  def __call__(self, fan_in: int) -> jax.Array:
    return self.param("kernel", xavier_uniform_init, (fan_in, self.features))


class BandedSelfAttention(nn.Module):
  """Multi-head self-attention with ATBA's pyramid mask (biased packed Q/K/V and output projections).

  Attributes:
    radius: frames attend to frames at most this many steps away.
    num_heads: attention heads; the hidden size must be divisible by it.
    dropout_rate: dropout on the attention probabilities (train mode only).
    min_block_size: smallest query block of the banded kernel (speed only).
    causal: frames attend only to the past part of the band and to no class token (`banded.banded_attention`).
  """
  radius: int
  num_heads: int = 1
  dropout_rate: float = 0.1
  min_block_size: int = banded.DEFAULT_MIN_BLOCK_SIZE
  causal: bool = False

  @nn.compact
  def __call__(self, tokens: Tokens, frame_mask: jax.Array, deterministic: bool = True) -> Tokens:
    """Attends.

    Args:
      tokens: (class tokens [batch, C, hidden], frame tokens [batch, T, hidden]).
      frame_mask: [batch, T] bool, True on valid frames.
      deterministic: no dropout when True; otherwise draws from the 'dropout' rng stream.

    Returns:
      (class outputs [batch, C, hidden], frame outputs [batch, T, hidden]).
    """
    hidden = tokens[1].shape[-1]
    if hidden % self.num_heads:
      raise ValueError(f"hidden size {hidden} is not divisible by num_heads={self.num_heads}")
    # One packed [d, 3d] kernel as in PyTorch (and its Xavier bound), applied as three matmuls: slicing the small
    # kernel is free, slicing a [batch, tokens, 3d] product copies it.
    kernel = PackedKernel(3 * hidden, name="qkv")(hidden)
    # PyTorch's attention also has a key bias b_k, but it adds q·b_k to every logit of a query alike, so the softmax
    # cancels it: it cannot change any output and its gradient is zero up to rounding. Adam turns that rounding noise
    # into full-size steps (m / sqrt(v) ≈ ±1), which made runs on different device counts drift apart; without the
    # key bias the model computes the same function class and stays reproducible across devices.
    query_bias = self.param("query_bias", nn.initializers.zeros, (hidden,))
    value_bias = self.param("value_bias", nn.initializers.zeros, (hidden,))
    head_dim = hidden // self.num_heads
    # The attention scale 1/sqrt(head_dim) goes into the query projection (a [d, d] multiply, not [batch, tokens, d]).
    scale = head_dim**-0.5
    query_kernel, key_kernel, value_kernel = jnp.split(kernel, 3, axis=1)
    query_kernel = query_kernel * scale

    def project(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
      heads = lambda y: y.reshape(y.shape[:2] + (self.num_heads, head_dim))
      return (heads(x @ query_kernel + query_bias * scale), heads(x @ key_kernel),
              heads(x @ value_kernel + value_bias))

    use_dropout = not deterministic and self.dropout_rate > 0.0
    class_out, frame_out = banded.banded_attention(
        *project(tokens[0]), *project(tokens[1]), frame_mask, radius=self.radius, dropout_rate=self.dropout_rate,
        dropout_rng=self.make_rng("dropout") if use_dropout else None, min_block_size=self.min_block_size,
        causal=self.causal)
    out = nn.Dense(hidden, kernel_init=xavier_uniform_init, bias_init=nn.initializers.zeros, name="out")
    merge = lambda y: y.reshape(y.shape[:2] + (hidden,))
    return out(merge(class_out)), out(merge(frame_out))


class EncoderLayer(nn.Module):
  """One pre-norm ("norm_first") encoder layer (spec §4.2).

  x <- x + Drop(Attn(LN1(x)));  x <- x + Drop(W2 Drop(ReLU(W1 LN2(x) + b1)) + b2).

  Class tokens and frames pass through the same weights as separate arrays (per-token layers do not mix them, and
  keeping them apart avoids slicing and concatenating the token axis in every layer).

  Attributes:
    radius: attention radius between frames (`layer_radius(layer)` in the pyramid).
    num_heads: attention heads.
    ffn_multiplier: FFN width as a multiple of the hidden size (ATBA: 4).
    dropout_rate: dropout in the four places (attention probabilities, attention output, after the ReLU, FFN output).
    min_block_size: smallest query block of the banded kernel (speed only).
    causal: online attention (`BandedSelfAttention.causal`).
  """
  radius: int
  num_heads: int = 1
  ffn_multiplier: int = 4
  dropout_rate: float = 0.1
  min_block_size: int = banded.DEFAULT_MIN_BLOCK_SIZE
  causal: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array | Tokens, frame_mask: jax.Array,
               deterministic: bool = True) -> jax.Array | Tokens:
    """Applies the layer.

    Args:
      tokens: [batch, C + T, hidden] with the class tokens first (C is inferred from `frame_mask`), or the pair
        (class tokens [batch, C, hidden], frames [batch, T, hidden]).
      frame_mask: [batch, T] bool, True on valid frames.
      deterministic: no dropout when True; otherwise draws from the 'dropout' rng stream.

    Returns:
      The new tokens, in the form `tokens` came in.
    """
    joined = not isinstance(tokens, tuple)
    if joined:
      num_class = tokens.shape[1] - frame_mask.shape[1]
      tokens = (tokens[:, :num_class], tokens[:, num_class:])
    hidden = tokens[1].shape[-1]
    ffn = self.ffn_multiplier * hidden
    drop = lambda x: dropout_lib.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    attention_norm = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name="attention_norm")
    attended = BandedSelfAttention(
        radius=self.radius, num_heads=self.num_heads, dropout_rate=self.dropout_rate,
        min_block_size=self.min_block_size, causal=self.causal, name="attention")(
            tuple(map(attention_norm, tokens)), frame_mask, deterministic)
    tokens = tuple(x + drop(h) for x, h in zip(tokens, attended))
    ffn_norm = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name="ffn_norm")
    ffn_in = nn.Dense(ffn, kernel_init=xavier_uniform_init, bias_init=pytorch_default_bias_init(hidden), name="ffn_in")
    ffn_out = nn.Dense(hidden, kernel_init=xavier_uniform_init, bias_init=pytorch_default_bias_init(ffn),
                       name="ffn_out")
    tokens = tuple(x + drop(ffn_out(drop(nn.relu(ffn_in(ffn_norm(x)))))) for x in tokens)
    return jnp.concatenate(tokens, axis=1) if joined else tokens


class EncoderOutput(NamedTuple):
  """What `PyramidTransformer` returns.

  Attributes:
    frame_logits: [batch, T, C], the shared classifier on the last layer's frame tokens.
    video_logits: [batch, C], class token c through the shared classifier, entry c.
    frame_tokens: [batch, T, hidden], last layer, no final norm.
    class_tokens: [batch, C, hidden], last layer, no final norm.
    layer_inputs: with `return_layer_states`, per layer ℓ the tokens entering it, [batch, C + T, hidden] (class
      tokens first); else None.
    layer_outputs: with `return_layer_states`, per layer ℓ the tokens it produced, [batch, C + T, hidden]
      (`layer_outputs[ℓ] is layer_inputs[ℓ + 1]`); else None.
  """

  frame_logits: jax.Array
  video_logits: jax.Array
  frame_tokens: jax.Array
  class_tokens: jax.Array
  layer_inputs: tuple[jax.Array, ...] | None = None
  layer_outputs: tuple[jax.Array, ...] | None = None


class PyramidTransformer(nn.Module):
  """ATBA's encoder and heads (spec §4).

  Attributes:
    num_classes: C, the number of action classes (= class tokens).
    max_positions: P, rows of the positional table (floor(max_len / sample_rate)); longer inputs are an error.
    hidden_dim: d (ATBA: 256).
    num_layers: L; layer ℓ has radius 2**ℓ (ATBA: 6, HAL: 5).
    num_heads: attention heads (ATBA: 1).
    dropout_rate: dropout in the encoder layers (ATBA: 0.1).
    min_block_size: smallest query block of the banded kernel (speed only).
    causal: online segmentation: frame outputs up to t depend on no frame after t (every layer, and frames read no
      class token); `hal_jax.models.streaming` runs such a model chunk by chunk.
  """

  num_classes: int
  max_positions: int
  hidden_dim: int = 256
  num_layers: int = 6
  num_heads: int = 1
  dropout_rate: float = 0.1
  min_block_size: int = banded.DEFAULT_MIN_BLOCK_SIZE
  causal: bool = False

  @nn.compact
  def __call__(
      self,
      features: jax.Array,
      frame_mask: jax.Array,
      *,
      deterministic: bool = True,
      return_layer_states: bool = False,
  ) -> EncoderOutput:
    """Encodes a padded batch of videos.

    Args:
      features: [batch, T, D_in] frame features (padding may hold anything finite).
      frame_mask: [batch, T] bool, True on valid frames.
      deterministic: eval mode (no dropout) when True; otherwise needs the 'dropout' rng stream.
      return_layer_states: also return every layer's input and output tokens (for HAL's taps).

    Returns:
      An `EncoderOutput`.

    Raises:
      ValueError: at trace time, if T exceeds `max_positions` or the shapes disagree.
    """
    batch, frames, _ = features.shape
    if frame_mask.shape != (batch, frames):
      raise ValueError(f"frame_mask has shape {frame_mask.shape}, expected {(batch, frames)} from features")
    if frames > self.max_positions:
      # ATBA crashes here too (spec §12.19); a clear message instead of an index error.
      raise ValueError(f"sequence of {frames} (downsampled) frames is longer than the positional table "
                       f"(max_positions={self.max_positions}); raise max_len or the sample rate")
    frame_mask = frame_mask.astype(bool)
    fan_in = features.shape[-1]
    x = nn.Dense(self.hidden_dim, kernel_init=pytorch_default_kernel_init,
                 bias_init=pytorch_default_bias_init(fan_in), name="input_projection")(features)
    positions = self.param("position_embedding", nn.initializers.normal(0.01), (self.max_positions, self.hidden_dim))
    x = x + jax.lax.slice_in_dim(positions, 0, frames)  # (not positions[:frames]: T may be symbolic, jax.export)
    class_table = self.param("class_tokens", nn.initializers.normal(1.0), (self.num_classes, self.hidden_dim))
    tokens = (jnp.broadcast_to(class_table, (batch,) + class_table.shape), x)
    inputs, outputs = [], []
    for layer in range(self.num_layers):
      inputs.append(tokens)
      tokens = EncoderLayer(
          radius=layer_radius(layer), num_heads=self.num_heads, dropout_rate=self.dropout_rate,
          min_block_size=self.min_block_size, causal=self.causal, name=f"layer_{layer}")(tokens, frame_mask,
                                                                                       deterministic)
      outputs.append(tokens)
    class_tokens, frame_tokens = tokens
    joined = lambda states: tuple(jnp.concatenate(pair, axis=1) for pair in states)
    classifier = nn.Dense(self.num_classes, kernel_init=pytorch_default_kernel_init,
                          bias_init=pytorch_default_bias_init(self.hidden_dim), name="classifier")
    frame_logits = classifier(frame_tokens)
    # Class token c keeps only its own entry: the diagonal of the [C, C] classifier output (O(C²d), negligible).
    video_logits = jnp.diagonal(classifier(class_tokens), axis1=1, axis2=2)
    return EncoderOutput(
        frame_logits=frame_logits, video_logits=video_logits, frame_tokens=frame_tokens, class_tokens=class_tokens,
        layer_inputs=joined(inputs) if return_layer_states else None,
        layer_outputs=joined(outputs) if return_layer_states else None)
