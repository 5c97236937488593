"""Frame predictions at the raw frame rate: linear upsampling of downsampled logits (spec hal_atba.md §9).

ATBA resizes the frame logits of the T_v valid downsampled steps to the raw length with PyTorch's
`interpolate(mode='linear', align_corners=False)` and takes the arg-max. For output frame x:

  u = max(0, (x + 0.5) T_v / T_raw - 0.5),  i0 = min(floor(u), T_v - 1),  i1 = min(i0 + 1, T_v - 1),
  λ = clip(u - i0, 0, 1),  value = (1 - λ) F[i0] + λ F[i1],

evaluated in float32 in the same order as PyTorch's CPU kernel (scale = float(T_v) / T_raw first). The host version
serves prediction (raw lengths vary per video); the jnp version gives a static [B, T_out, C] array for on-device use.
Frame labels <-> segments conversions live in hal_jax/data/formats.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _check_lengths(num_frames: int, raw_length: int, padded_frames: int) -> None:
  if not 1 <= num_frames <= padded_frames:
    raise ValueError(f"num_frames must be in [1, {padded_frames}], got {num_frames}")
  if raw_length < 1:
    raise ValueError(f"raw_length must be >= 1, got {raw_length}")


def _source_weights(num_frames: int, raw_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Gather indices i0, i1 [raw_length] int64 and weight λ [raw_length] float32 of the half-pixel formula."""
  scale = np.float32(num_frames) / np.float32(raw_length)
  position = scale * (np.arange(raw_length, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
  position = np.maximum(position, np.float32(0.0))
  lower = np.minimum(np.floor(position).astype(np.int64), num_frames - 1)
  weight = np.clip(position - lower.astype(np.float32), np.float32(0.0), np.float32(1.0))
  upper = np.minimum(lower + 1, num_frames - 1)
  return lower, upper, weight


def _upsample_one(logits: np.ndarray, num_frames: int, raw_length: int) -> np.ndarray:
  _check_lengths(num_frames, raw_length, logits.shape[0])
  values = np.asarray(logits[:num_frames], np.float32)
  lower, upper, weight = _source_weights(num_frames, raw_length)
  weight = weight[:, None]
  return (np.float32(1.0) - weight) * values[lower] + weight * values[upper]


def upsample_logits(logits: np.ndarray, num_frames, raw_length) -> np.ndarray | list[np.ndarray]:
  """Linear interpolation of frame logits to the raw frame rate (host side, NumPy).

  Args:
    logits: [T, C] one video or [B, T, C] a padded batch of downsampled frame logits.
    num_frames: int (or [B] ints): valid downsampled frames T_v; later rows are padding and are ignored.
    raw_length: int (or [B] ints): raw length T_raw of each video.

  Returns:
    [T_raw, C] float32 for one video, or a list of B such arrays (raw lengths differ per video).
  """
  logits = np.asarray(logits)
  if logits.ndim == 2:
    return _upsample_one(logits, int(num_frames), int(raw_length))
  if logits.ndim != 3:
    raise ValueError(f"logits must be [T, C] or [B, T, C], got shape {logits.shape}")
  num_frames = np.asarray(num_frames).reshape(-1)
  raw_length = np.asarray(raw_length).reshape(-1)
  return [_upsample_one(video, int(valid), int(raw)) for video, valid, raw in zip(logits, num_frames, raw_length)]


def upsample_logits_padded(logits: jax.Array, num_frames: jax.Array, raw_length: jax.Array, *,
                           out_length: int) -> jax.Array:
  """The same interpolation in jnp with a static output length (jittable).

  Args:
    logits: [B, T, C] downsampled frame logits.
    num_frames: [B] int, valid downsampled frames (>= 1 for real videos).
    raw_length: [B] int, raw lengths, at most `out_length` (e.g. T times the sample rate).
    out_length: static number of output frames.

  Returns:
    [B, out_length, C] float32 upsampled logits, zero on frames x >= raw_length.
  """
  num_frames = jnp.maximum(jnp.asarray(num_frames, jnp.int32), 1)[:, None]
  raw_length = jnp.asarray(raw_length, jnp.int32)[:, None]
  scale = num_frames.astype(jnp.float32) / jnp.maximum(raw_length, 1).astype(jnp.float32)
  frames = jnp.arange(out_length)[None, :]
  position = jnp.maximum(scale * (frames.astype(jnp.float32) + 0.5) - 0.5, 0.0)
  lower = jnp.minimum(jnp.floor(position).astype(jnp.int32), num_frames - 1)
  weight = jnp.clip(position - lower.astype(jnp.float32), 0.0, 1.0)[..., None]
  upper = jnp.minimum(lower + 1, num_frames - 1)
  values = logits.astype(jnp.float32)

  def gather(index):
    return jnp.take_along_axis(values, index[..., None], axis=1)

  upsampled = (1.0 - weight) * gather(lower) + weight * gather(upper)
  return jnp.where((frames < raw_length)[..., None], upsampled, 0.0)
