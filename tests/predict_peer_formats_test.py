"""`--mode=predict --peer_formats`: the prediction set also holds the files the field's reference evaluators read
unchanged (MS-TCN result files; ActivityNet JSON in tests/localization_task_test.py), read back the way those
evaluators parse them (tests/peer_formats_test.py restates their parsing)."""

import os

import numpy as np
import pytest

from configs import atba as atba_config
from configs import hclip as hclip_config
from hal_jax import main
from hal_jax import peer_formats
from hal_jax.data import segmentation_formats
from hal_jax.data import synthetic
from tests.peer_formats_test import mstcn_parse


def _config(data_dir):
  config = atba_config.get_config("test")
  with config.unlocked():
    config.data_dir = str(data_dir)
    config.progress = False
    config.tensorboard = False
    config.num_epochs = 1
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return synthetic.generate(str(tmp_path_factory.mktemp("data") / "seg"), synthetic.PRESETS["test"])


def _assert_one_error(capsys, run, where, what):
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:
    run()
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {where}: {what}"


def test_peer_formats_outside_predict_is_refused(capsys, data_dir, tmp_path):
  _assert_one_error(capsys, lambda: main.execute(_config(data_dir), str(tmp_path / "run"), "train", peer_formats=True),
                    "--peer_formats", "writes prediction files: use it with --mode=predict, not train")
  assert not os.path.exists(tmp_path / "run")


def test_recognition_has_no_peer_format(capsys, tmp_path):
  os.makedirs(tmp_path / "run")
  _assert_one_error(capsys, lambda: main.execute(hclip_config.get_config("test"), str(tmp_path / "run"), "predict",
                                                 peer_formats=True),
                    "--peer_formats", "the recognition task has no peer format (segmentation: MS-TCN result files, "
                    "localization: ActivityNet JSON)")
  assert os.listdir(tmp_path / "run") == []


def test_predict_writes_mstcn_result_files_that_its_evaluator_reads(data_dir, tmp_path):
  from hal_jax import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  config = _config(data_dir)
  train.train_and_evaluate(config, workdir, stop_after_steps=1)
  outputs = main.execute(config, workdir, "predict", peer_formats=True)
  results = os.path.join(workdir, "predictions", peer_formats.MSTCN_DIRECTORY)
  assert outputs["peer_formats"] == results
  test = segmentation_formats.load_mstcn_split(data_dir, "test", 1)
  names = [video.name for video in test.videos]
  assert sorted(os.listdir(results)) == sorted(names) and outputs["videos"] == len(names)
  # The MS-TCN evaluator's accuracy over its files equals the MoF of the project's own per-frame label files.
  predicted = {n: segmentation_formats.read_frame_labels(os.path.join(workdir, "predictions", f"{n}.txt"),
                                                         test.label_map) for n in names}
  for name in names:
    assert peer_formats.read_mstcn_result(os.path.join(results, name)) == [test.label_map.names[i]
                                                                           for i in predicted[name]]
  expected = 100.0 * np.mean(np.concatenate([predicted[v.name] == v.labels for v in test.videos]))
  assert mstcn_parse(os.path.join(data_dir, "groundTruth") + os.sep, results + os.sep, names) == pytest.approx(expected)
