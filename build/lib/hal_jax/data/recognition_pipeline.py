"""Batches of trimmed clips for recognition: the batch builder on top of `hal_jax.data.batching.BatchPipeline`.

Every clip becomes `num_frames` frames by segment-based sampling (spec hclip.md §5): its T_raw frames are split into
`num_frames` equal bins, and a bin contributes one frame, drawn at random per (seed, epoch, clip) in training and the
bin centre in evaluation. A clip shorter than `num_frames` keeps all its frames, and the rest is padding
(``frame_mask`` False). The bins are fixed at load time, so every batch has the static shape [B, num_frames, D].

Batch: ``features`` [B, T, D] float32, ``frame_mask`` [B, T] bool, ``labels`` [B, L] int32 (-1 on padding clips),
``batch_mask`` [B] bool, ``video_index`` [B] int32 (the clip's position in its split, -1 on padding).
"""

from __future__ import annotations

import numpy as np

from hal_jax.data import batching
from hal_jax.data import recognition_formats
from hal_jax.errors import ConfigError

# Random stream of the training frame draws (the epoch order uses batching.SHUFFLE_STREAM; segmentation 2,
# localization 3).
FRAME_STREAM = 4


def bin_edges(length: int, num_frames: int) -> np.ndarray:
  """[num_frames + 1] int64 bin boundaries over `length` >= num_frames frames (bin k is [edges[k], edges[k+1]))."""
  return (np.arange(num_frames + 1) * length) // num_frames


def feature_rows(length: int, num_frames: int, rng: np.random.Generator | None) -> np.ndarray:
  """The frames a clip of `length` frames contributes: [min(length, num_frames)] int64, increasing.

  One per bin (random with `rng`, else the bin centre); all frames of a clip shorter than `num_frames`.
  """
  if length <= num_frames:
    return np.arange(length)
  edges = bin_edges(length, num_frames)
  if rng is None:
    return (edges[:-1] + edges[1:] - 1) // 2
  return rng.integers(edges[:-1], edges[1:])


class RecognitionPipeline(batching.BatchPipeline):
  """Fixed-shape batches of one split of clips (module docstring)."""

  def __init__(self, dataset: recognition_formats.RecognitionDataset, *, batch_size: int, train: bool, seed: int,
               num_frames: int, process_index: int | None = None, process_count: int | None = None,
               num_devices: int | None = None):
    super().__init__(dataset, batch_size=batch_size, train=train, seed=seed, process_index=process_index,
                     process_count=process_count, num_devices=num_devices)
    if num_frames < 1:
      raise ConfigError("config.num_frames", f"must be >= 1, got {num_frames}")
    self.num_frames = num_frames
    self.num_levels = dataset.taxonomy.num_levels
    self.feature_dim = dataset.videos[0].features.shape[1]
    # Clips are resampled to `num_frames` (fewer rows only when a clip is shorter), so one bucket holds them all.
    self.set_buckets([num_frames], np.minimum([len(c.features) for c in dataset.videos], num_frames), "frames")
    self._batch_dtypes = {"features": np.float32, "frame_mask": np.bool_, "labels": np.int32,
                          "batch_mask": np.bool_, "video_index": np.int32}
    self._time_keys = ()

  def _shapes(self, length: int) -> dict[str, tuple[int, ...]]:
    del length  # One static length.
    b, t = self.batch_size, self.num_frames
    return {"features": (b, t, self.feature_dim), "frame_mask": (b, t), "labels": (b, self.num_levels),
            "batch_mask": (b,), "video_index": (b,)}

  def _build(self, order: np.ndarray, epoch: int, batch_index: int) -> dict[str, np.ndarray]:
    _, rows = self._local_rows(order, batch_index)
    size, t = len(rows), self.num_frames
    features = self._buffers.zeros((size, t, self.feature_dim), np.float32)
    frame_mask = np.zeros([size, t], bool)
    labels = np.full([size, self.num_levels], -1, np.int32)
    for row, video in enumerate(rows):
      if video < 0:
        continue
      clip = self.dataset.videos[video]
      rng = np.random.default_rng((self.seed, FRAME_STREAM, epoch, int(video))) if self.train else None
      picked = feature_rows(len(clip.features), t, rng)
      features[row, :len(picked)] = clip.features[picked]
      frame_mask[row, :len(picked)] = True
      labels[row] = clip.labels
    return {"features": features, "frame_mask": frame_mask, "labels": labels, "batch_mask": rows >= 0,
            "video_index": rows.astype(np.int32)}
