"""Training from a prepared TFDS dataset (`config.tfds_name`): the task's data, and so every batch the loop sees,
equal the directory's; a run trains through the command line's code; a missing dataset, split or a second source is
one error naming the config key."""

import os

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets") if not os.environ.get("CI") else __import__("tensorflow_datasets")

import hal_jax.tfds  # noqa: E402,F401  (registers the builders)
from configs import ahlm as ahlm_config  # noqa: E402
from configs import atba as atba_config  # noqa: E402
from hal_jax import errors  # noqa: E402
from hal_jax import main  # noqa: E402
from hal_jax.data import synthetic  # noqa: E402
from hal_jax.tasks import localization as localization_task  # noqa: E402
from hal_jax.tasks import segmentation as segmentation_task  # noqa: E402

SEGMENTATION = "mstcn_segmentation/synthetic_test"
LOCALIZATION = "activitynet_localization/synthetic_test"


def _prepare(name, manual_dir, data_dir):
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  """(segmentation directory, localization directory, the TFDS data_dir where both are prepared)."""
  root = tmp_path_factory.mktemp("sources")
  segmentation = synthetic.generate(root / "seg", synthetic.PRESETS["test"])
  localization = synthetic.generate(root / "loc", synthetic.PRESETS["thumos_test"])
  tfds_dir = str(root / "tfds")
  _prepare(SEGMENTATION, segmentation, tfds_dir)
  _prepare(LOCALIZATION, localization, tfds_dir)
  return segmentation, localization, tfds_dir


def _config(base, preset="test", **keys):
  config = base.get_config(preset)
  with config.unlocked():
    config.progress = False
    config.tensorboard = False
    config.update(keys)
  return config


def _assert_same_batches(a, b):
  assert a.num_batches_per_epoch == b.num_batches_per_epoch
  for epoch in (0, 1):
    for x, y in zip(a.epoch_batches(epoch), b.epoch_batches(epoch), strict=True):
      assert x.keys() == y.keys()
      for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_segmentation_from_tfds_equals_the_directory(sources, tmp_path):
  segmentation, _, tfds_dir = sources
  from_files = segmentation_task.load(_config(atba_config, data_dir=segmentation), str(tmp_path / "a"))
  from_tfds = segmentation_task.load(_config(atba_config, tfds_name=SEGMENTATION, tfds_data_dir=tfds_dir),
                                     str(tmp_path / "b"))
  assert from_tfds.data_dir == os.path.join(tfds_dir, *SEGMENTATION.split("/"), "1.0.0")
  assert from_tfds.label_map == from_files.label_map and from_tfds.background_id == from_files.background_id
  for name in ("train_pipeline", "test_pipeline", "train_eval_pipeline"):
    _assert_same_batches(getattr(from_tfds, name), getattr(from_files, name))


def test_localization_from_tfds_equals_the_directory(sources, tmp_path):
  _, localization, tfds_dir = sources
  from_files = localization_task.load(_config(ahlm_config, data_dir=localization), str(tmp_path / "a"))
  from_tfds = localization_task.load(_config(ahlm_config, tfds_name=LOCALIZATION, tfds_data_dir=tfds_dir),
                                     str(tmp_path / "b"))
  assert from_tfds.label_map == from_files.label_map
  for name in ("train_pipeline", "test_pipeline", "train_eval_pipeline"):
    _assert_same_batches(getattr(from_tfds, name), getattr(from_files, name))
  # The ground truth that scores the predictions: the evaluated subsets' entries of gt.json, rebuilt from the examples.
  assert from_tfds.ground_truth == {name: video for name, video in from_files.ground_truth.items()
                                    if video.subset in ("train", "test")}


def test_a_run_trains_and_evaluates_from_tfds(sources, tmp_path):
  _, _, tfds_dir = sources
  config = _config(atba_config, tfds_name=SEGMENTATION, tfds_data_dir=tfds_dir, num_epochs=1)
  outputs = main.execute(config, str(tmp_path / "run"), "train")
  assert outputs["step"] == 3 and 0.0 <= outputs["mof"] <= 100.0
  assert not os.path.exists(tmp_path / "run" / "data")  # Nothing generated: the synthetic preset is not used.


@pytest.mark.parametrize("keys, error, where, what", [
    (dict(data_dir="/somewhere"), errors.ConfigError, "config.tfds_name", "both name the data; set one of them"),
    (dict(tfds_name="no_such_dataset/x"), errors.ConfigError, "config.tfds_name", "is not a registered TFDS dataset"),
    (dict(split=2), errors.ConfigError, "config.split", "has no split 'train_split2'"),
    (dict(feature_dim=32), errors.ConfigError, "config.feature_dim", "has features of dimension 16"),
    (dict(tfds_data_dir="EMPTY"), errors.DataError, "EMPTY", "is not prepared here"),
])
def test_bad_tfds_source_is_one_error_naming_the_key(sources, tmp_path, keys, error, where, what):
  keys = dict(dict(tfds_name=SEGMENTATION, tfds_data_dir=sources[2]), **keys)
  if keys["tfds_data_dir"] == "EMPTY":
    keys["tfds_data_dir"] = str(tmp_path / "empty")
  with pytest.raises(error, match=what) as info:
    segmentation_task.load(_config(atba_config, **keys), str(tmp_path / "run"))
  assert str(info.value.where).startswith(where.replace("EMPTY", str(tmp_path / "empty")))
