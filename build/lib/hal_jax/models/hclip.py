"""H-CLIP's network (spec hclip.md §3, the project's design): video and class-text embeddings compared per level.

  frames [B, T, D_in] --Linear + position--> pre-LN Transformer (key mask) --masked mean--> h [B, W]
  z^l = W_l h                                                   [B, E] per level
  z~^l = z^l + F2C([z^l; z^{l+1}]) + C2F([z^l; z^{l-1}])          hierarchy units, from the un-updated z
  t^l = tau^l + A_l tau^l;   t~^l_j = t^l_j + B_l t^{l-1}_{parent(j)}     text adapter, parent-conditioned text
  logits^l = s cos(z~^l, t~^l),  s = exp(min(log s, log s_max))   [B, N_l]

F2C (fine to coarse) and C2F (coarse to fine) are one residual MLP per direction and adjacent level pair; their last
layer, A_l and B_l are zero-initialised, so at initialisation the network is exactly the flat per-level CLIP
classifier. Every learned block is class-agnostic: the class texts are an argument, so new classes (zero-shot) are new
rows of the texts and parent maps. Without texts (`learned_sizes`), each level learns its class embeddings
(initialised N(0, 0.02²)).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hal_jax.models import dropout as dropout_lib

_EPS = 1e-6


def _normalize(x: jax.Array) -> jax.Array:
  """x / ‖x‖ along the last axis, finite at 0."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), _EPS**2))


