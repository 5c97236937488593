"""The input pipeline core every task shares: checks, buckets, epoch order, host slices, resume and streaming.

`BatchPipeline` turns the per-video rows a task's batch builder makes (`hal_jax.data.segmentation_pipeline`,
`hal_jax.data.localization_pipeline`, `hal_jax.data.recognition_pipeline`) into fixed-shape, resumable batches of
one split:

* Shapes: time is padded to the smallest of a few static `bucket_lengths` that holds the batch's longest video (one
  compile per bucket); `set_buckets` checks every video against the largest one before anything is trained.
* Order: training takes ``np.random.default_rng((seed, SHUFFLE_STREAM, epoch)).permutation(num_videos)``, a pure
  function of (seed, epoch), so ``epoch_batches(epoch, start_batch=k)`` resumes bitwise exactly; evaluation takes the
  dataset order. The last partial batch is kept (every video is seen every epoch) and filled up with padding videos,
  index -1, so that the batch shape stays static.
* Multi-host: every host computes the same global order and bucket, and host p of P builds the contiguous rows
  ``[p B/P, (p+1) B/P)`` of each global batch. With the mesh of `hal_jax.sharding.make_mesh` (devices ordered by
  process) these are exactly the rows its devices hold, so the global batch is the same whatever the host count.
* tf.data streams the batches: a parallel, order-preserving map over batch positions builds each batch with NumPy
  (`tf.numpy_function`, zero-copy) and ``prefetch(AUTOTUNE)`` overlaps building with the training step; `stream` runs
  one pipeline across epochs. TensorFlow's own random state is never used, so `batch` builds the same batches without
  TensorFlow. TensorFlow is imported on first use only and never sees a GPU.
"""

from __future__ import annotations

import collections
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import jax
import numpy as np

from hal_jax import sharding as sharding_lib
from hal_jax.errors import ConfigError, DataError

# Random stream of the epoch order. The pipelines draw their per-video samples from other tags under the same seed
# (2: segmentation frames, 3: localization snippets), so the streams are independent.
SHUFFLE_STREAM = 1

# TensorFlow's buffer alignment (EIGEN_MAX_ALIGN_BYTES); see `aligned_zeros`.
_ALIGNMENT = 64


