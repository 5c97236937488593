"""Kill anywhere, lose nothing: `python -m hal_jax.main` killed at every kind of point and resumed.

One training run of the tiny ATBA preset (12 steps, a checkpoint every 2 steps, an evaluation every epoch of 3
steps, stage 2 from step 7) is SIGKILLed at five kinds of points, stopped once with SIGTERM and once with SIGINT, and
resumed with the same command each time; then a `--mode=predict` run is SIGKILLed halfway through writing its
prediction set. The kills come from `tests/kill_driver.py`, which wraps library functions from outside, so
each one lands exactly where it is meant to (it logs where it landed) and hal_jax itself has no kill switch.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import atba as atba_config
from hal_jax import inference
from hal_jax import train
from hal_jax.data import synthetic

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(REPO, "tests", "kill_driver.py")
_OVERRIDES = dict(checkpoint_every_steps=2, eval_every_epochs=1, progress=False, tensorboard=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The synthetic "test" preset without true latents (evaluation skips the identifiability probe: faster)."""
  directory = str(tmp_path_factory.mktemp("faults") / "data")
  synthetic.generate(directory, synthetic.PRESETS["test"])
  shutil.rmtree(os.path.join(directory, "latents"))
  return directory


def _config(data_dir):
  config = atba_config.get_config("test")
  with config.unlocked():
    config.update(dict(_OVERRIDES, data_dir=data_dir))
  return config


def _command(workdir: str, data_dir: str) -> list[str]:
  return ["--config=configs/atba.py:test", f"--workdir={workdir}", f"--config.data_dir={data_dir}",
          *(f"--config.{key}={str(value).lower()}" for key, value in _OVERRIDES.items())]


def _run(workdir: str, data_dir: str, kill_at: str | None, kill_log: str,
         mode: str = "train") -> subprocess.CompletedProcess:
  """One run: through the kill driver with `kill_at`, or the plain command line when it is None."""
  program = [DRIVER] if kill_at else ["-m", "hal_jax.main"]
  env = dict(os.environ, KILL_AT=kill_at or "", KILL_LOG=kill_log)
  command = [sys.executable, *program, *_command(workdir, data_dir), f"--mode={mode}"]
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def _last_logged(kill_log: str) -> str:
  with open(kill_log, encoding="utf-8") as f:
    return f.read().splitlines()[-1]


def _acceptable(landed: str) -> tuple[str, ...]:
  """`landed`, and for a running step also a finished one: the driver checks right after the asynchronous dispatch
  whether the step is still computing, which it always is unless the machine stalled this process in between (the
  step takes tens of milliseconds); a kill right after the step, before its results are fetched, must not lose
  anything either."""
  return (landed, landed.replace("running", "finished")) if landed.endswith("running") else (landed,)