class EncoderLayer(nn.Module):
  """Pre-LayerNorm Transformer layer: self-attention over valid frames, then a GELU MLP, both residual."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float

  @nn.compact
  def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
    """x: [B, T, W]; attention_mask: [B, 1, T, T] bool."""
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, name="attention")(
        nn.LayerNorm(name="norm_attention")(x), mask=attention_mask, deterministic=True)
    x = x + dropout_lib.Dropout(self.dropout_rate)(y, deterministic)
    y = nn.LayerNorm(name="norm_mlp")(x)
    y = nn.Dense(x.shape[-1], name="mlp_out")(
        dropout_lib.Dropout(self.dropout_rate)(nn.gelu(nn.Dense(self.mlp_dim, name="mlp_in")(y)), deterministic))
    return x + dropout_lib.Dropout(self.dropout_rate)(y, deterministic)


class TemporalEncoder(nn.Module):
  """Frame projection, learned position embedding, Transformer layers and masked mean pooling."""
  width: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float

  @nn.compact
  def __call__(self, features: jax.Array, frame_mask: jax.Array, deterministic: bool) -> jax.Array:
    """features: [B, T, D_in]; frame_mask: [B, T] bool. Returns h: [B, W] (zeros for a clip without frames)."""
    x = nn.Dense(self.width, name="frame_projection")(features)
    x = x + self.param("position_embedding", nn.initializers.normal(0.02), (features.shape[1], self.width))
    x = dropout_lib.Dropout(self.dropout_rate)(x, deterministic)
    attention_mask = nn.make_attention_mask(frame_mask, frame_mask)
    for i in range(self.num_layers):
      x = EncoderLayer(self.num_heads, self.mlp_dim, self.dropout_rate, name=f"layer_{i}")(x, attention_mask,
                                                                                           deterministic)
    x = nn.LayerNorm(name="final_norm")(x)
    weight = frame_mask.astype(x.dtype)[..., None]
    return jnp.sum(x * weight, axis=1) / jnp.maximum(jnp.sum(weight, axis=1), 1.0)


class HierarchyUnit(nn.Module):
  """z + MLP([z; other]): Linear 2E -> E, GELU, Linear E -> E (zero-initialised, so the unit starts as identity)."""

  @nn.compact
  def __call__(self, z: jax.Array, other: jax.Array) -> jax.Array:
    width = z.shape[-1]
    hidden = nn.gelu(nn.Dense(width, name="hidden")(jnp.concatenate([z, other], axis=-1)))
    return nn.Dense(width, kernel_init=nn.initializers.zeros, name="out")(hidden)


class HClipNetwork(nn.Module):
  """Per-level logits of clips against class texts (module docstring).

  Attributes:
    num_levels: L.
    embed_dim: E, the width of the text space (the texts' width, or of the learned class embeddings).
    width, num_layers, num_heads, mlp_dim, dropout_rate: the temporal encoder.
    use_units: the F2C / C2F hierarchy units (off: the flat model).
    use_text_conditioning: the parent-conditioned fine text B_l (off: t~ = t).
    learned_sizes: text-free mode: N_l per level of the learned class embeddings; None when texts are given.
    logit_scale_init: s at initialisation. logit_scale_max: s is clipped at this value.
  """
  num_levels: int
  embed_dim: int
  width: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float
  use_units: bool = True
  use_text_conditioning: bool = True
  learned_sizes: tuple[int, ...] | None = None
  logit_scale_init: float = 1.0 / 0.07
  logit_scale_max: float = 100.0

  def class_texts(self, texts: Sequence[jax.Array] | None, parents: Sequence[np.ndarray]) -> list[jax.Array]:
    """Unit-norm t~^l: [N_l, E] per level, from the given texts or the learned embeddings."""
    if texts is None:
      texts = [self.param(f"class_embedding_l{l + 1}", nn.initializers.normal(0.02), (n, self.embed_dim))
               for l, n in enumerate(self.learned_sizes)]
    adapted = [t + nn.Dense(self.embed_dim, use_bias=False, kernel_init=nn.initializers.zeros,
                            name=f"text_adapter_l{l + 1}")(t) for l, t in enumerate(texts)]
    conditioned = [adapted[0]]
    for level in range(1, self.num_levels):
      t = adapted[level]
      if self.use_text_conditioning:
        parent_text = jnp.take(adapted[level - 1], jnp.asarray(parents[level]), axis=0)
        t = t + nn.Dense(self.embed_dim, use_bias=False, kernel_init=nn.initializers.zeros,
                         name=f"text_condition_l{level + 1}")(parent_text)
      conditioned.append(t)
    return [_normalize(t) for t in conditioned]

  @nn.compact
  def __call__(self, features: jax.Array, frame_mask: jax.Array, parents: Sequence[np.ndarray],
               texts: Sequence[jax.Array] | None = None, *, deterministic: bool = True) -> list[jax.Array]:
    """Logits per level.

    Args:
      features: [B, T, D_in]; frame_mask: [B, T] bool.
      parents: per level [N_l] int parent ids in level l - 1 (parents[0] unused).
      texts: per level [N_l, E] class texts; None in text-free mode.
      deterministic: no dropout when True.

    Returns:
      L arrays [B, N_l] float32.
    """
    h = TemporalEncoder(self.width, self.num_layers, self.num_heads, self.mlp_dim, self.dropout_rate,
                        name="encoder")(features, frame_mask, deterministic)
    z = [nn.Dense(self.embed_dim, name=f"head_l{l + 1}")(h) for l in range(self.num_levels)]
    if self.use_units:
      updated = list(z)
      for level in range(1, self.num_levels):  # One unit per direction between levels level - 1 and level.
        updated[level - 1] = updated[level - 1] + HierarchyUnit(name=f"f2c_l{level}")(z[level - 1], z[level])
        updated[level] = updated[level] + HierarchyUnit(name=f"c2f_l{level + 1}")(z[level], z[level - 1])
      z = updated
    class_texts = self.class_texts(texts, parents)
    log_scale = self.param("log_logit_scale", nn.initializers.constant(np.log(self.logit_scale_init)), ())
    scale = jnp.exp(jnp.minimum(log_scale, np.log(self.logit_scale_max)))
    return [scale * _normalize(zl) @ tl.T for zl, tl in zip(z, class_texts)]
