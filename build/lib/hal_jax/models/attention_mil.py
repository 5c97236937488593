"""AHLM's EFC branch: foreground / context / background attention over a class activation sequence.

Spec: ../shared/specs/ahlm.md section 2.3 (a project choice modelled on ACM-Net's three-branch design, which the
paper cites). All layers are temporal 1-D convolutions with "same" padding over [B, T, D]:

  E = Dropout(ReLU(Conv_k3(X)))                                embedding, [B, T, embed_dim]
  a = softmax(Conv_k1(Dropout(ReLU(Conv_k3(E)))))              attention (fg, ct, bg), [B, T, 3], rows sum to 1
  M = Conv_k1(Dropout(E))                                      class activation sequence (CAS), [B, T, C + 1]

The last CAS column is the background class. Each branch b pools M^b_t = a^b_t M_t into a video logit z^b by the
mean of its top-k_b snippets per class (`branch_video_logits`), k_fg = max(1, floor(T_v / 8)) and k_ct = k_bg =
max(1, floor(T_v / 3)).

Masking: the features are zeroed on padding and so is E before the second k=3 convolution, so the last valid
snippet sees the same zero "same"-padding as an unpadded video; padding never enters a top-k.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from hal_jax import precision
from hal_jax.models import dropout as dropout_lib

# Branch order of the attention channels and of `branch_video_logits`' output.
FOREGROUND, CONTEXT, BACKGROUND = 0, 1, 2
# Top-k divisors of T_v per branch (spec section 2.3): foreground T_v / 8, context and background T_v / 3.
TOPK_DIVISORS = (8, 3, 3)


@flax.struct.dataclass
class MILOutputs:
  """EFC outputs.

  Attributes:
    cas_logits: [B, T, C + 1] class activation sequence M (last column: background).
    attention: [B, T, 3] softmax over (foreground, context, background).
  """
  cas_logits: jax.Array
  attention: jax.Array


class AttentionMIL(nn.Module):
  """The EFC network (module docstring). Widths default to the spec's (2048 embedding, 512 attention hidden).

  Attributes:
    num_classes: C, the action classes (the CAS has C + 1 columns).
    embed_dim: width of the embedding E.
    attention_dim: hidden width of the attention head.
    dropout_rate: dropout after the embedding, in the attention head and before the classifier (0.7).
  """
  num_classes: int
  embed_dim: int = 2048
  attention_dim: int = 512
  dropout_rate: float = 0.7

  @nn.compact
  def __call__(self, features: jax.Array, mask: jax.Array, *, deterministic: bool) -> MILOutputs:
    """Args: features [B, T, D]; mask [B, T] bool; deterministic: no dropout (needs a "dropout" rng otherwise)."""
    valid = mask[..., None].astype(features.dtype)
    embedding = nn.relu(nn.Conv(self.embed_dim, (3,), padding="SAME", name="embedding")(features * valid))
    embedding = dropout_lib.Dropout(self.dropout_rate)(embedding, deterministic=deterministic) * valid
    hidden = nn.relu(nn.Conv(self.attention_dim, (3,), padding="SAME", name="attention_hidden")(embedding))
    hidden = dropout_lib.Dropout(self.dropout_rate)(hidden, deterministic=deterministic)
    attention = precision.softmax_float32(nn.Conv(3, (1,), name="attention_out")(hidden), axis=-1)
    classifier_input = dropout_lib.Dropout(self.dropout_rate)(embedding, deterministic=deterministic)
    cas_logits = nn.Conv(self.num_classes + 1, (1,), name="classifier")(classifier_input)
    return MILOutputs(cas_logits=cas_logits, attention=attention)


def topk_counts(num_frames: jax.Array, divisor: int) -> jax.Array:
  """k = max(1, floor(T_v / divisor)): [B] int32 from num_frames [B]."""
  return jnp.maximum(num_frames // divisor, 1).astype(jnp.int32)


def masked_topk_mean(values: jax.Array, mask: jax.Array, k: jax.Array, max_k: int) -> jax.Array:
  """Mean of the k largest valid values over time, per video and channel.

  A per-video k under static shapes: take the top `max_k` (static), then average the ranks below k.

  Args:
    values: [B, T, K].
    mask: [B, T] bool.
    k: [B] int, 1 <= k <= max_k.
    max_k: static upper bound of k (<= T).
  Returns:
    [B, K]; 0 for a video without valid snippets.
  """
  lowest = jnp.finfo(values.dtype).min
  masked = jnp.where(mask[..., None], values, lowest)
  top, _ = jax.lax.top_k(jnp.swapaxes(masked, 1, 2), max_k)  # [B, K, max_k], descending
  taken = (jnp.arange(max_k) < k[:, None, None]) & (top > lowest)
  return jnp.sum(jnp.where(taken, top, 0.0), axis=-1) / k[:, None].astype(values.dtype)


def branch_video_logits(outputs: MILOutputs, mask: jax.Array, num_frames: jax.Array) -> jax.Array:
  """Video logits z^b of the three branches (spec section 2.3).

  Args:
    outputs: the EFC outputs, CAS [B, T, C + 1] and attention [B, T, 3].
    mask: [B, T] bool.
    num_frames: [B] int, T_v.
  Returns:
    [B, 3, C + 1] top-k means of a^b_t M_t, branches in the order FOREGROUND, CONTEXT, BACKGROUND.
  """
  length = mask.shape[1]
  logits = []
  for branch, divisor in enumerate(TOPK_DIVISORS):
    weighted = outputs.attention[..., branch:branch + 1] * outputs.cas_logits
    logits.append(masked_topk_mean(weighted, mask, topk_counts(num_frames, divisor), max(1, length // divisor)))
  return jnp.stack(logits, axis=1)
