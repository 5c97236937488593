"""Export for deployment: the exported predictor of a trained run gives the in-process predictor's outputs on every
test batch (several padded lengths: one shape-polymorphic program), and the loader runs without the training code."""

import os
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from configs import hal as hal_config
from hal_jax import inference
from hal_jax import deploy
from hal_jax import errors
from hal_jax import export
from hal_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("hal"))
  config = hal_config.get_config("test")
  with config.unlocked():
    config.num_epochs = 2
    config.tensorboard = False
  train.train_and_evaluate(config, workdir)
  out = os.path.join(workdir, "model.zip")
  meta = export.export_workdir(workdir, out)
  return workdir, config, out, meta


@pytest.mark.slow
def test_exported_outputs_equal_the_in_process_predictor(trained):
  workdir, config, out, meta = trained
  assert meta["inputs"] == {"features": {"shape": ["b", "64*k", "16"], "dtype": "float32"},
                            "frame_mask": {"shape": ["b", "64*k"], "dtype": "bool"}}
  assert "frame_logits" in meta["outputs"] and meta["method"] == "hal" and meta["time_multiple"] == 64
  data, method, params, _, step = inference.restore_trained(config, workdir)
  assert meta["step"] == step
  predictor = deploy.load(out)
  predict = jax.jit(method.predict)
  lengths = set()
  for batch in data.test_pipeline.epoch_batches(0):
    expected = jax.device_get(predict(params, batch))
    got = predictor({name: batch[name] for name in meta["inputs"]})
    assert set(got) == set(expected)
    for name in expected:
      np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5, err_msg=name)
    lengths.add(batch["features"].shape[1])
    # One video alone, padded by the loader: its rows of the batch output.
    row = int(np.flatnonzero(batch["batch_mask"])[0])
    n = int(batch["frame_mask"][row].sum())
    alone = predictor.predict_video(batch["features"][row, :n])
    np.testing.assert_allclose(alone["frame_logits"], expected["frame_logits"][row, :n], rtol=1e-4, atol=1e-4)
  # A padded length the export never saw (the test preset has one bucket): the batch padded to twice its length.
  (length,) = lengths
  spec = data.test_pipeline.batch_spec(2 * length)
  longer = {name: np.concatenate([value, np.zeros((value.shape[0], length) + value.shape[2:], value.dtype)], axis=1)
            if spec[name].shape[1:2] == (2 * length,) else value for name, value in batch.items()}
  expected = jax.device_get(predict(params, longer))
  got = predictor({name: longer[name] for name in meta["inputs"]})
  assert got["frame_logits"].shape == (len(batch["features"]), 2 * length, len(meta["class_names"]))
  for name in expected:
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_loader_runs_without_the_training_code(trained):
  out = trained[2]
  script = (
      "import sys, numpy as np\n"
      "from hal_jax import deploy\n"
      f"p = deploy.load({out!r})\n"
      "o = p.predict_video(np.random.default_rng(0).normal(size=(100, 16)))\n"
      "assert o['frame_logits'].shape == (100, len(p.class_names)), o['frame_logits'].shape\n"
      "heavy = [m for m in ('hal_jax.train', 'hal_jax.methods', 'flax', 'tensorflow', 'optax', 'orbax')"
      " if m in sys.modules]\n"
      "assert not heavy, heavy\n"
      "print('ok')\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=300, check=False)
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
  with zipfile.ZipFile(out) as archive:
    assert sorted(archive.namelist()) == [export.META, export.PROGRAM]


def test_export_bad_workdir(tmp_path):
  with pytest.raises(errors.ConfigError, match="not a directory"):
    export.export_workdir(str(tmp_path / "nope"), str(tmp_path / "m.zip"))
  with pytest.raises(errors.DataError, match="config.json: file not found"):
    export.export_workdir(str(tmp_path), str(tmp_path / "m.zip"))
  assert not (tmp_path / "m.zip").exists()
