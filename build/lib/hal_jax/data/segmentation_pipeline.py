"""Input pipeline for transcript-supervised action segmentation (HAL / ATBA).

Turns a `SegmentationDataset` (raw-rate features ``[T_raw, D]`` per video, in memory or `FeatureFile`s read lazily) into
fixed-shape batches:

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

With per-video poses (`poses=`, the pose-aware add-on; `hal_jax.data.poses`), two more entries, aligned to the frames
taken per window (`poses.align_to_steps`), zero on steps without a pose and on padding:

```
pose_keypoints  [B, T, K, 2] float32  keypoints in pixels
pose_scores     [B, T, K]    float32  keypoint confidences
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
* Training order is a shuffle per epoch, a pure function of (seed, epoch), so ``epoch_batches(epoch, start_batch=k)``
  resumes bitwise exactly. Like ATBA the last partial batch is kept, so every video is seen every epoch; it is filled
  up with padding videos (``batch_mask=False``, all other masks False) to keep the batch shape static. Losses must
  therefore weight per-video terms by `batch_mask`. Evaluation order is the dataset order, padded the same way.
* Order, multi-host slices (host p of P builds rows ``[p B/P, (p+1) B/P)`` of every global batch), resume and the
  tf.data / device streams are shared with the localization pipeline: `hal_jax.data.batching`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hal_jax.data import batching
from hal_jax.data import poses as poses_lib
from hal_jax.data.segmentation_formats import SegmentationDataset
from hal_jax.errors import ConfigError, DataError

# Random stream of the frame draws, independent of the order's (batching.SHUFFLE_STREAM) under the one seed.
# SeedSequence pads short entropy with zeros (so (a, b) and (a, b, 0) give the same numbers) and splits ints >= 2**32
# into words; a tag right after a 32-bit seed keeps every tuple of the streams distinct.
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
# The entries whose axis 1 is time, padded to the batch's bucket length.
_TIME_KEYS = ("features", "frame_mask", "frame_labels")
_POSE_DTYPES = {"pose_keypoints": np.float32, "pose_scores": np.float32}


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


def longest_video(dataset: SegmentationDataset, sample_rate: int) -> int:
  """The longest downsampled length in `dataset` (size the buckets over train and test together)."""
  return max((downsampled_length(len(v.features), sample_rate) for v in dataset.videos), default=0)


def longest_transcript(dataset: SegmentationDataset) -> int:
  """The longest transcript in `dataset` (a lower bound for `max_transcript`)."""
  return max((len(v.transcript) for v in dataset.videos), default=0)


class SegmentationPipeline(batching.BatchPipeline):
  """Fixed-shape, resumable batches of one split (see the module docstring for the batch dict).

  Typical use (`mesh` from `hal_jax.sharding.make_mesh`):

  ```
  train = SegmentationPipeline(train_set, batch_size=32, sample_rate=10, bucket_lengths=batching.default_buckets(1024),
                               max_transcript=25, seed=config.seed, train=True)
  test = SegmentationPipeline(test_set, ..., train=False)
  for epoch, batch_index, batch in train.global_stream(mesh, start_epoch, start_batch, num_epochs - start_epoch):
    state = train_step(state, batch)          # checkpoint (epoch, batch_index + 1) to resume exactly
    if batch_index == train.num_batches_per_epoch - 1:
      for test_batch in test.global_batches(0, mesh):
        ...
  ```
  """

  _batch_dtypes = _BATCH_DTYPES
  _time_keys = _TIME_KEYS

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
               num_devices: int | None = None,
               poses: Sequence[poses_lib.PoseTrack] | None = None):
    """Validates the split against the static shapes; raises before any training starts.

    Args:
      dataset: the split, features ``[T_raw, D]`` per video, in memory or a `FeatureFile`.
      batch_size: global batch size B, over all hosts and devices.
      sample_rate: temporal downsampling factor s >= 1 (Breakfast 10, Hollywood 5, CrossTask 1).
      bucket_lengths: the static padded lengths T (downsampled frames); see `batching.default_buckets`.
      max_transcript: M, the padded transcript length.
      train: random frame per window and a shuffled order per epoch; otherwise middle frames in dataset order.
      seed: the run's seed (``config.seed``), in [0, 2**32). Unused when `train` is False.
      process_index, process_count, num_devices: this host's index p, the number of hosts P and the devices in the
        data mesh (defaults from jax); see `hal_jax.data.batching.BatchPipeline`.
      poses: one validated pose track per video of `dataset` (same order, one layout), or None for no pose entries.

    Raises:
      ConfigError: a bad argument, or a video / transcript that does not fit the largest bucket / max_transcript.
      DataError: an empty split or a malformed video.
    """
    super().__init__(dataset, batch_size=batch_size, train=train, seed=seed, process_index=process_index,
                     process_count=process_count, num_devices=num_devices)
    if sample_rate < 1:
      raise ConfigError("sample_rate", f"must be >= 1, got {sample_rate}")
    if max_transcript < 1:
      raise ConfigError("max_transcript", f"must be >= 1, got {max_transcript}")
    self.sample_rate = sample_rate
    self.max_transcript = max_transcript
    self.num_classes = dataset.label_map.num_classes
    self.feature_dim = self._check_videos()

    raw = np.array([len(v.features) for v in dataset.videos], np.int64)
    self._raw_length = raw
    self._num_frames = -(-raw // sample_rate)
    self.set_buckets(bucket_lengths, self._num_frames, f"frames after downsampling by {sample_rate}")
    # Transcript rows and multi-hot labels never change, so they are built once and gathered per batch.
    self._transcripts = np.full((len(raw), max_transcript), -1, np.int32)
    self._video_labels = np.zeros((len(raw), self.num_classes), np.float32)
    for i, video in enumerate(dataset.videos):
      self._transcripts[i, :len(video.transcript)] = video.transcript
      self._video_labels[i, video.transcript] = 1.0
    # Test-time frames are fixed; computing them once saves work on every evaluation pass.
    self._middle = None if train else [middle_frames(int(n), sample_rate) for n in raw]
    self.poses = None if poses is None else tuple(poses)
    if self.poses is not None:
      if len(self.poses) != len(dataset.videos) or len({t.layout for t in self.poses}) > 1:
        raise ValueError("poses: one track per video, all of one layout")
      self.num_keypoints = self.poses[0].num_keypoints
      self._batch_dtypes = {**_BATCH_DTYPES, **_POSE_DTYPES}
      self._time_keys = _TIME_KEYS + tuple(_POSE_DTYPES)

  def _check_videos(self) -> int:
    """Checks every video against the static shapes and the label map; returns the feature dim D."""
    root, num_classes = self.dataset.root, self.num_classes
    feature_dim = None
    for video in self.dataset.videos:
      name = video.name
      feature_dim = batching.check_features(root, name, video.features, feature_dim)
      if video.labels.shape != video.features.shape[:1]:
        raise DataError(root, f"video {name!r}: {len(video.labels)} frame labels for {len(video.features)} frames")
      transcript = np.asarray(video.transcript)
      if transcript.size and (transcript.min() < 0 or transcript.max() >= num_classes):
        raise DataError(root, f"video {name!r}: transcript ids must be in [0, {num_classes})")
      if len(transcript) > self.max_transcript:
        raise ConfigError("max_transcript", f"video {name!r} of {root} has a transcript of {len(transcript)} "
                          f"actions, more than max_transcript={self.max_transcript}")
    return feature_dim

  def _shapes(self, length: int) -> dict[str, tuple[int, ...]]:
    b, m, c = self.batch_size, self.max_transcript, self.num_classes
    shapes = {
        "features": (b, length, self.feature_dim), "frame_mask": (b, length), "frame_labels": (b, length),
        "num_frames": (b,), "raw_length": (b,), "transcript": (b, m), "transcript_mask": (b, m),
        "video_labels": (b, c), "batch_mask": (b,), "video_index": (b,),
    }
    if self.poses is not None:
      shapes.update(pose_keypoints=(b, length, self.num_keypoints, 2), pose_scores=(b, length, self.num_keypoints))
    return shapes

  def feature_rows(self, epoch: int, video_index: int) -> np.ndarray:
    """Raw frame taken for each window of video `video_index` in `epoch`: [num_frames] int64."""
    if not self.train:
      return self._middle[video_index]
    rng = np.random.default_rng((self.seed, _FRAME_STREAM, epoch, video_index))
    return random_frames(int(self._raw_length[video_index]), self.sample_rate, rng)

  def _build(self, order: np.ndarray, epoch: int, batch_index: int) -> dict[str, np.ndarray]:
    """The local batch dict of the module docstring; `order` is `epoch_order(epoch)`. Thread-safe: it only reads."""
    length, local = self._local_rows(order, batch_index)
    real = local >= 0
    safe = np.where(real, local, 0)  # Padding rows gather video 0's row and are overwritten below.

    n = self.local_batch_size
    features = self._buffers.zeros((n, length, self.feature_dim), np.float32)
    frame_labels = np.full((n, length), -1, np.int32)
    if self.poses is not None:
      pose_keypoints = np.zeros((n, length, self.num_keypoints, 2), np.float32)
      pose_scores = np.zeros((n, length, self.num_keypoints), np.float32)
    for row, video_index in enumerate(local):
      if video_index < 0:
        continue
      video = self.dataset.videos[video_index]
      frames = self.feature_rows(epoch, int(video_index))
      # A gather straight into the batch (from the file for a `FeatureFile`); mode="clip" skips NumPy's buffered
      # bounds check (indices are in range), 3x faster than `features[row, :t] = video.features[frames]` at D=2048.
      video.features.take(frames, axis=0, out=features[row, :len(frames)], mode="clip")
      frame_labels[row, :len(frames)] = video.labels[frames]
      if self.poses is not None:
        pose_keypoints[row, :len(frames)], pose_scores[row, :len(frames)] = poses_lib.align_to_steps(
            self.poses[video_index], frames, self.sample_rate)

    num_frames = np.where(real, self._num_frames[safe], 0).astype(np.int32)
    transcript = np.where(real[:, None], self._transcripts[safe], -1)
    batch = {
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
    if self.poses is not None:
      batch.update(pose_keypoints=pose_keypoints, pose_scores=pose_scores)
    return batch
