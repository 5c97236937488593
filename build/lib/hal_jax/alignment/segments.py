"""Frame predictions at the raw frame rate: linear upsampling of downsampled logits (spec hal_atba.md §9).

ATBA resizes the frame logits of the T_v valid downsampled steps to the raw length with PyTorch's
`interpolate(mode='linear', align_corners=False)` and takes the arg-max. For output frame x:

  u = max(0, (x + 0.5) T_v / T_raw - 0.5),  i0 = min(floor(u), T_v - 1),  i1 = min(i0 + 1, T_v - 1),
  λ = clip(u - i0, 0, 1),  value = (1 - λ) F[i0] + λ F[i1],

evaluated in float32 in the same order as PyTorch's CPU kernel (scale = float(T_v) / T_raw first), on the host:
raw lengths vary per video. Frame labels <-> segments conversions live in hal_jax/data/segmentation_formats.py.
"""

from __future__ import annotations

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
