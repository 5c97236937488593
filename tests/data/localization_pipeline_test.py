"""Tests for hal_jax.data.localization_pipeline: binned sampling, static shapes and masks, determinism, resume,
multi-host slices and the tf.data stream."""

import jax
import numpy as np
import pytest

from hal_jax import sharding
from hal_jax.data import localization_pipeline as lp
from hal_jax.data.localization_formats import LocalizationDataset, LocalizationVideo
from hal_jax.data.formats import LabelMap
from hal_jax.errors import ConfigError, DataError

NUM_CLASSES, FEATURE_DIM = 4, 3
# 7 videos: with batch 4 the second batch holds 3 videos and 1 padding video.
LENGTHS = (5, 30, 12, 64, 9, 20, 41)


def make_dataset(lengths=LENGTHS, seed=0) -> LocalizationDataset:
  rng = np.random.default_rng(seed)
  videos = []
  for i, length in enumerate(lengths):
    # Feature row t holds t in column 0, so the sampled snippets can be read back from a batch.
    features = rng.normal(size=(length, FEATURE_DIM)).astype(np.float32)
    features[:, 0] = np.arange(length)
    labels = np.array([i % NUM_CLASSES, (i + 1) % NUM_CLASSES] if i % 2 else [i % NUM_CLASSES], np.int32)
    videos.append(LocalizationVideo(f"video_{i}", "train", length / 2.0, 2.0, features,
                                    np.zeros([len(labels), 2]), labels))
  return LocalizationDataset("/data/toy", LabelMap(tuple(f"c{i}" for i in range(NUM_CLASSES))), tuple(videos), None)


def make_pipeline(train, dataset=None, **kwargs) -> lp.LocalizationPipeline:
  args = dict(batch_size=4, seed=3, process_index=0, process_count=1, num_devices=4)
  args.update(dict(train_length=16) if train else dict(bucket_lengths=(32, 64)))
  args.update(kwargs)
  return lp.LocalizationPipeline(dataset or make_dataset(), train=train, **args)


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for name in a:
    assert a[name].dtype == b[name].dtype, name
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_binned_snippets_take_one_ordered_snippet_per_bin():
  rng = np.random.default_rng(0)
  np.testing.assert_array_equal(lp.binned_snippets(5, 8, rng), np.arange(5))  # short: all snippets
  for num_snippets, length in ((30, 16), (17, 16), (750 * 7 + 3, 750)):
    picked = lp.binned_snippets(num_snippets, length, rng)
    edges = np.arange(length + 1) * num_snippets // length
    assert len(picked) == length
    assert np.all((picked >= edges[:-1]) & (picked < edges[1:]))
  # Uniform within a bin: both ends of a 2-snippet bin are drawn.
  draws = np.stack([lp.binned_snippets(4, 2, rng) for _ in range(50)])
  assert set(draws[:, 0]) == {0, 1} and set(draws[:, 1]) == {2, 3}


def test_training_batches_have_static_shapes_masks_and_labels():
  pipeline = make_pipeline(train=True)
  assert pipeline.num_batches_per_epoch == 2
  spec = pipeline.batch_spec()
  for index in range(2):
    batch = pipeline.batch(0, index)
    for name, value in batch.items():
      assert value.shape == spec[name].shape and value.dtype == spec[name].dtype, name
    for row in range(4):
      video = int(batch["video_index"][row])
      if video < 0:
        assert not batch["batch_mask"][row] and batch["num_frames"][row] == 0
        assert not batch["frame_mask"][row].any() and not batch["video_labels"][row].any()
        continue
      n = min(LENGTHS[video], 16)
      assert batch["num_frames"][row] == n
      np.testing.assert_array_equal(batch["frame_mask"][row], np.arange(16) < n)
      np.testing.assert_array_equal(batch["features"][row, n:], 0.0)
      snippets = batch["features"][row, :n, 0]
      assert np.all(np.diff(snippets) > 0)  # the order of the video is kept
      expected = np.zeros(NUM_CLASSES)
      expected[make_dataset().videos[video].labels] = 1.0
      np.testing.assert_array_equal(batch["video_labels"][row], expected)
  order = np.concatenate([pipeline.batch(0, i)["video_index"] for i in range(2)])
  assert sorted(order[order >= 0]) == list(range(len(LENGTHS)))


