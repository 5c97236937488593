"""Tests for hal_jax.data.segmentation_pipeline: downsampling, static shapes and masks, determinism, resume,
multi-host slices."""

import jax
import numpy as np
import pytest

from hal_jax import sharding
from hal_jax.data import batching
from hal_jax.data import segmentation_pipeline as pipeline
from hal_jax.data.formats import LabelMap
from hal_jax.data.segmentation_formats import SegmentationDataset, SegmentationVideo
from hal_jax.errors import ConfigError, DataError

NUM_CLASSES = 5
FEATURE_DIM = 3


def make_dataset(lengths, transcripts=None, seed=0) -> SegmentationDataset:
  """Random videos of the given raw lengths; transcripts default to the collapsed random frame labels."""
  rng = np.random.default_rng(seed)
  videos = []
  for i, length in enumerate(lengths):
    # Piecewise-constant labels so that transcripts stay short.
    labels = np.repeat(rng.integers(0, NUM_CLASSES, -(-length // 7)), 7)[:length].astype(np.int32)
    if transcripts is None:
      keep = np.concatenate([[True], labels[1:] != labels[:-1]])
      transcript = labels[keep]
    else:
      transcript = np.asarray(transcripts[i], np.int32)
    features = rng.normal(size=(length, FEATURE_DIM)).astype(np.float32)
    videos.append(SegmentationVideo(f"video_{i}", features, labels, transcript))
  label_map = LabelMap(tuple(f"class_{c}" for c in range(NUM_CLASSES)))
  return SegmentationDataset("/data/toy", label_map, tuple(videos))


# 11 videos: with batch 4 the last batch holds 3 videos and 1 padding video.
LENGTHS = (5, 13, 40, 97, 21, 60, 3, 88, 30, 12, 71)


def make_pipeline(train, dataset=None, **kwargs) -> pipeline.SegmentationPipeline:
  args = dict(batch_size=4, sample_rate=3, bucket_lengths=(8, 16, 24, 40), max_transcript=20, seed=7,
              process_index=0, process_count=1, num_devices=4)
  args.update(kwargs)
  return pipeline.SegmentationPipeline(dataset or make_dataset(LENGTHS), train=train, **args)


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for name in a:
    assert a[name].dtype == b[name].dtype, name
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_windows_and_middle_frames_follow_the_spec():
  # 25 raw frames at rate 10: windows [0, 9], [10, 19] and the short last window [20, 24].
  starts, ends = pipeline.window_bounds(25, 10)
  np.testing.assert_array_equal(starts, [0, 10, 20])
  np.testing.assert_array_equal(ends, [9, 19, 24])
  # Middle of a full window of 10 is offset 4; of the short window [20, 24] it is 22.
  np.testing.assert_array_equal(pipeline.middle_frames(25, 10), [4, 14, 22])
  np.testing.assert_array_equal(pipeline.middle_frames(20, 10), [4, 14])
  assert pipeline.downsampled_length(25, 10) == 3
  np.testing.assert_array_equal(pipeline.middle_frames(4, 1), [0, 1, 2, 3])


def test_random_frames_stay_in_their_window_and_reach_both_ends():
  starts, ends = pipeline.window_bounds(25, 10)
  draws = np.stack([pipeline.random_frames(25, 10, np.random.default_rng(i)) for i in range(300)])
  assert draws.shape == (300, 3)
  assert np.all(draws >= starts) and np.all(draws <= ends)
  # Both ends of every window are drawn (inclusive bounds), e.g. frame 24 of the short last window.
  assert set(draws.min(axis=0)) == set(starts) and set(draws.max(axis=0)) == set(ends)


def test_default_buckets():
  assert batching.default_buckets(300, 64) == (64, 128, 192, 256, 320)
  assert batching.default_buckets(64, 64) == (64,)
  assert batching.default_buckets(1, 64) == (64,)
  with pytest.raises(ConfigError):
    batching.default_buckets(0, 64)


def test_dataset_helpers():
  dataset = make_dataset([10, 31], transcripts=[[0], [1, 2, 3]])
  assert pipeline.longest_video(dataset, 3) == 11
  assert pipeline.longest_transcript(dataset) == 3


def test_batch_shapes_dtypes_and_masks():
  dataset = make_dataset(LENGTHS)
  pipe = make_pipeline(train=True, dataset=dataset)
  batches = list(pipe.epoch_batches(0))
  assert len(batches) == pipe.num_batches_per_epoch == 3
  spec = pipe.batch_spec()
  for batch in batches:
    length = batch["features"].shape[1]
    for name, array in batch.items():
      expected = spec[name].shape if name not in ("features", "frame_mask", "frame_labels") else (
          (4, length) + spec[name].shape[2:])
      assert array.shape == expected, name
      assert array.dtype == spec[name].dtype, name
    real = batch["batch_mask"]
    # The bucket is the smallest one holding the batch's longest video.
    longest = batch["num_frames"].max()
    assert length == min(b for b in pipe.bucket_lengths if b >= longest)
    np.testing.assert_array_equal(batch["frame_mask"].sum(1), batch["num_frames"])
    assert np.all(batch["features"][~batch["frame_mask"]] == 0)
    assert np.all(batch["frame_labels"][~batch["frame_mask"]] == -1)
    np.testing.assert_array_equal(batch["transcript_mask"], batch["transcript"] >= 0)
    for row in np.flatnonzero(real):
      index = batch["video_index"][row]
      video = dataset.videos[index]
      frames = pipe.feature_rows(0, index)
      n = len(frames)
      assert n == batch["num_frames"][row] == -(-len(video.features) // 3)
      assert batch["raw_length"][row] == len(video.features)
      np.testing.assert_array_equal(batch["features"][row, :n], video.features[frames])
      np.testing.assert_array_equal(batch["frame_labels"][row, :n], video.labels[frames])
      m = len(video.transcript)
      np.testing.assert_array_equal(batch["transcript"][row, :m], video.transcript)
      assert batch["transcript_mask"][row].sum() == m
  # The last batch has 3 videos and one padding video with every mask off.
  last = batches[-1]
  np.testing.assert_array_equal(last["batch_mask"], [True, True, True, False])
  assert last["video_index"][3] == -1 and last["num_frames"][3] == 0 and last["raw_length"][3] == 0
  assert not last["frame_mask"][3].any() and not last["transcript_mask"][3].any()
  assert not last["video_labels"][3].any()


def test_video_labels_are_multi_hot_of_the_transcript_set():
  dataset = make_dataset([9, 9, 9], transcripts=[[2, 0, 2], [4], [1, 3, 1, 3]])
  batch = make_pipeline(train=False, dataset=dataset).batch(0, 0)
  np.testing.assert_array_equal(batch["video_labels"], [[1, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 1, 0, 1, 0],
                                                        [0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(batch["transcript"][0, :4], [2, 0, 2, -1])


def test_train_frames_are_redrawn_each_epoch_and_a_pure_function_of_seed_epoch_video():
  pipe = make_pipeline(train=True)
  video = 3  # 97 raw frames, 33 windows of 3.
  epoch0, epoch1 = pipe.feature_rows(0, video), pipe.feature_rows(1, video)
  assert not np.array_equal(epoch0, epoch1)
  np.testing.assert_array_equal(epoch0, make_pipeline(train=True).feature_rows(0, video))
  assert not np.array_equal(epoch0, make_pipeline(train=True, seed=8).feature_rows(0, video))
  starts, ends = pipeline.window_bounds(97, 3)
  assert np.all((epoch0 >= starts) & (epoch0 <= ends))
  # The draw does not depend on which batch or host the video is in.
  batch = next(b for b in pipe.epoch_batches(1) if video in b["video_index"])
  row = list(batch["video_index"]).index(video)
  np.testing.assert_array_equal(batch["features"][row, :33], pipe.dataset.videos[video].features[epoch1])


def test_eval_takes_middle_frames_whatever_the_epoch():
  pipe = make_pipeline(train=False)
  np.testing.assert_array_equal(pipe.feature_rows(0, 1), [1, 4, 7, 10, 12])  # 13 frames: last window [12, 12].
  np.testing.assert_array_equal(pipe.feature_rows(5, 1), pipe.feature_rows(0, 1))


def test_shuffle_order_is_a_pure_function_of_seed_and_epoch():
  pipe = make_pipeline(train=True)
  order = pipe.epoch_order(2)
  np.testing.assert_array_equal(order, make_pipeline(train=True).epoch_order(2))
  assert not np.array_equal(order, pipe.epoch_order(3))
  assert not np.array_equal(order, make_pipeline(train=True, seed=8).epoch_order(2))
  assert len(order) == 12 and np.all(order[11:] == -1)
  np.testing.assert_array_equal(np.sort(order[:11]), np.arange(11))
  # Building batches (and their random frames) does not disturb the order.
  list(pipe.epoch_batches(2))
  np.testing.assert_array_equal(pipe.epoch_order(2), order)


@pytest.mark.parametrize("train", [True, False])
def test_resume_mid_epoch_equals_the_uninterrupted_epoch(train):
  pipe = make_pipeline(train=train)
  full = list(pipe.epoch_batches(4))
  for start in (1, 2):
    resumed = list(make_pipeline(train=train).epoch_batches(4, start_batch=start))
    assert len(resumed) == len(full) - start
    for a, b in zip(resumed, full[start:]):
      assert_batches_equal(a, b)
  assert not list(pipe.epoch_batches(4, start_batch=3))
  # The direct NumPy path builds the same batches as tf.data.
  assert_batches_equal(pipe.batch(4, 1), full[1])


def test_stream_across_epochs_equals_the_epochs_chained():
  pipe = make_pipeline(train=True)
  expected = [(e, b, batch) for e in (1, 2, 3) for b, batch in enumerate(pipe.epoch_batches(e))][2:]
  streamed = list(make_pipeline(train=True).stream(start_epoch=1, start_batch=2, num_epochs=3))
  assert [(e, b) for e, b, _ in streamed] == [(e, b) for e, b, _ in expected]
  for (_, _, a), (_, _, b) in zip(streamed, expected):
    assert_batches_equal(a, b)
  # Without num_epochs the stream does not end; resuming at the end of an epoch starts the next one.
  endless = pipe.stream(start_epoch=0, start_batch=3)
  assert [next(endless)[:2] for _ in range(7)] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (3, 0)]
  endless.close()


def test_eval_covers_every_video_once_in_order():
  pipe = make_pipeline(train=False)
  batches = list(pipe.epoch_batches(0))
  seen = np.concatenate([b["video_index"][b["batch_mask"]] for b in batches])
  np.testing.assert_array_equal(seen, np.arange(len(LENGTHS)))
  assert sum(int((~b["batch_mask"]).sum()) for b in batches) == 1


def test_train_epoch_sees_every_video_once():
  batches = list(make_pipeline(train=True).epoch_batches(1))
  seen = np.concatenate([b["video_index"][b["batch_mask"]] for b in batches])
  np.testing.assert_array_equal(np.sort(seen), np.arange(len(LENGTHS)))


@pytest.mark.parametrize("train", [True, False])
def test_two_hosts_together_build_the_one_host_global_batch(train):
  one_host = make_pipeline(train=train)
  hosts = [make_pipeline(train=train, process_index=p, process_count=2) for p in range(2)]
  assert hosts[0].local_batch_size == 2
  for batch_index in range(one_host.num_batches_per_epoch):
    local = [h.batch(1, batch_index) for h in hosts]
    joined = {name: np.concatenate([local[0][name], local[1][name]]) for name in local[0]}
    assert_batches_equal(joined, one_host.batch(1, batch_index))


def test_global_batches_are_sharded_over_the_data_axis():
  mesh = sharding.make_mesh()
  assert mesh.size == 4
  pipe = make_pipeline(train=True)
  host = list(pipe.epoch_batches(0))
  device = list(pipe.global_batches(0, mesh))
  assert len(device) == len(host)
  for d, h in zip(device, host):
    for name, array in d.items():
      assert isinstance(array, jax.Array)
      assert array.sharding.is_equivalent_to(sharding.batch_sharding(mesh), array.ndim)
      assert len(array.addressable_shards) == 4
      assert array.addressable_shards[0].data.shape[0] == 1
      np.testing.assert_array_equal(np.asarray(array), h[name])


def test_global_stream_yields_positions_and_sharded_batches():
  mesh = sharding.make_mesh()
  pipe = make_pipeline(train=True)
  streamed = list(pipe.global_stream(mesh, start_epoch=2, start_batch=1, num_epochs=1, device_prefetch=0))
  assert [(e, b) for e, b, _ in streamed] == [(2, 1), (2, 2)]
  np.testing.assert_array_equal(np.asarray(streamed[1][2]["features"]), pipe.batch(2, 2)["features"])


def test_batch_spec_defaults_to_the_largest_bucket():
  spec = make_pipeline(train=True).batch_spec()
  assert spec["features"].shape == (4, 40, FEATURE_DIM)
  assert spec["transcript"].shape == (4, 20)
  assert spec["video_labels"].shape == (4, NUM_CLASSES)
  assert spec["frame_mask"].dtype == np.bool_


def test_too_long_video_is_a_config_error_naming_the_video():
  with pytest.raises(ConfigError, match="video_3") as error:
    make_pipeline(train=True, bucket_lengths=(8, 16, 32))  # video_3 has 33 frames after downsampling.
  assert error.value.where == "bucket_lengths"


def test_too_long_transcript_is_a_config_error_naming_the_video():
  dataset = make_dataset([9, 9], transcripts=[[0, 1], [0, 1, 2, 3]])
  with pytest.raises(ConfigError, match="video_1") as error:
    make_pipeline(train=True, dataset=dataset, max_transcript=3)
  assert error.value.where == "max_transcript"


def test_batch_size_must_divide_over_devices_and_hosts():
  with pytest.raises(ConfigError) as error:
    make_pipeline(train=True, batch_size=6)
  assert error.value.where == "batch_size"
  with pytest.raises(ConfigError):
    make_pipeline(train=True, batch_size=4, num_devices=1, process_count=3)


def test_bad_data_and_arguments_are_reported():
  with pytest.raises(DataError, match="no videos"):
    make_pipeline(train=True, dataset=SegmentationDataset("/data/empty", LabelMap(("a",)), ()))
  dataset = make_dataset([9, 9], transcripts=[[0], [NUM_CLASSES]])
  with pytest.raises(DataError, match="video_1"):
    make_pipeline(train=True, dataset=dataset)
  video = make_dataset([9]).videos[0]
  float64 = SegmentationDataset("/data/toy", dataset.label_map, (
      SegmentationVideo("video_0", video.features.astype(np.float64), video.labels, video.transcript),))
  with pytest.raises(DataError, match="float32"):
    make_pipeline(train=True, dataset=float64)
  with pytest.raises(ConfigError):
    make_pipeline(train=True, sample_rate=0)
  with pytest.raises(ConfigError):
    make_pipeline(train=True, seed=-1)
  with pytest.raises(ValueError):
    make_pipeline(train=True).batch(0, 3)


def test_batches_reuse_only_memory_no_batch_holds():
  pipe = make_pipeline(train=True)
  first = pipe.batch(0, 0)
  kept = first["features"].copy()
  second = pipe.batch(0, 1)  # `first` is held: its memory must not be reused.
  np.testing.assert_array_equal(first["features"], kept)
  assert first["features"].ctypes.data != second["features"].ctypes.data
  address = first["features"].ctypes.data
  del first
  again = pipe.batch(0, 0)  # Same bucket as batch 0: the released memory is reused, and the batch is the same.
  assert again["features"].ctypes.data == address
  np.testing.assert_array_equal(again["features"], kept)
  assert again["features"].ctypes.data % 64 == 0
