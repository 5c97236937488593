"""TFDS builders over synthetic files in the MS-TCN and localization layouts: `tfds.load` reads them, offline, and
the prepared splits equal what the directory readers give (so the training pipelines read either source)."""

import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets") if not os.environ.get("CI") else __import__("tensorflow_datasets")

import hal_jax.tfds  # noqa: E402,F401  (registers the builders)
from hal_jax.data import localization_formats  # noqa: E402
from hal_jax.data import segmentation_formats  # noqa: E402
from hal_jax.data import synthetic  # noqa: E402
from hal_jax.tfds import source  # noqa: E402


@pytest.fixture(scope="module")
def mstcn_dir(tmp_path_factory):
  return synthetic.generate(tmp_path_factory.mktemp("data") / "seg", synthetic.PRESETS["test"])


@pytest.fixture(scope="module")
def localization_dir(tmp_path_factory):
  return synthetic.generate(tmp_path_factory.mktemp("data") / "loc", synthetic.PRESETS["finegym_test"])


def test_tfds_load_reads_the_mstcn_layout(mstcn_dir, tmp_path):
  config = tfds.download.DownloadConfig(manual_dir=mstcn_dir)
  dataset, info = tfds.load("mstcn_segmentation/synthetic_test", split="test_split1", data_dir=str(tmp_path),
                            with_info=True, download_and_prepare_kwargs={"download_config": config})
  expected = segmentation_formats.load_mstcn_split(mstcn_dir, "test", 1)
  examples = sorted(tfds.as_numpy(dataset), key=lambda e: int(e["index"]))
  assert [e["video"].decode() for e in examples] == [v.name for v in expected.videos]
  assert info.metadata["class_names"] == list(expected.label_map.names)
  assert set(info.splits) == {"train_split1", "test_split1"}
  for example, video in zip(examples, expected.videos):
    np.testing.assert_array_equal(example["features"], video.features)
    np.testing.assert_array_equal(example["frame_labels"], video.labels)
    np.testing.assert_array_equal(example["transcript"], video.transcript)


def test_segmentation_source_equals_the_directory_reader(mstcn_dir, tmp_path):
  from_tfds = source.segmentation_split("mstcn_segmentation/synthetic_test", "train_split1", data_dir=str(tmp_path),
                                        manual_dir=mstcn_dir)
  from_files = segmentation_formats.load_mstcn_split(mstcn_dir, "train", 1)
  assert from_tfds.label_map == from_files.label_map
  assert [v.name for v in from_tfds.videos] == [v.name for v in from_files.videos]
  for a, b in zip(from_tfds.videos, from_files.videos):
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.transcript, b.transcript)


def test_localization_source_equals_the_directory_reader(localization_dir, tmp_path):
  from_files = localization_formats.load_localization_split(localization_dir, "test")
  from_tfds = source.localization_split("activitynet_localization/synthetic_test", "test", data_dir=str(tmp_path),
                                        manual_dir=localization_dir)
  assert from_tfds.label_map == from_files.label_map and from_tfds.fine_to_coarse == from_files.fine_to_coarse
  assert from_files.fine_to_coarse  # FineGym-like: the hierarchy travels in the metadata
  for a, b in zip(from_tfds.videos, from_files.videos, strict=True):
    assert (a.name, a.subset, a.duration, a.feature_fps) == (b.name, b.subset, b.duration, b.feature_fps)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.segments, b.segments)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_bad_manual_dir_stops_the_build_with_the_readers_error(mstcn_dir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  broken = tmp_path / "broken"
  shutil.copytree(mstcn_dir, broken)
  victim = sorted((broken / "features").iterdir())[0]
  victim.write_bytes(victim.read_bytes()[:40])
  builder = tfds.builder("mstcn_segmentation/synthetic_test", data_dir=str(tmp_path / "out"))
  from hal_jax.errors import DataError  # pylint: disable=g-import-not-at-top
  with pytest.raises(DataError, match=f"{victim.name}: cannot read .npy array"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(broken)))
