"""Lazily read features (hal_jax.data.formats.FeatureFile): the values of the whole array, the batches of the
in-memory split, and a set larger than a memory cap iterated under that cap."""

import dataclasses
import os
import sys

import numpy as np
import pytest

from hal_jax.data import formats
from hal_jax.data import segmentation_formats
from hal_jax.data import segmentation_pipeline as pipeline
from hal_jax.errors import DataError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "benchmarks"))

import dataset_memory  # pylint: disable=wrong-import-position


@pytest.mark.parametrize("layout", ["DT", "TD"])
@pytest.mark.parametrize("fortran", [False, True])
@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f2", "<f8"])
def test_take_and_whole_array_equal_the_eager_read(tmp_path, layout, fortran, dtype):
  rng = np.random.default_rng(0)
  shape = [5, 37] if layout == "DT" else [37, 5]  # T = 37 frames of D = 5.
  stored = (rng.standard_normal(shape) * 3).astype(dtype)
  path = tmp_path / "f.npy"
  np.save(path, np.asfortranarray(stored) if fortran else stored)
  # What the reader returned before it was lazy: the whole array as float32 [T, D].
  expected = np.ascontiguousarray(stored.T if layout == "DT" else stored, dtype=np.float32)

  file = formats.open_features(path, layout)
  assert file.shape == expected.shape and file.dtype == np.float32 and len(file) == len(expected)
  whole = np.asarray(file)
  assert whole.dtype == np.float32 and whole.flags.c_contiguous
  np.testing.assert_array_equal(whole, expected)
  rows = np.array([0, 3, 3, 10, len(expected) - 1])
  out = np.full([len(rows) + 2, expected.shape[1]], -7.0, np.float32)
  file.take(rows, axis=0, out=out[1:-1], mode="clip")
  np.testing.assert_array_equal(out[1:-1], expected[rows])
  assert (out[0] == -7).all() and (out[-1] == -7).all()  # Only the given rows are written.
  np.testing.assert_array_equal(file.take(rows), expected[rows])

  trimmed = file.trimmed(4)
  np.testing.assert_array_equal(np.asarray(trimmed), expected[:4])
  np.testing.assert_array_equal(trimmed.take([9], mode="clip"), expected[[3]])  # Clipped to the trimmed length.
  with pytest.raises(IndexError):
    trimmed.take([4])


@pytest.mark.parametrize("layout", ["DT", "TD"])
def test_validation_pass_counts_non_finite_values_across_chunks(tmp_path, layout, monkeypatch):
  monkeypatch.setattr(formats, "_CHUNK_BYTES", 64)  # A few rows per chunk: the bad values fall in several.
  features = np.zeros([40, 6], np.float32)  # [T, D]
  features[[7, 7, 30], [1, 4, 0]] = [np.nan, np.inf, -np.inf]
  path = tmp_path / "f.npy"
  formats.write_features(path, features, layout)
  with pytest.raises(DataError, match="3 non-finite feature values .* in 2 frames, first at frame 7"):
    formats.open_features(path, layout)


def test_a_file_changed_after_validation_is_a_data_error(tmp_path):
  path = tmp_path / "f.npy"
  formats.write_features(path, np.ones([10, 4], np.float32), "TD")
  file = formats.open_features(path, "TD")
  formats.write_features(path, np.ones([2, 4], np.float32), "TD")
  with pytest.raises(DataError, match="did it change after it was validated"):
    file.take([0])


@pytest.mark.parametrize("layout", ["DT", "TD"])
def test_pipeline_batches_from_files_equal_those_from_arrays(tmp_path, layout):
  lengths = (23, 50, 9, 41, 30)
  rng = np.random.default_rng(1)
  label_map = formats.LabelMap(("a", "b", "c"))
  formats.write_mapping(tmp_path / "mapping.txt", label_map)
  for i, length in enumerate(lengths):
    names = [label_map.names[(t // 8) % 3] for t in range(length)]
    segmentation_formats.write_mstcn_video(tmp_path, f"v{i}", rng.standard_normal([length, 16]), names,
                                           layout=layout)
  formats.write_split_list(segmentation_formats.split_path(tmp_path, "train", 1), [f"v{i}" for i in range(5)])
  lazy = segmentation_formats.load_mstcn_split(tmp_path, "train", feature_layout=layout)
  assert all(isinstance(v.features, formats.FeatureFile) for v in lazy.videos)
  in_memory = dataclasses.replace(lazy, videos=tuple(dataclasses.replace(v, features=np.asarray(v.features))
                                                     for v in lazy.videos))
  for train in (True, False):
    pipes = [pipeline.SegmentationPipeline(dataset, batch_size=2, sample_rate=3, bucket_lengths=(8, 17),
                                           max_transcript=8, seed=3, train=train, process_index=0, process_count=1,
                                           num_devices=1) for dataset in (lazy, in_memory)]
    for epoch in (0, 1):
      for index in range(pipes[0].num_batches_per_epoch):
        a, b = (p.batch(epoch, index) for p in pipes)
        assert a.keys() == b.keys()
        for name in a:
          np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_set_four_times_the_memory_cap_iterates_under_the_cap(tmp_path):
  """16 videos of 2000 x 1024 float32 (125 MiB) through the pipeline with 32 MiB of data-segment headroom."""
  set_bytes = dataset_memory.write_set(str(tmp_path), videos=16, frames=2000, dim=1024, layout="DT")
  cap_mb = 32
  assert set_bytes > 3.9 * cap_mb * 2**20
  result = dataset_memory.run_child(str(tmp_path), "DT", batch=4, sample_rate=10, epochs=1, cap_mb=cap_mb)
  assert result["batches"] == 4
  assert result["rss_growth_mb"] < cap_mb, result
