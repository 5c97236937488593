"""Banded (pyramid local) self-attention over [class tokens; frames], with cost linear in the number of frames.

The attention pattern is ATBA's (spec hal_atba.md §4.3): for a layer with radius r,

* a frame query sees the valid frames within r steps of it and every class token;
* a class-token query sees every class token and every valid frame;
* padded frames are never keys.

ATBA materialises a dense (C+T)×(C+T) mask; here frame queries are processed in blocks of W ≥ r frames, each block
attending to itself, to the r frames of each neighbouring block that are within the band, and to the C class
keys, with one joint softmax over all of them (spec §14.1). Time and memory are O(T·(W + 2r + C)) per layer instead
of O(T²). When the band covers the whole sequence (2r+1 ≥ T) the dense form is used, which is then no more expensive.

One deliberate difference from ATBA: ATBA opens the whole row of a padded frame query so that no row is fully masked.
Here padded queries keep the ordinary key mask; their rows are never empty because class tokens are always valid, and
their outputs are masked out of every loss and metric anyway. Valid outputs are unaffected (they never read padded
keys), so they do not depend on the amount of padding.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hal_jax import precision
from hal_jax.models import dropout as dropout_lib

# Blocks narrower than this make the per-block matmuls too small to be efficient. Measured on CPU (d=256, C=48,
# T=512..8192, forward+backward of the attention alone): minimum 8 was the fastest or within noise of it for radii
# 4..16 among {1, 4, 8, 16, 32, 64}; for radius 1 a loop over the 3 shifted keys was ~1.5x faster than any block size,
# but that is one cheap layer and not worth a second kernel.
DEFAULT_MIN_BLOCK_SIZE = 8


def _masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis where only `mask` entries take part (each row must keep one).

  `where` with -inf (not a large negative constant) makes masked probabilities exactly 0, so padded keys contribute
  nothing even if their values are huge, and their logits receive exactly zero gradient. With a bfloat16 compute
  dtype the softmax itself runs in float32.
  """
  return precision.softmax_float32(jnp.where(mask, logits, -jnp.inf), axis=-1)


def _attend(
    logits: list[jax.Array], masks: list[jax.Array], values: list[tuple[str, jax.Array]], out_spec: str,
    dropout_rate: float, dropout_rng: jax.Array | None) -> jax.Array:
  """One joint softmax over several key groups, then the probability-weighted sum of each group's values.

  The groups' logits are concatenated for the softmax (small: [..., W + 2r + C] per query), then split again. A
  softmax that shares the row maximum and normaliser across separate groups avoids that copy, but with it 1- and
  4-device runs drifted apart by 1e-5 within 12 steps (against 1e-7 with this form), so the concatenated form stays.

  Args:
    logits: per key group, logits with the keys on the last axis; all share the leading (query) axes.
    masks: per key group, a boolean mask broadcastable to its logits.
    values: per key group, (einsum spec "<probs>,<values>", values array).
    out_spec: the einsum output spec, shared by all groups.
    dropout_rate: dropout on the attention probabilities.
    dropout_rng: PRNG key for that dropout, None for no dropout.

  Returns:
    the attention output, shaped by `out_spec`.
  """
  sizes = [l.shape[-1] for l in logits]
  joint_mask = jnp.concatenate([jnp.broadcast_to(m, l.shape) for m, l in zip(masks, logits)], axis=-1)
  probs = _masked_softmax(jnp.concatenate(logits, axis=-1), joint_mask)
  probs = dropout_lib.dropout(probs, dropout_rate, dropout_rng)
  parts = jnp.split(probs, np.cumsum(sizes)[:-1], axis=-1)
  return functools.reduce(jnp.add, [jnp.einsum(f"{spec}->{out_spec}", p, v) for p, (spec, v) in zip(parts, values)])


def block_size(radius: int, num_frames: int, min_block_size: int = DEFAULT_MIN_BLOCK_SIZE) -> int:
  """Frames per query block: at least the radius, so the band never reaches beyond the neighbouring blocks."""
  return min(max(radius, min_block_size), num_frames)


