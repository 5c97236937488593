"""Input pipeline for weakly-supervised action localization (AHLM, HAAN): video-level labels, snippet features.

Turns a `LocalizationDataset` (features ``[T_v, D]`` per video, one row per snippet, in memory or read lazily from
files) into fixed-shape batches:

```
features      [B, T, D] float32  snippet features, zero on padding
frame_mask    [B, T]    bool     True on the num_frames valid steps of each video
num_frames    [B]       int32    valid steps (min(T_v, T) in training, T_v at test); 0 on padding videos
video_labels  [B, C]    float32  multi-hot of the classes annotated in the video (the only supervision)
batch_mask    [B]       bool     False on padding videos of an epoch's last batch
video_index   [B]       int32    index into dataset.videos, -1 on padding videos
```

`B` is the global batch size on device and ``B / process_count`` on each host. Design as in
`hal_jax.data.segmentation_pipeline`; order, resume, multi-host slices and streaming are the shared
`hal_jax.data.batching`:

* Training (spec ahlm.md section 4, "snippet sampling"): every batch has exactly `train_length` steps. A longer
  video is cut into `train_length` equal bins (bin k = [floor(k T_v / T), floor((k + 1) T_v / T))) and one uniform
  random snippet is taken per bin, order kept; a shorter one is zero padded. The draw comes from
  ``np.random.default_rng((seed, stream, epoch, video_index))``: new every epoch, a pure function of its arguments.
* Test: all snippets, padded to the smallest of `bucket_lengths` that holds the batch's longest video (one compile
  per bucket), in dataset order.
* Training order is ``default_rng((seed, stream, epoch)).permutation(num_videos)``, the last partial batch is filled
  with padding videos, and host p of P builds rows ``[p B/P, (p+1) B/P)`` of every global batch.
* tf.data builds batches in a parallel, order-preserving map with prefetch; nothing random comes from TensorFlow,
  and `batch` builds the same batches without it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hal_jax.data import batching
from hal_jax.data.localization_formats import LocalizationDataset
from hal_jax.errors import ConfigError, DataError

# Random stream of the snippet draws, independent of the order's (batching.SHUFFLE_STREAM) and of the segmentation
# pipeline's frame draws (2) under the one seed.
_SNIPPET_STREAM = 3

# name -> dtype of the batch dict, in the order tf.numpy_function returns the arrays.
_BATCH_DTYPES = {
    "features": np.float32,
    "frame_mask": np.bool_,
    "num_frames": np.int32,
    "video_labels": np.float32,
    "batch_mask": np.bool_,
    "video_index": np.int32,
}
# The entries whose axis 1 is time (its length varies between test batches).
_TIME_KEYS = ("features", "frame_mask")


def binned_snippets(num_snippets: int, length: int, rng: np.random.Generator) -> np.ndarray:
  """Training snippets of a video (spec ahlm.md section 4): [min(num_snippets, length)] int64, increasing.

  Args:
    num_snippets: T_v, the video's snippets.
    length: T, the training length.
    rng: the draw's generator.
  """
  if num_snippets <= length:
    return np.arange(num_snippets, dtype=np.int64)
  edges = (np.arange(length + 1, dtype=np.int64) * num_snippets) // length  # strictly increasing as T_v > T
  return rng.integers(edges[:-1], edges[1:])


class LocalizationPipeline(batching.BatchPipeline):
  """Fixed-shape, resumable batches of one localization split (module docstring for the batch dict)."""

  _batch_dtypes = _BATCH_DTYPES
  _time_keys = _TIME_KEYS

  def __init__(self,
               dataset: LocalizationDataset,
               *,
               batch_size: int,
               train: bool,
               train_length: int | None = None,
               bucket_lengths: Sequence[int] = (),
               seed: int = 0,
               process_index: int | None = None,
               process_count: int | None = None,
               num_devices: int | None = None):
    """Validates the split against the static shapes; raises before any training starts.

    Args:
      dataset: the split, features ``[T_v, D]`` per video.
      batch_size: global batch size B over all hosts and devices.
      train: binned random snippets and a shuffled order per epoch, else all snippets in dataset order.
      train_length: T of training batches (750 THUMOS14, 150 ActivityNet); required when `train`.
      bucket_lengths: the static padded lengths of test batches (see `batching.default_buckets`); required when not
        `train`.
      seed: the run's seed (``config.seed``), >= 0.
      seed: the run's seed (``config.seed``), in [0, 2**32).

    Raises:
      ConfigError: a bad argument, or a test video longer than the largest bucket.
      DataError: an empty split or malformed features.
    """
    super().__init__(dataset, batch_size=batch_size, train=train, seed=seed, process_index=process_index,
                     process_count=process_count, num_devices=num_devices)
    if train and (train_length is None or train_length < 1):
      raise ConfigError("train_length", f"must be >= 1 for a training pipeline, got {train_length}")
    self.num_classes = dataset.label_map.num_classes
    self.feature_dim = self._check_videos()

    self._lengths = np.array([len(v.features) for v in dataset.videos], np.int64)
    # Training takes at most `train_length` binned snippets per video, so every video fits the one bucket.
    self._num_frames = np.minimum(self._lengths, train_length) if train else self._lengths
    self.set_buckets([train_length] if train else bucket_lengths, self._num_frames, "snippets")
    self._video_labels = np.zeros((len(dataset.videos), self.num_classes), np.float32)
    for i, video in enumerate(dataset.videos):
      self._video_labels[i, video.labels] = 1.0

  def _check_videos(self) -> int:
    """Checks features and labels of every video against the static shapes; returns D."""
    root, feature_dim = self.dataset.root, None
    for video in self.dataset.videos:
      features = video.features
      feature_dim = batching.check_features(root, video.name, features, feature_dim)
      labels = np.asarray(video.labels)
      if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
        raise DataError(root, f"video {video.name!r}: class ids must be in [0, {self.num_classes})")
    return feature_dim

  def _shapes(self, length: int) -> dict[str, tuple[int, ...]]:
    b = self.batch_size
    return {"features": (b, length, self.feature_dim), "frame_mask": (b, length), "num_frames": (b,),
            "video_labels": (b, self.num_classes), "batch_mask": (b,), "video_index": (b,)}

  def feature_rows(self, epoch: int, video_index: int) -> np.ndarray:
    """Snippets (feature rows) of video `video_index` in `epoch`: [num_frames] int64 (all of them at test).

    Named like `SegmentationPipeline.feature_rows` so that code reading true per-step latents (hal_jax.latent_probe)
    serves both pipelines.
    """
    if not self.train:
      return np.arange(self._lengths[video_index], dtype=np.int64)
    rng = np.random.default_rng((self.seed, _SNIPPET_STREAM, epoch, video_index))
    return binned_snippets(int(self._lengths[video_index]), self.bucket_lengths[0], rng)

  def _build(self, order: np.ndarray, epoch: int, batch_index: int) -> dict[str, np.ndarray]:
    """The local batch dict of the module docstring; `order` is `epoch_order(epoch)`. Thread-safe: it only reads."""
    length, local = self._local_rows(order, batch_index)
    real = local >= 0
    safe = np.where(real, local, 0)  # Padding rows gather video 0's row and are overwritten below.
    features = self._buffers.zeros((self.local_batch_size, length, self.feature_dim), np.float32)
    for row, video_index in enumerate(local):
      if video_index >= 0:
        snippets = self.feature_rows(epoch, int(video_index))
        self.dataset.videos[video_index].features.take(snippets, axis=0, out=features[row, :len(snippets)],
                                                       mode="clip")
    num_frames = np.where(real, self._num_frames[safe], 0).astype(np.int32)
    return {
        "features": features,
        "frame_mask": np.arange(length) < num_frames[:, None],
        "num_frames": num_frames,
        "video_labels": np.where(real[:, None], self._video_labels[safe], 0.0).astype(np.float32),
        "batch_mask": real,
        "video_index": local.astype(np.int32),
    }
