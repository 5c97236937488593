"""Input pipeline for transcript-supervised action segmentation (HAL / ATBA).

Turns an in-memory `SegmentationDataset` (raw-rate features ``[T_raw, D]`` per video) into fixed-shape batches:

```
features        [B, T, D] float32  downsampled features, zero on padding (T = the batch's bucket length)
frame_mask      [B, T]    bool     True on the num_frames valid steps of each video
frame_labels    [B, T]    int32    downsampled ground truth, -1 on padding (evaluation / identifiability only,
                                   never a training target)
num_frames      [B]       int32    valid downsampled length, ceil(raw_length / sample_rate); 0 on padding videos
raw_length      [B]       int32    length before downsampling; 0 on padding videos
transcript      [B, M]    int32    ordered transcript, -1 padded (M = max_transcript)
transcript_mask [B, M]    bool     True on the transcript's entries
video_labels    [B, C]    float32  multi-hot of the transcript's label set
batch_mask      [B]       bool     False on padding videos of an epoch's last batch
video_index     [B]       int32    index into dataset.videos, -1 on padding videos
```

`B` is the global batch size on device and ``B / process_count`` on each host.

Choices (the spec is ATBA's code, hal_atba.md sections 2 and 3; differences are deliberate):

* Temporal downsampling (spec section 3): window k of a video is ``[k s, min((k + 1) s, T_raw) - 1]``; training takes a
  uniform random frame per window, test the middle frame ``floor((start + end) / 2)``. The random draw comes from
  ``np.random.default_rng((seed, stream, epoch, video_index))``: a new draw every epoch, as in ATBA, but a pure function
  of its arguments, so a resumed run sees the same frames and the draw does not depend on the batch a video lands in.
* Shapes are static: time is padded to the smallest of a few `bucket_lengths` that holds the batch's longest video
  (one compile per bucket), transcripts to `max_transcript`. ATBA pads to the batch's longest video instead, which
  would recompile for almost every batch. A video or transcript that does not fit is a `ConfigError` at construction.
* Training order is ``np.random.default_rng((seed, stream, epoch)).permutation(num_videos)``: a pure function of
  (seed, epoch), so ``epoch_batches(epoch, start_batch=k)`` resumes bitwise exactly. Like ATBA the last partial batch is
  kept, so every video is seen every epoch; it is filled up with padding videos (``batch_mask=False``, all other masks
  False) to keep the batch shape static. Losses must therefore weight per-video terms by `batch_mask`. Evaluation order
  is the dataset order, padded the same way.
* Multi-host: every host computes the same global order and bucket, and host p of P builds the contiguous rows
  ``[p B/P, (p+1) B/P)`` of each global batch. With the mesh of `hal_jax.sharding.make_mesh` (devices ordered by
  process) these are exactly the rows its devices hold, so the global batch is the same whatever the host count.
* tf.data streams the batches: a parallel, order-preserving map over batch positions builds each batch with NumPy
  (`tf.numpy_function`, zero-copy) and ``prefetch(AUTOTUNE)`` overlaps building with the training step; `stream`
  runs one pipeline across epochs. TensorFlow's own random state is never used, and `batch` builds the same batches
  without TensorFlow. TensorFlow is imported on first use only and never sees a GPU.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Mapping, Sequence

import jax
import numpy as np

from hal_jax import sharding as sharding_lib
from hal_jax.data.formats import SegmentationDataset
from hal_jax.errors import ConfigError, DataError

# Independent random streams under the one seed. SeedSequence pads short entropy with zeros (so (a, b) and (a, b, 0)
# give the same numbers) and splits ints >= 2**32 into words; a tag right after a 32-bit seed keeps every tuple of the
# two streams distinct.
_SHUFFLE_STREAM = 1
_FRAME_STREAM = 2

# name -> dtype of the batch dict, in the order tf.numpy_function returns the arrays.
_BATCH_DTYPES = {
    "features": np.float32,
    "frame_mask": np.bool_,
    "frame_labels": np.int32,
    "num_frames": np.int32,
    "raw_length": np.int32,
    "transcript": np.int32,
    "transcript_mask": np.bool_,
    "video_labels": np.float32,
    "batch_mask": np.bool_,
    "video_index": np.int32,
}
# TensorFlow's buffer alignment (EIGEN_MAX_ALIGN_BYTES); see `aligned_zeros`.
_ALIGNMENT = 64
# The entries whose axis 1 is time, padded to the batch's bucket length.
_TIME_KEYS = ("features", "frame_mask", "frame_labels")


def downsampled_length(raw_length: int, sample_rate: int) -> int:
  """Number of windows, ``ceil(raw_length / sample_rate)``."""
  return -(-raw_length // sample_rate)


def window_bounds(raw_length: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  """Downsampling windows of a video (spec section 3).

  Returns:
    starts: [T] int64, ``k * sample_rate``.
    ends: [T] int64, inclusive, ``min((k + 1) * sample_rate, raw_length) - 1``; the last window may be short.
  """
  starts = np.arange(0, raw_length, sample_rate, dtype=np.int64)
  ends = np.minimum(starts + sample_rate, raw_length) - 1
  return starts, ends


def middle_frames(raw_length: int, sample_rate: int) -> np.ndarray:
  """Test-time frame per window, ``floor((start + end) / 2)``: [T] int64 raw frame indices."""
  starts, ends = window_bounds(raw_length, sample_rate)
  return (starts + ends) // 2


def random_frames(raw_length: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
  """Training-time frame per window, uniform over the window (both ends included): [T] int64 raw frame indices."""
  starts, ends = window_bounds(raw_length, sample_rate)
  return rng.integers(starts, ends, endpoint=True)


def default_buckets(max_len: int, multiple: int = 64) -> tuple[int, ...]:
  """Bucket lengths ``multiple, 2 * multiple, ...`` up to the first one >= `max_len`."""
  if max_len < 1 or multiple < 1:
    raise ConfigError("bucket_lengths", f"default_buckets needs max_len >= 1 and multiple >= 1, got {max_len}, "
                      f"{multiple}")
  return tuple(range(multiple, downsampled_length(max_len, multiple) * multiple + 1, multiple))


def longest_video(dataset: SegmentationDataset, sample_rate: int) -> int:
  """The longest downsampled length in `dataset` (size the buckets over train and test together)."""
  return max((downsampled_length(len(v.features), sample_rate) for v in dataset.videos), default=0)


def longest_transcript(dataset: SegmentationDataset) -> int:
  """The longest transcript in `dataset` (a lower bound for `max_transcript`)."""
  return max((len(v.transcript) for v in dataset.videos), default=0)


class SegmentationPipeline:
  """Fixed-shape, resumable batches of one split (see the module docstring for the batch dict).

  Typical use (`mesh` from `hal_jax.sharding.make_mesh`):

  ```
  train = SegmentationPipeline(train_set, batch_size=32, sample_rate=10, bucket_lengths=default_buckets(1024),
                               max_transcript=25, seed=config.seed, train=True)
  test = SegmentationPipeline(test_set, ..., train=False)
  for epoch, batch_index, batch in train.global_stream(mesh, start_epoch, start_batch, num_epochs - start_epoch):
    state = train_step(state, batch)          # checkpoint (epoch, batch_index + 1) to resume exactly
    if batch_index == train.num_batches_per_epoch - 1:
      for test_batch in test.global_batches(0, mesh):
        ...
  ```
  """

  def __init__(self,
               dataset: SegmentationDataset,
               *,
               batch_size: int,
               sample_rate: int,
               bucket_lengths: Sequence[int],
               max_transcript: int,
               train: bool,
               seed: int = 0,
               process_index: int | None = None,
               process_count: int | None = None,
               num_devices: int | None = None):
    """Validates the split against the static shapes; raises before any training starts.

    Args:
      dataset: the split, features ``[T_raw, D]`` in memory (or memory-mapped) per video.
      batch_size: global batch size B, over all hosts and devices.
      sample_rate: temporal downsampling factor s >= 1 (Breakfast 10, Hollywood 5, CrossTask 1).
      bucket_lengths: the static padded lengths T (downsampled frames); see `default_buckets`.
      max_transcript: M, the padded transcript length.
      train: random frame per window and a shuffled order per epoch; otherwise middle frames in dataset order.
      seed: the run's seed (``config.seed``), in [0, 2**32). Unused when `train` is False.
      process_index: this host's index p (default `jax.process_index()`).
      process_count: number of hosts P (default `jax.process_count()`).
      num_devices: devices in the data mesh (default `jax.device_count()`); B must be a multiple of it.

    Raises:
      ConfigError: a bad argument, or a video / transcript that does not fit the largest bucket / max_transcript.
      DataError: an empty split or a malformed video.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    num_devices = jax.device_count() if num_devices is None else num_devices
    if sample_rate < 1:
      raise ConfigError("sample_rate", f"must be >= 1, got {sample_rate}")
    if not 0 <= seed < 2**32:
      raise ConfigError("seed", f"must be in [0, 2**32), got {seed}")
    if not 0 <= process_index < process_count:
      raise ConfigError("process_index", f"{process_index} is outside [0, {process_count})")
    if batch_size < 1 or batch_size % num_devices or batch_size % process_count:
      raise ConfigError("batch_size", f"{batch_size} must be a positive multiple of the number of devices "
                        f"({num_devices}) and of hosts ({process_count})")
    buckets = sorted(set(int(b) for b in bucket_lengths))
    if not buckets or buckets[0] < 1:
      raise ConfigError("bucket_lengths", f"need at least one positive length, got {list(bucket_lengths)}")
    if max_transcript < 1:
      raise ConfigError("max_transcript", f"must be >= 1, got {max_transcript}")
    if not dataset.videos:
      raise DataError(dataset.root, "the split has no videos")

    self.dataset = dataset
    self.batch_size = batch_size
    self.sample_rate = sample_rate
    self.bucket_lengths = tuple(buckets)
    self.max_transcript = max_transcript
    self.train = train
    self.seed = seed
    self.process_index = process_index
    self.process_count = process_count
    self.local_batch_size = batch_size // process_count
    self.num_classes = dataset.label_map.num_classes
    self.feature_dim = self._check_videos()

    raw = np.array([len(v.features) for v in dataset.videos], np.int64)
    self._raw_length = raw
    self._num_frames = -(-raw // sample_rate)
    # Index of each video's bucket: a batch's bucket is the largest of its videos' (buckets are sorted).
    self._bucket_index = np.searchsorted(np.array(buckets), self._num_frames)
    # Transcript rows and multi-hot labels never change, so they are built once and gathered per batch.
    self._transcripts = np.full((len(raw), max_transcript), -1, np.int32)
    self._video_labels = np.zeros((len(raw), self.num_classes), np.float32)
    for i, video in enumerate(dataset.videos):
      self._transcripts[i, :len(video.transcript)] = video.transcript
      self._video_labels[i, video.transcript] = 1.0
    # Test-time frames are fixed; computing them once saves work on every evaluation pass.
    self._middle = None if train else [middle_frames(int(n), sample_rate) for n in raw]

  def _check_videos(self) -> int:
    """Checks every video against the static shapes and the label map; returns the feature dim D."""
    root, num_classes = self.dataset.root, self.num_classes
    feature_dim = None
    for video in self.dataset.videos:
      name = video.name
      if video.features.ndim != 2 or len(video.features) == 0 or video.features.dtype != np.float32:
        raise DataError(root, f"video {name!r}: features must be float32 [T, D] with T >= 1, got "
                        f"{video.features.dtype} {video.features.shape}")
      if feature_dim is None:
        feature_dim = video.features.shape[1]
      elif video.features.shape[1] != feature_dim:
        raise DataError(root, f"video {name!r}: feature dim {video.features.shape[1]}, other videos have "
                        f"{feature_dim}")
      if video.labels.shape != video.features.shape[:1]:
        raise DataError(root, f"video {name!r}: {len(video.labels)} frame labels for {len(video.features)} frames")
      transcript = np.asarray(video.transcript)
      if transcript.size and (transcript.min() < 0 or transcript.max() >= num_classes):
        raise DataError(root, f"video {name!r}: transcript ids must be in [0, {num_classes})")
      num_frames = downsampled_length(len(video.features), self.sample_rate)
      if num_frames > self.bucket_lengths[-1]:
        raise ConfigError("bucket_lengths", f"video {name!r} of {root} has {num_frames} frames after downsampling "
                          f"by {self.sample_rate}, more than the largest bucket {self.bucket_lengths[-1]}")
      if len(transcript) > self.max_transcript:
        raise ConfigError("max_transcript", f"video {name!r} of {root} has a transcript of {len(transcript)} "
                          f"actions, more than max_transcript={self.max_transcript}")
    return feature_dim

  @property
  def num_videos(self) -> int:
    return len(self.dataset.videos)

  @property
  def num_batches_per_epoch(self) -> int:
    """``ceil(num_videos / batch_size)``, the same for every epoch and host."""
    return -(-self.num_videos // self.batch_size)

  def batch_spec(self, length: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
    """Global shapes and dtypes of a batch padded to `length` (default: the largest bucket), for `jax.eval_shape`."""
    length = self.bucket_lengths[-1] if length is None else length
    b, m, c = self.batch_size, self.max_transcript, self.num_classes
    shapes = {
        "features": (b, length, self.feature_dim), "frame_mask": (b, length), "frame_labels": (b, length),
        "num_frames": (b,), "raw_length": (b,), "transcript": (b, m), "transcript_mask": (b, m),
        "video_labels": (b, c), "batch_mask": (b,), "video_index": (b,),
    }
    return {name: jax.ShapeDtypeStruct(shape, _BATCH_DTYPES[name]) for name, shape in shapes.items()}

  def epoch_order(self, epoch: int) -> np.ndarray:
    """Video indices of the epoch in batch order, -1 padded.

    Returns:
      [num_batches_per_epoch * batch_size] int64; global batch b is ``order[b * B:(b + 1) * B]``. A pure function of
      (seed, epoch) for training, the dataset order for evaluation.
    """
    if self.train:
      order = np.random.default_rng((self.seed, _SHUFFLE_STREAM, epoch)).permutation(self.num_videos)
    else:
      order = np.arange(self.num_videos)
    padding = self.num_batches_per_epoch * self.batch_size - self.num_videos
    return np.concatenate([order, np.full(padding, -1, order.dtype)])

  def frame_indices(self, epoch: int, video_index: int) -> np.ndarray:
    """Raw frame taken for each window of video `video_index` in `epoch`: [num_frames] int64."""
    if not self.train:
      return self._middle[video_index]
    rng = np.random.default_rng((self.seed, _FRAME_STREAM, epoch, video_index))
    return random_frames(int(self._raw_length[video_index]), self.sample_rate, rng)

  def batch(self, epoch: int, batch_index: int) -> dict[str, np.ndarray]:
    """This host's slice of global batch `batch_index` of `epoch`, built directly with NumPy (no tf.data).

    Returns:
      The batch dict of the module docstring with leading dimension ``batch_size / process_count``.
    """
    self._check_position(epoch, batch_index)
    if batch_index == self.num_batches_per_epoch:
      raise ValueError(f"batch index {batch_index} is past the last batch of the epoch")
    return self._build(self.epoch_order(epoch), epoch, batch_index)

  def _check_position(self, epoch: int, batch_index: int) -> None:
    """An epoch >= 0 and a batch index in [0, num_batches_per_epoch] (the end is a valid resume point)."""
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

    n = self.local_batch_size
    features = aligned_zeros((n, length, self.feature_dim), np.float32)
    frame_labels = np.full((n, length), -1, np.int32)
    for row, video_index in enumerate(local):
      if video_index < 0:
        continue
      video = self.dataset.videos[video_index]
      frames = self.frame_indices(epoch, int(video_index))
      # A gather straight into the batch; mode="clip" skips NumPy's buffered bounds check (indices are in range),
      # which is 3x faster than `features[row, :t] = video.features[frames]` for 2048-dim features.
      np.take(video.features, frames, axis=0, out=features[row, :len(frames)], mode="clip")
      frame_labels[row, :len(frames)] = video.labels[frames]

    num_frames = np.where(real, self._num_frames[safe], 0).astype(np.int32)
    transcript = np.where(real[:, None], self._transcripts[safe], -1)
    return {
        "features": features,
        "frame_mask": np.arange(length) < num_frames[:, None],
        "frame_labels": frame_labels,
        "num_frames": num_frames,
        "raw_length": np.where(real, self._raw_length[safe], 0).astype(np.int32),
        "transcript": transcript,
        "transcript_mask": transcript >= 0,
        "video_labels": np.where(real[:, None], self._video_labels[safe], 0.0).astype(np.float32),
        "batch_mask": real,
        "video_index": local.astype(np.int32),
    }

  def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This host's batches of `epoch` from `start_batch` on, through tf.data (parallel build + prefetch).

    Resuming with ``start_batch=k`` yields exactly the batches an uninterrupted epoch yields from batch k on.

    Yields:
      Host NumPy batch dicts (module docstring), leading dimension ``batch_size / process_count``.
    """
    self._check_position(epoch, start_batch)
    first = epoch * self.num_batches_per_epoch
    for _, _, batch in self._tf_stream(first + start_batch, first + self.num_batches_per_epoch):
      yield batch

  def stream(self, start_epoch: int = 0, start_batch: int = 0,
             num_epochs: int | None = None) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """The batches of consecutive epochs as one tf.data stream, for training loops.

    Equal to chaining ``epoch_batches(e)`` for ``e = start_epoch, ...``, but one pipeline serves the whole run: its
    prefetch buffer runs across epoch boundaries (no refill stall) and tf.data's ~tens of ms set-up is paid once.

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
    """`epoch_batches` as global `jax.Array`s sharded on the mesh's ``'data'`` axis.

    Args:
      epoch: the epoch.
      mesh: the ``('data',)`` mesh of `hal_jax.sharding.make_mesh`.
      start_batch: first batch to yield (resume).
      device_prefetch: batches transferred to the devices ahead of the one being consumed, so host-to-device copies
        overlap the training step.

    Yields:
      Batch dicts of global arrays with leading dimension `batch_size`.
    """
    self._check_position(epoch, start_batch)
    first = epoch * self.num_batches_per_epoch
    positions = self._tf_stream(first + start_batch, first + self.num_batches_per_epoch)
    for _, _, batch in to_mesh(positions, mesh, device_prefetch):
      yield batch

  def global_stream(self, mesh: jax.sharding.Mesh, start_epoch: int = 0, start_batch: int = 0,
                    num_epochs: int | None = None,
                    device_prefetch: int = 2) -> Iterator[tuple[int, int, dict[str, jax.Array]]]:
    """`stream` as global `jax.Array`s sharded on ``'data'`` (see `global_batches` for `device_prefetch`)."""
    yield from to_mesh(self.stream(start_epoch, start_batch, num_epochs), mesh, device_prefetch)

  def _tf_stream(self, first: int, stop: int | None) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Batches at global positions ``first, first + 1, ... < stop`` (position = epoch * batches per epoch + batch).

    Each batch is built by `_build` inside a parallel, order-preserving tf.data map; nothing random comes from
    TensorFlow, so the stream equals the `batch` calls it stands for.
    """
    # The order is rebuilt per batch (a permutation of the video indices: microseconds) to keep the build stateless.
    yield from tf_batch_stream(
        lambda epoch, batch_index: self._build(self.epoch_order(epoch), epoch, batch_index), first=first, stop=stop,
        per_epoch=self.num_batches_per_epoch, dtypes=_BATCH_DTYPES, spec=self.batch_spec(None),
        local_batch_size=self.local_batch_size, time_keys=_TIME_KEYS)


def tf_batch_stream(build_batch: Callable[[int, int], dict[str, np.ndarray]], *, first: int, stop: int | None,
                    per_epoch: int, dtypes: Mapping[str, type], spec: Mapping[str, jax.ShapeDtypeStruct],
                    local_batch_size: int, time_keys: Sequence[str]
                    ) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
  """``(epoch, batch_index, batch)`` for global positions ``first, ... < stop`` through tf.data.

  `build_batch(epoch, batch_index)` makes one host batch with NumPy; tf.data runs it in a parallel, order-preserving
  map (`tf.numpy_function`) and prefetches. Shapes are static but for the time axis of `time_keys` (the bucket).
  Shared by the segmentation and localization pipelines.
  """
  tf = import_tensorflow()
  names = tuple(dtypes)

  def build(position: np.ndarray) -> tuple[np.ndarray, ...]:
    batch = build_batch(*divmod(int(position), per_epoch))
    return tuple(batch[name] for name in names)

  def build_tensors(position):
    tensors = tf.numpy_function(build, [position], [tf.as_dtype(dtypes[n]) for n in names], stateful=False)
    batch = {}
    for name, tensor in zip(names, tensors):
      shape = [local_batch_size, *spec[name].shape[1:]]
      if name in time_keys:
        shape[1] = None
      tensor.set_shape(shape)
      batch[name] = tensor
    return batch

  end = np.iinfo(np.int64).max if stop is None else stop
  dataset = tf.data.Dataset.range(first, end)
  dataset = dataset.map(build_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  dataset = dataset.prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = True
  for position, batch in enumerate(dataset.with_options(options).as_numpy_iterator(), start=first):
    yield (*divmod(position, per_epoch), batch)


def to_mesh(batches: Iterator[tuple[int, int, dict[str, np.ndarray]]], mesh: jax.sharding.Mesh,
             device_prefetch: int) -> Iterator[tuple[int, int, dict[str, jax.Array]]]:
  """Shards each host batch onto `mesh`, keeping `device_prefetch` transfers in flight ahead of the consumer."""
  queue = collections.deque()
  for epoch, batch_index, batch in batches:
    queue.append((epoch, batch_index, sharding_lib.shard_batch(batch, mesh)))
    if len(queue) > device_prefetch:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def aligned_zeros(shape: tuple[int, ...], dtype: type) -> np.ndarray:
  """`np.zeros` at a 64-byte aligned address.

  TensorFlow takes a NumPy array returned by `tf.numpy_function` without a copy only if it is 64-byte aligned (NumPy
  aligns large arrays to 16); otherwise it copies it into fresh memory, which made tf.data 10x slower than building
  the batch for Breakfast-sized batches. `as_numpy_iterator` then hands the same memory back, so the features are
  written once.
  """
  nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
  buffer = np.zeros(nbytes + _ALIGNMENT, np.uint8)
  offset = -buffer.ctypes.data % _ALIGNMENT
  return buffer[offset:offset + nbytes].view(dtype).reshape(shape)


def import_tensorflow():
  """Imports TensorFlow for tf.data only, hiding GPUs so that it never takes accelerator memory from JAX."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass  # TF's devices were initialised already (by an earlier call); the first call hid the GPUs.
  return tf