class BatchPipeline:
  """Epoch order, host slices, resume positions and the tf.data / device streams of one split's batches.

  A task's subclass (its batch builder) calls ``super().__init__`` (which checks the seed, the split and the batch
  and host layout), validates its own settings, calls `set_buckets` with each video's padded length, and sets:

  * ``_batch_dtypes``: name -> dtype of the batch dict, in the order tf.numpy_function returns the arrays;
  * ``_time_keys``: the batch entries whose axis 1 is time (padded to the batch's bucket length);

  and defines `_shapes` (the global shape of every entry) and `_build`, which builds this host's batch from the
  rows of `_local_rows`.
  """

  _batch_dtypes: Mapping[str, type]
  _time_keys: Sequence[str]
  bucket_lengths: tuple[int, ...]
  _bucket_index: np.ndarray

  def __init__(self, dataset, *, batch_size: int, train: bool, seed: int, process_index: int | None,
               process_count: int | None, num_devices: int | None):
    """Checks the batch layout over hosts and devices.

    Args:
      dataset: the split; anything with ``videos``.
      batch_size: global batch size B, over all hosts and devices.
      train: shuffle the order every epoch (otherwise the dataset order).
      seed: the run's seed (``config.seed``), in [0, 2**32) (NumPy's seed sequence splits larger ints into words,
        so a bigger seed could collide with another stream's tuple).
      process_index: this host's index p (default `jax.process_index()`).
      process_count: number of hosts P (default `jax.process_count()`).
      num_devices: devices in the data mesh (default `jax.device_count()`); B must be a multiple of it.

    Raises:
      ConfigError: a seed outside [0, 2**32), a process index outside [0, P), or B not a positive multiple of the
        devices and of the hosts.
      DataError: an empty split.
    """
    if not 0 <= seed < 2**32:
      raise ConfigError("seed", f"must be in [0, 2**32), got {seed}")
    if not dataset.videos:
      raise DataError(dataset.root, "the split has no videos")
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    num_devices = jax.device_count() if num_devices is None else num_devices
    if not 0 <= process_index < process_count:
      raise ConfigError("process_index", f"{process_index} is outside [0, {process_count})")
    if batch_size < 1 or batch_size % num_devices or batch_size % process_count:
      raise ConfigError("batch_size", f"{batch_size} must be a positive multiple of the number of devices "
                        f"({num_devices}) and of hosts ({process_count})")
    self.dataset = dataset
    self.batch_size = batch_size
    self.train = train
    self.seed = seed
    self.process_index = process_index
    self.process_count = process_count
    self.local_batch_size = batch_size // process_count
    self._buffers = BufferPool()

  @property
  def num_videos(self) -> int:
    return len(self.dataset.videos)

  @property
  def num_batches_per_epoch(self) -> int:
    """``ceil(num_videos / batch_size)``, the same for every epoch and host."""
    return -(-self.num_videos // self.batch_size)

  def set_buckets(self, bucket_lengths: Sequence[int], lengths: np.ndarray, unit: str) -> None:
    """Sets the static padded lengths and each video's bucket.

    Args:
      bucket_lengths: the static time lengths T a batch may be padded to (sorted and deduplicated here).
      lengths: [num_videos] int, each video's length after the task's sampling (what its rows fill).
      unit: what a time step is, for the error ("frames after downsampling by 8", "snippets").

    Raises:
      ConfigError: no positive length, or a video longer than the largest bucket.
    """
    buckets = sorted(set(int(b) for b in bucket_lengths))
    if not buckets or buckets[0] < 1:
      raise ConfigError("bucket_lengths", f"need at least one positive length, got {list(bucket_lengths)}")
    too_long = np.flatnonzero(np.asarray(lengths) > buckets[-1])
    if too_long.size:
      video = self.dataset.videos[int(too_long[0])]
      raise ConfigError("bucket_lengths", f"video {video.name!r} of {self.dataset.root} has "
                        f"{int(lengths[too_long[0]])} {unit}, more than the largest bucket {buckets[-1]}")
    self.bucket_lengths = tuple(buckets)
    # A batch's bucket is the largest of its videos' (buckets are sorted).
    self._bucket_index = np.searchsorted(np.array(buckets), lengths)

  def _shapes(self, length: int) -> dict[str, tuple[int, ...]]:
    """Global shape of every batch entry at padded length `length`."""
    raise NotImplementedError

  def batch_spec(self, length: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
    """Global shapes and dtypes of a batch padded to `length` (default: the largest bucket), for `jax.eval_shape`."""
    length = self.bucket_lengths[-1] if length is None else length
    return {name: jax.ShapeDtypeStruct(shape, self._batch_dtypes[name])
            for name, shape in self._shapes(length).items()}

  def _build(self, order: np.ndarray, epoch: int, batch_index: int) -> dict[str, np.ndarray]:
    """The local batch; `order` is `epoch_order(epoch)`. Must be thread-safe (tf.data calls it in parallel)."""
    raise NotImplementedError

  def epoch_order(self, epoch: int) -> np.ndarray:
    """Video indices of the epoch in batch order, -1 padded.

    Returns:
      [num_batches_per_epoch * batch_size] int64; global batch b is ``order[b * B:(b + 1) * B]``. A pure function of
      (seed, epoch) for training, the dataset order for evaluation.
    """
    if self.train:
      order = np.random.default_rng((self.seed, SHUFFLE_STREAM, epoch)).permutation(self.num_videos)
    else:
      order = np.arange(self.num_videos)
    padding = self.num_batches_per_epoch * self.batch_size - self.num_videos
    return np.concatenate([order, np.full(padding, -1, order.dtype)])

  def _local_rows(self, order: np.ndarray, batch_index: int) -> tuple[int, np.ndarray]:
    """The padded length T of global batch `batch_index` and this host's rows of it.

    Returns:
      length: the bucket of the batch's longest video.
      local: [batch_size / process_count] int64 video indices, -1 on padding videos.
    """
    rows = order[batch_index * self.batch_size:(batch_index + 1) * self.batch_size]
    # The bucket comes from the whole global batch so that every host pads to the same length.
    length = self.bucket_lengths[int(self._bucket_index[rows[rows >= 0]].max())]
    start = self.process_index * self.local_batch_size
    return length, rows[start:start + self.local_batch_size]

  def batch(self, epoch: int, batch_index: int) -> dict[str, np.ndarray]:
    """This host's slice of global batch `batch_index` of `epoch`, built directly with NumPy (no tf.data).

    Returns:
      The batch dict with leading dimension ``batch_size / process_count``.
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

  def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This host's batches of `epoch` from `start_batch` on, through tf.data (parallel build + prefetch).

    Resuming with ``start_batch=k`` yields exactly the batches an uninterrupted epoch yields from batch k on.

    Yields:
      Host NumPy batch dicts, leading dimension ``batch_size / process_count``.
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
        per_epoch=self.num_batches_per_epoch, dtypes=self._batch_dtypes, spec=self.batch_spec(None),
        local_batch_size=self.local_batch_size, time_keys=self._time_keys)


def default_buckets(max_len: int, multiple: int = 64) -> tuple[int, ...]:
  """Bucket lengths ``multiple, 2 * multiple, ...`` up to the first one >= `max_len`."""
  if max_len < 1 or multiple < 1:
    raise ConfigError("bucket_lengths", f"default_buckets needs max_len >= 1 and multiple >= 1, got {max_len}, "
                      f"{multiple}")
  return tuple(range(multiple, -(-max_len // multiple) * multiple + 1, multiple))


def check_features(root: str, name: str, features: np.ndarray, feature_dim: int | None) -> int:
  """Checks one video's features against the split's: float32 [T, D], T >= 1, D as in the videos before it.

  Args:
    root: the split's root, for the error.
    name: the video's name, for the error.
    features: [T, D] the video's features.
    feature_dim: D of the videos checked so far, or None for the first video.

  Returns:
    D.

  Raises:
    DataError: another dtype or rank, no frames, or another D.
  """
  if features.ndim != 2 or len(features) == 0 or features.dtype != np.float32:
    raise DataError(root, f"video {name!r}: features must be float32 [T, D] with T >= 1, got "
                    f"{features.dtype} {features.shape}")
  if feature_dim is not None and features.shape[1] != feature_dim:
    raise DataError(root, f"video {name!r}: feature dim {features.shape[1]}, other videos have {feature_dim}")
  return features.shape[1]


def tf_batch_stream(build_batch: Callable[[int, int], dict[str, np.ndarray]], *, first: int, stop: int | None,
                    per_epoch: int, dtypes: Mapping[str, type], spec: Mapping[str, jax.ShapeDtypeStruct],
                    local_batch_size: int, time_keys: Sequence[str]
                    ) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
  """``(epoch, batch_index, batch)`` for global positions ``first, ... < stop`` through tf.data.

  `build_batch(epoch, batch_index)` makes one host batch with NumPy; tf.data runs it in a parallel, order-preserving
  map (`tf.numpy_function`) and prefetches. Shapes are static but for the time axis of `time_keys` (the bucket).
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


class BufferPool:
  """Zeroed, 64-byte aligned batch arrays (`aligned_zeros`) that reuse the memory of earlier batches no one holds.

  Fresh memory costs a page fault and the kernel's zeroing per page on first write: for a B8 x T512 x 2048 float32
  batch that was most of the time to build it. A buffer is reused only when nothing references it but the pool (the
  batch dict, its views, a tf.data tensor or a zero-copy device array all hold a reference), so a batch still in use
  is never overwritten. Thread-safe (tf.data builds batches in parallel).
  """

  def __init__(self, capacity: int = 8):
    """`capacity`: the most buffers kept; batches beyond it in flight get fresh memory that is not kept."""
    self._capacity = capacity
    self._buffers: list[np.ndarray] = []
    self._lock = threading.Lock()

  def zeros(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """An array of zeros of `shape` and `dtype` at a 64-byte aligned address."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize + _ALIGNMENT
    with self._lock:
      # Referenced only by the pool's list (and getrefcount's argument): no batch, view or transfer holds it.
      free = [i for i in range(len(self._buffers)) if sys.getrefcount(self._buffers[i]) == 2]
      same = [i for i in free if self._buffers[i].size == size]
      if same:
        array = _aligned_view(self._buffers[same[0]], shape, dtype)
        array.fill(0)
        return array
      array = aligned_zeros(shape, dtype)
      if len(self._buffers) < self._capacity:
        self._buffers.append(array.base)
      elif free:  # Full: a free buffer of another size (another bucket) gives way to the newest.
        self._buffers[free[0]] = array.base
      return array


def _aligned_view(buffer: np.ndarray, shape: tuple[int, ...], dtype: type) -> np.ndarray:
  """The `shape` `dtype` array at the first 64-byte aligned address of `buffer` (uint8, `_ALIGNMENT` bytes longer)."""
  offset = -buffer.ctypes.data % _ALIGNMENT
  nbytes = buffer.size - _ALIGNMENT
  return buffer[offset:offset + nbytes].view(dtype).reshape(shape)


def aligned_zeros(shape: tuple[int, ...], dtype: type) -> np.ndarray:
  """`np.zeros` at a 64-byte aligned address.

  TensorFlow takes a NumPy array returned by `tf.numpy_function` without a copy only if it is 64-byte aligned (NumPy
  aligns large arrays to 16); otherwise it copies it into fresh memory, which made tf.data 10x slower than building
  the batch for Breakfast-sized batches. `as_numpy_iterator` then hands the same memory back, so the features are
  written once.
  """
  nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
  return _aligned_view(np.zeros(nbytes + _ALIGNMENT, np.uint8), shape, dtype)


def import_tensorflow():
  """Imports TensorFlow for tf.data only, hiding GPUs so that it never takes accelerator memory from JAX.

  Its C++ start-up notices are dropped (`hal_jax.quiet`); tf.data is touched inside, since it loads lazily and logs
  them again.
  """
  from hal_jax import quiet  # pylint: disable=g-import-not-at-top
  with quiet.filtered_stderr():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    _ = tf.data.Dataset
    try:
      tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
      pass  # TF's devices were initialised already (by an earlier call); the first call hid the GPUs.
  return tf