def _frame_queries_blocked(
    q: jax.Array, k: jax.Array, v: jax.Array, class_k: jax.Array, class_v: jax.Array, frame_mask: jax.Array,
    radius: int, width: int, dropout_rate: float, dropout_rng: jax.Array | None, causal: bool = False) -> jax.Array:
  """Banded attention of frame queries, blocked; see `banded_attention` for shapes. Returns [B, T, H, dh].

  A block of W >= r queries reads four key groups in one softmax: its own W frames, the last r frames of the
  previous block, the first r frames of the next block (the only neighbours within the band) and the class tokens.
  Only those 2r neighbour frames are copied, never a [3W] context per block. Causal: only the first two groups,
  keys at or before the query.
  """
  batch, frames, heads, head_dim = q.shape
  num_blocks = -(-frames // width)
  extra = num_blocks * width - frames

  def blocks(x):  # [B, T, ...] -> [B, nb, W, ...]; the tail is padded (queries there are sliced off below).
    x = jnp.pad(x, [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2))
    return x.reshape((batch, num_blocks, width) + x.shape[2:])

  def previous_tail(x):  # [B, nb, W, ...] -> [B, nb, r, ...]: the previous block's last r rows (none for block 0).
    return jnp.pad(x[:, :-1, width - radius:], [(0, 0), (1, 0)] + [(0, 0)] * (x.ndim - 2))

  def next_head(x):  # [B, nb, W, ...] -> [B, nb, r, ...]: the next block's first r rows (none for the last).
    return jnp.pad(x[:, 1:, :radius], [(0, 0), (0, 1)] + [(0, 0)] * (x.ndim - 2))

  q_blocks, k_blocks, v_blocks, valid = blocks(q), blocks(k), blocks(v), blocks(frame_mask)
  # Query i of a block sits at offset i; own key j at j, previous-tail key j at j - r, next-head key j at W + j.
  query_pos = np.arange(width)[:, None]
  near = np.arange(radius)[None, :]
  offset = query_pos - np.arange(width)[None, :]  # query minus key position within the block
  bands = (np.abs(offset) <= radius, near >= query_pos,
           near <= radius - width + query_pos)  # [W, W], [W, r], [W, r]; static
  keys = (k_blocks, previous_tail(k_blocks), next_head(k_blocks))
  values = (v_blocks, previous_tail(v_blocks), next_head(v_blocks))
  key_valid = (valid, previous_tail(valid), next_head(valid))
  masks = [band & ok[:, :, None, None, :] for band, ok in zip(bands, key_valid)]
  if causal:
    # Past keys only, and no class tokens (they summarise the whole video). A padded query keeps its own key, so
    # its row is never empty (valid queries never read padding: it only follows them).
    keys, values = keys[:2], values[:2]
    masks = [masks[0] & (offset >= 0) | (offset == 0), masks[1]]
  logits = [jnp.einsum("bnqhd,bnkhd->bnhqk", q_blocks, key) for key in keys]
  value_specs = [("bnhqk,bnkhd", value) for value in values]
  if not causal:
    logits.append(jnp.einsum("bnqhd,bchd->bnhqc", q_blocks, class_k))
    masks.append(np.ones((1,) * 5, bool))
    value_specs.append(("bnhqc,bchd", class_v))
  out = _attend(logits, masks, value_specs, "bnqhd", dropout_rate, dropout_rng)
  return out.reshape(batch, num_blocks * width, heads, head_dim)[:, :frames]


def _frame_queries_dense(
    q: jax.Array, k: jax.Array, v: jax.Array, class_k: jax.Array, class_v: jax.Array, frame_mask: jax.Array,
    radius: int, dropout_rate: float, dropout_rng: jax.Array | None, causal: bool = False) -> jax.Array:
  """Same as `_frame_queries_blocked` with a full [T, T] band mask; for short sequences. Returns [B, T, H, dh]."""
  positions = np.arange(q.shape[1])
  offset = positions[:, None] - positions[None, :]  # query minus key, [T, T], static
  in_band = np.abs(offset) <= radius
  frame_logits = jnp.einsum("bthd,bshd->bhts", q, k)
  if causal:  # As in the blocked form: past keys, no class tokens, a padded query keeps its own key.
    mask = in_band & (offset >= 0) & frame_mask[:, None, None, :] | (offset == 0)
    return _attend([frame_logits], [mask], [("bhts,bshd", v)], "bthd", dropout_rate, dropout_rng)
  class_logits = jnp.einsum("bthd,bchd->bhtc", q, class_k)
  return _attend(
      [frame_logits, class_logits],
      [in_band & frame_mask[:, None, None, :], np.ones((1,) * 4, bool)],
      [("bhts,bshd", v), ("bhtc,bchd", class_v)], "bthd", dropout_rate, dropout_rng)


def _class_queries(
    class_q: jax.Array, k: jax.Array, v: jax.Array, class_k: jax.Array, class_v: jax.Array, frame_mask: jax.Array,
    dropout_rate: float, dropout_rng: jax.Array | None) -> jax.Array:
  """Class-token queries over all C + T keys with the key-padding mask (O(C·T)). Returns [B, C, H, dh]."""
  class_logits = jnp.einsum("bchd,behd->bhce", class_q, class_k)
  frame_logits = jnp.einsum("bchd,bthd->bhct", class_q, k)
  return _attend(
      [class_logits, frame_logits],
      [np.ones((1,) * 4, bool), frame_mask[:, None, None, :]],
      [("bhce,behd", class_v), ("bhct,bthd", v)], "bchd", dropout_rate, dropout_rng)


def banded_attention(
    class_query: jax.Array,
    class_key: jax.Array,
    class_value: jax.Array,
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    frame_mask: jax.Array,
    *,
    radius: int,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    min_block_size: int = DEFAULT_MIN_BLOCK_SIZE,
    causal: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Scaled dot-product attention with ATBA's pyramid mask over [class tokens; frames], linear in the frames.

  Class tokens and frames come as separate arrays (C class tokens, T frames), so nothing is sliced out of or
  concatenated into one token axis.

  Args:
    class_query, class_key, class_value: [batch, C, heads, head_dim]; queries already multiplied by
      head_dim**-0.5 (the caller folds that scale into its query projection, which is cheaper than scaling here).
    query, key, value: [batch, T, heads, head_dim], the frames.
    frame_mask: [batch, T] bool, True on valid (non-padded) frames.
    radius: frames attend to frames at most this many steps away (2**layer in the pyramid).
    dropout_rate: dropout on the attention probabilities.
    dropout_rng: PRNG key for that dropout; None means deterministic (eval).
    min_block_size: smallest query block of the blocked path (a speed knob only; results do not depend on it).
    causal: online mode: a frame reads only the frames within the band at or before it, and no class token (class
      tokens summarise the whole video; they still read every valid frame, for video-level losses only), so frame
      outputs up to t never depend on anything after t.

  Returns:
    (class outputs [batch, C, heads, head_dim], frame outputs [batch, T, heads, head_dim]). Rows of padded frames
    are finite but meaningless.
  """
  frames = frame_mask.shape[1]
  if class_query.shape[1] < 1:
    # Frame rows with no valid key in the band would otherwise be empty; class tokens guarantee a key per row.
    raise ValueError(f"banded_attention needs at least one class token; got {class_query.shape[1]}")
  frame_rng = class_rng = None
  if dropout_rng is not None:
    frame_rng, class_rng = jax.random.split(dropout_rng)
  if 2 * radius + 1 >= frames:
    frame_out = _frame_queries_dense(query, key, value, class_key, class_value, frame_mask, radius, dropout_rate,
                                     frame_rng, causal)
  else:
    width = block_size(radius, frames, min_block_size)
    frame_out = _frame_queries_blocked(query, key, value, class_key, class_value, frame_mask, radius, width,
                                       dropout_rate, frame_rng, causal)
  class_out = _class_queries(class_query, key, value, class_key, class_value, frame_mask, dropout_rate, class_rng)
  return class_out, frame_out