def _file_bytes(directory: str) -> dict[str, bytes]:
  """relative path -> content of every file under `directory`."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      with open(os.path.join(root, name), "rb") as f:
        files[os.path.relpath(os.path.join(root, name), directory)] = f.read()
  return files


def _step_dirs(workdir: str) -> list[str]:
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def _assert_every_checkpoint_readable(workdir: str) -> list[int]:
  """Every finished step directory restores (state and metadata, finite parameters); returns their steps."""
  directory = os.path.join(workdir, "checkpoints")
  manager = ocp.CheckpointManager(directory, item_names=("state", "meta"))
  try:
    steps = sorted(manager.all_steps())
    for step in steps:
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                              meta=ocp.args.JsonRestore()))
      assert restored["meta"]["step"] == step
      assert int(restored["state"]["step"]) == step
      assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(restored["state"]["params"]))
  finally:
    manager.close()
  return steps


def test_killed_anywhere_and_resumed_ends_bitwise_equal(data_dir, tmp_path):
  """SIGKILL in a running step, in a save, right after a save, in an evaluation and in the start-up restore; then a
  SIGTERM. After each: every checkpoint directory left restores, and nothing half-written looks finished. The last
  run ends with bitwise the parameters (and exactly the scores) of an uninterrupted run."""
  reference = train.train_and_evaluate(_config(data_dir), str(tmp_path / "reference"))
  workdir = str(tmp_path / "run")
  kill_log = str(tmp_path / "kills.log")

  # (what the driver kills, where the kill must have landed, the newest finished checkpoint afterwards)
  kills = [
      ("step:5", "step 5 running", 4),  # Mid-epoch 1, the state's buffers donated to the running step.
      ("eval:1", "eval after 1 predicted batch(es)", 4),  # Evaluation at the end of epoch 1 (step 6), before save 6.
      ("commit:1", "commit 6 before rename (commit file written)", 4),  # Save 6: complete but for the rename.
      ("after_save:1", "after save 6", 6),  # Next run resumes at the stage switch (epoch 2: new optimizer state).
      ("restore:1", "restore 6", 6),  # Start-up, reading checkpoint 6.
  ]
  for kill_at, landed, newest in kills:
    result = _run(workdir, data_dir, kill_at, kill_log)
    assert result.returncode == -signal.SIGKILL, (kill_at, result.returncode, result.stderr[-3000:])
    assert _last_logged(kill_log) in _acceptable(landed)
    assert _assert_every_checkpoint_readable(workdir)[-1] == newest, kill_at
    leftovers = [name for name in _step_dirs(workdir) if not name.isdigit()]
    if kill_at.startswith("commit"):
      # The killed save left its temporary directory, which Orbax never takes for a checkpoint ...
      assert leftovers and all(".orbax-checkpoint-tmp" in name for name in leftovers), leftovers
    else:
      assert not leftovers, (kill_at, leftovers)  # ... and the next run removes it.

  # SIGTERM in step 9 (the end of epoch 2): the run evaluates, saves step 9 (off the 2-step cadence), prints its
  # result line and exits with status 0.
  result = _run(workdir, data_dir, "sigterm:3", kill_log)
  assert result.returncode == 0, result.stderr[-3000:]
  assert _last_logged(kill_log) in _acceptable("step 3 running")
  assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 9
  assert "Traceback" not in result.stderr
  assert _assert_every_checkpoint_readable(workdir)[-1] == 9

  # SIGINT (Ctrl-C) in step 10: handled the same way, the result line printed at step 10.
  result = _run(workdir, data_dir, "sigint:1", kill_log)
  assert result.returncode == 0, result.stderr[-3000:]
  assert _last_logged(kill_log) in _acceptable("step 1 running")
  assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 10
  assert "Traceback" not in result.stderr
  assert _assert_every_checkpoint_readable(workdir)[-1] == 10

  # The same command once more finishes the run.
  result = _run(workdir, data_dir, None, kill_log)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = json.loads(result.stdout.strip().splitlines()[-1])
  assert printed["step"] == 12
  assert _assert_every_checkpoint_readable(workdir)[-1] == 12
  assert all(name.isdigit() for name in _step_dirs(workdir))
  _, _, params, _, step = inference.restore_trained(_config(data_dir), workdir)
  assert step == 12
  want = jax.tree.leaves(jax.device_get(reference.state.params))
  for got, expected in zip(jax.tree.leaves(jax.device_get(params)), want, strict=True):
    np.testing.assert_array_equal(got, expected)
  for key, value in reference.eval_metrics.items():
    if key != "seconds":
      assert printed[key] == value, key

  # Prediction files are swapped in whole: a --mode=predict run SIGKILLed after writing 2 of the test videos' label
  # files and plots leaves the previous prediction set byte for byte (and only a hidden staging directory).
  result = _run(workdir, data_dir, None, kill_log, mode="predict")
  assert result.returncode == 0, result.stderr[-3000:]
  predictions = os.path.join(workdir, "predictions")
  before = _file_bytes(predictions)
  assert len([name for name in before if name.endswith(".txt")]) >= 3, sorted(before)
  result = _run(workdir, data_dir, "plot:2", kill_log, mode="predict")
  assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
  assert _last_logged(kill_log) == "plot 2 written"
  assert _file_bytes(predictions) == before
  leftovers = [name for name in os.listdir(workdir) if name.startswith(".predictions")]
  assert leftovers and all(name.startswith(".predictions.tmp-") for name in leftovers), leftovers