def test_order_and_snippets_are_pure_functions_of_seed_and_epoch():
  a, b = make_pipeline(train=True), make_pipeline(train=True)
  assert_batches_equal(a.batch(2, 1), b.batch(2, 1))
  assert not np.array_equal(a.epoch_order(0), a.epoch_order(1))
  # Video 3 (64 snippets) gets new snippets each epoch.
  assert not np.array_equal(a.feature_rows(0, 3), a.feature_rows(1, 3))
  assert not np.array_equal(a.epoch_order(0), make_pipeline(train=True, seed=4).epoch_order(0))


def test_test_batches_use_every_snippet_in_dataset_order_and_buckets():
  pipeline = make_pipeline(train=False)
  first, second = pipeline.batch(0, 0), pipeline.batch(0, 1)
  np.testing.assert_array_equal(first["video_index"], [0, 1, 2, 3])
  np.testing.assert_array_equal(second["video_index"], [4, 5, 6, -1])
  assert first["features"].shape[1] == 64 and second["features"].shape[1] == 64  # 64 and 41 snippets
  short = make_pipeline(train=False, dataset=make_dataset((5, 9, 30)))
  assert short.batch(0, 0)["features"].shape[1] == 32
  np.testing.assert_array_equal(first["features"][3, :, 0], np.arange(64))
  np.testing.assert_array_equal(first["num_frames"], [5, 30, 12, 64])


def test_tf_stream_equals_direct_batches_and_resumes_exactly():
  pipeline = make_pipeline(train=True)
  direct = [pipeline.batch(e, i) for e in range(2) for i in range(2)]
  streamed = [batch for _, _, batch in pipeline.stream(0, 0, 2)]
  assert len(streamed) == 4
  for a, b in zip(direct, streamed):
    assert_batches_equal(a, b)
  resumed = [(e, i) for e, i, _ in pipeline.stream(0, 1, 2)]
  assert resumed == [(0, 1), (1, 0), (1, 1)]
  assert_batches_equal(next(pipeline.epoch_batches(1, start_batch=1)), direct[3])


def test_global_stream_is_sharded_on_the_data_axis():
  mesh = sharding.make_mesh()
  pipeline = make_pipeline(train=True, num_devices=len(jax.devices()))
  epoch, index, batch = next(pipeline.global_stream(mesh, 0, 0, 1))
  assert (epoch, index) == (0, 0)
  assert batch["features"].sharding.spec == sharding.batch_sharding(mesh).spec
  np.testing.assert_array_equal(np.asarray(batch["features"]), pipeline.batch(0, 0)["features"])
  assert len(list(pipeline.global_batches(1, mesh))) == 2


def test_hosts_build_contiguous_slices_of_the_same_global_batch():
  whole = make_pipeline(train=True).batch(1, 0)
  halves = [make_pipeline(train=True, process_index=p, process_count=2).batch(1, 0) for p in range(2)]
  for name in whole:
    np.testing.assert_array_equal(np.concatenate([h[name] for h in halves]), whole[name], err_msg=name)


def test_bad_arguments_and_data_raise_before_training():
  with pytest.raises(ConfigError, match="train_length"):
    make_pipeline(train=True, train_length=None)
  with pytest.raises(ConfigError, match="bucket_lengths"):
    make_pipeline(train=False, bucket_lengths=(32,))  # video 3 has 64 snippets
  with pytest.raises(ConfigError, match="batch_size"):
    make_pipeline(train=True, batch_size=6)
  with pytest.raises(DataError, match="no videos"):
    make_pipeline(train=True, dataset=LocalizationDataset("/x", LabelMap(("a",)), (), None))
  bad = make_dataset((5, 6))
  video = bad.videos[1]
  mixed = LocalizationDataset("/x", bad.label_map, (bad.videos[0], LocalizationVideo(
      video.name, "train", 3.0, 2.0, np.zeros((6, FEATURE_DIM + 1), np.float32), video.segments, video.labels)), None)
  with pytest.raises(DataError, match="feature dim"):
    make_pipeline(train=True, dataset=mixed)
