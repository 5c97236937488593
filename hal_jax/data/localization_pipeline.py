"""Input pipeline for weakly-supervised action localization (AHLM, HAAN): video-level labels, snippet features.

Turns an in-memory `LocalizationDataset` (features ``[T_v, D]`` per video, one row per snippet) into fixed-shape
batches:

```
features      [B, T, D] float32  snippet features, zero on padding
frame_mask    [B, T]    bool     True on the num_frames valid steps of each video
num_frames    [B]       int32    valid steps (min(T_v, T) in training, T_v at test); 0 on padding videos
video_labels  [B, C]    float32  multi-hot of the classes annotated in the video (the only supervision)
batch_mask    [B]       bool     False on padding videos of an epoch's last batch
video_index   [B]       int32    index into dataset.videos, -1 on padding videos
```

`B` is the global batch size on device and ``B / process_count`` on each host. Design as in
`hal_jax.data.pipeline` (same determinism, resume and multi-host rules):

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

from collections.abc import Iterator, Sequence

import jax
import numpy as np

# The tf.data plumbing (lazy TensorFlow import, aligned buffers, device prefetch) is shared with the segmentation
# pipeline so that TensorFlow stays confined to its module.
from hal_jax.data import pipeline as segmentation_pipeline
from hal_jax.data.detection_formats import LocalizationDataset
from hal_jax.errors import ConfigError, DataError

# Independent random streams under the one seed (distinct from each other; see hal_jax.data.pipeline).
_SHUFFLE_STREAM = 1
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


class LocalizationPipeline:
  """Fixed-shape, resumable batches of one localization split (module docstring for the batch dict)."""

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
      bucket_lengths: the static padded lengths of test batches (see `pipeline.default_buckets`); required when not
        `train`.
      seed: the run's seed (``config.seed``), >= 0.
      process_index, process_count, num_devices: as in `hal_jax.data.pipeline.SegmentationPipeline`.

    Raises:
      ConfigError: a bad argument, or a test video longer than the largest bucket.
      DataError: an empty split or malformed features.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    num_devices = jax.device_count() if num_devices is None else num_devices
    if seed < 0:
      raise ConfigError("seed", f"must be >= 0, got {seed}")
    if not 0 <= process_index < process_count:
      raise ConfigError("process_index", f"{process_index} is outside [0, {process_count})")
    if batch_size < 1 or batch_size % num_devices or batch_size % process_count:
      raise ConfigError("batch_size", f"{batch_size} must be a positive multiple of the number of devices "
                        f"({num_devices}) and of hosts ({process_count})")
    if train:
      if train_length is None or train_length < 1:
        raise ConfigError("train_length", f"must be >= 1 for a training pipeline, got {train_length}")
      buckets = [int(train_length)]
    else:
      buckets = sorted(set(int(b) for b in bucket_lengths))
      if not buckets or buckets[0] < 1:
        raise ConfigError("bucket_lengths", f"need at least one positive length, got {list(bucket_lengths)}")
    if not dataset.videos:
      raise DataError(dataset.root, "the split has no videos")

    self.dataset = dataset
    self.batch_size = batch_size
    self.train = train
    self.bucket_lengths = tuple(buckets)
    self.seed = seed
    self.process_index = process_index
    self.process_count = process_count
    self.local_batch_size = batch_size // process_count
    self.num_classes = dataset.label_map.num_classes
    self.feature_dim = self._check_videos()

    self._lengths = np.array([len(v.features) for v in dataset.videos], np.int64)
    self._num_frames = np.minimum(self._lengths, buckets[0]) if train else self._lengths
    self._bucket_index = np.searchsorted(np.array(buckets), self._num_frames)
    self._video_labels = np.zeros((len(dataset.videos), self.num_classes), np.float32)
    for i, video in enumerate(dataset.videos):
      self._video_labels[i, video.labels] = 1.0

  def _check_videos(self) -> int:
    """Checks features and labels of every video against the static shapes; returns D."""
    root, feature_dim = self.dataset.root, None
    for video in self.dataset.videos:
      features = video.features
      if features.ndim != 2 or len(features) == 0 or features.dtype != np.float32:
        raise DataError(root, f"video {video.name!r}: features must be float32 [T, D] with T >= 1, got "
                        f"{features.dtype} {features.shape}")
      if feature_dim is None:
        feature_dim = features.shape[1]
      elif features.shape[1] != feature_dim:
        raise DataError(root, f"video {video.name!r}: feature dim {features.shape[1]}, other videos have "
                        f"{feature_dim}")
      labels = np.asarray(video.labels)
      if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
        raise DataError(root, f"video {video.name!r}: class ids must be in [0, {self.num_classes})")
      if not self.train and len(features) > self.bucket_lengths[-1]:
        raise ConfigError("bucket_lengths", f"video {video.name!r} of {root} has {len(features)} snippets, more "
                          f"than the largest bucket {self.bucket_lengths[-1]}")
    return feature_dim

  @property
  def num_videos(self) -> int:
    return len(self.dataset.videos)

  @property
  def num_batches_per_epoch(self) -> int:
    """``ceil(num_videos / batch_size)``, the same for every epoch and host."""
    return -(-self.num_videos // self.batch_size)

  def batch_spec(self, length: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
    """Global shapes and dtypes of a batch padded to `length` (default: the largest bucket)."""
    length = self.bucket_lengths[-1] if length is None else length
    b = self.batch_size
    shapes = {"features": (b, length, self.feature_dim), "frame_mask": (b, length), "num_frames": (b,),
              "video_labels": (b, self.num_classes), "batch_mask": (b,), "video_index": (b,)}
    return {name: jax.ShapeDtypeStruct(shape, _BATCH_DTYPES[name]) for name, shape in shapes.items()}

  def epoch_order(self, epoch: int) -> np.ndarray:
    """Video indices of the epoch in batch order, -1 padded: [num_batches_per_epoch * batch_size] int64."""
    if self.train:
      order = np.random.default_rng((self.seed, _SHUFFLE_STREAM, epoch)).permutation(self.num_videos)
    else:
      order = np.arange(self.num_videos)
    padding = self.num_batches_per_epoch * self.batch_size - self.num_videos
    return np.concatenate([order, np.full(padding, -1, order.dtype)])

  def frame_indices(self, epoch: int, video_index: int) -> np.ndarray:
    """Snippets of video `video_index` in `epoch`: [num_frames] int64 (all of them at test).

    Named like `SegmentationPipeline.frame_indices` so that code reading true per-step latents (hal_jax.latent_probe)
    serves both pipelines.
    """
    if not self.train:
      return np.arange(self._lengths[video_index], dtype=np.int64)
    rng = np.random.default_rng((self.seed, _SNIPPET_STREAM, epoch, video_index))
    return binned_snippets(int(self._lengths[video_index]), self.bucket_lengths[0], rng)

  def batch(self, epoch: int, batch_index: int) -> dict[str, np.ndarray]:
    """This host's slice of global batch `batch_index` of `epoch`, built with NumPy (no tf.data)."""
    self._check_position(epoch, batch_index)
    if batch_index == self.num_batches_per_epoch:
      raise ValueError(f"batch index {batch_index} is past the last batch of the epoch")
    return self._build(self.epoch_order(epoch), epoch, batch_index)

  def _check_position(self, epoch: int, batch_index: int) -> None:
    if epoch < 0:
      raise ValueError(f"epoch must be >= 0, got {epoch}")
    if not 0 <= batch_index <= self.num_batches_per_epoch:
      raise ValueError(f"batch index {batch_index} is outside [0, {self.num_batches_per_epoch}]")

  def _build(self, order: np.ndarray, epoch: int, batch_index: int) -> dict[str, np.ndarray]:
    """The local batch; `order` is `epoch_order(epoch)`. Thread-safe: it only reads shared state."""
    rows = order[batch_index * self.batch_size:(batch_index + 1) * self.batch_size]
    # The bucket comes from the whole global batch so that every host pads to the same length.
    length = self.bucket_lengths[int(self._bucket_index[rows[rows >= 0]].max())]
    start = self.process_index * self.local_batch_size
    local = rows[start:start + self.local_batch_size]
    real = local >= 0
    safe = np.where(real, local, 0)  # Padding rows gather video 0's row and are overwritten below.
    features = segmentation_pipeline.aligned_zeros(
        (self.local_batch_size, length, self.feature_dim), np.float32)
    for row, video_index in enumerate(local):
      if video_index >= 0:
        snippets = self.frame_indices(epoch, int(video_index))
        np.take(self.dataset.videos[video_index].features, snippets, axis=0, out=features[row, :len(snippets)],
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

  def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This host's batches of `epoch` from `start_batch` on, through tf.data (parallel build + prefetch)."""
    self._check_position(epoch, start_batch)
    first = epoch * self.num_batches_per_epoch
    for _, _, batch in self._tf_stream(first + start_batch, first + self.num_batches_per_epoch):
      yield batch

  def stream(self, start_epoch: int = 0, start_batch: int = 0,
             num_epochs: int | None = None) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """The batches of consecutive epochs as one tf.data stream (prefetch runs across epoch boundaries).

    Args:
      start_epoch, start_batch: the resume position (the checkpoint's ``(epoch, batch_in_epoch)``).
      num_epochs: epochs to stream from `start_epoch` (the first one possibly partial); None: without end.

    Yields:
      ``(epoch, batch_index, batch)`` with host NumPy batch dicts as in `epoch_batches`.
    """
    self._check_position(start_epoch, start_batch)
    first = start_epoch * self.num_batches_per_epoch
    stop = None if num_epochs is None else first + num_epochs * self.num_batches_per_epoch
    yield from self._tf_stream(first + start_batch, stop)

  def global_batches(self, epoch: int, mesh: jax.sharding.Mesh, start_batch: int = 0,
                     device_prefetch: int = 2) -> Iterator[dict[str, jax.Array]]:
    """`epoch_batches` as global `jax.Array`s sharded on the mesh's ``'data'`` axis."""
    self._check_position(epoch, start_batch)
    first = epoch * self.num_batches_per_epoch
    positions = self._tf_stream(first + start_batch, first + self.num_batches_per_epoch)
    for _, _, batch in segmentation_pipeline.to_mesh(
        positions, mesh, device_prefetch):
      yield batch

  def global_stream(self, mesh: jax.sharding.Mesh, start_epoch: int = 0, start_batch: int = 0,
                    num_epochs: int | None = None,
                    device_prefetch: int = 2) -> Iterator[tuple[int, int, dict[str, jax.Array]]]:
    """`stream` as global `jax.Array`s sharded on ``'data'`` (see `global_batches` for `device_prefetch`)."""
    yield from segmentation_pipeline.to_mesh(
        self.stream(start_epoch, start_batch, num_epochs), mesh, device_prefetch)

  def _tf_stream(self, first: int, stop: int | None) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Batches at global positions ``first, first + 1, ... < stop`` (position = epoch * batches per epoch + batch)."""
    yield from segmentation_pipeline.tf_batch_stream(
        lambda epoch, batch_index: self._build(self.epoch_order(epoch), epoch, batch_index), first=first, stop=stop,
        per_epoch=self.num_batches_per_epoch, dtypes=_BATCH_DTYPES, spec=self.batch_spec(None),
        local_batch_size=self.local_batch_size, time_keys=_TIME_KEYS)
