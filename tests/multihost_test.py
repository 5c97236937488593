"""`python -m hal_jax.main` as a job of two CPU processes of two devices each, against one process of four.

A TPU pod or a GPU cluster runs one process per host; here two local processes stand in for two hosts. Each joins the
job through the command line's --coordinator_address/--num_processes/--process_id (a localhost coordinator; CPU
collectives through gloo), reads only its half of every batch (`hal_jax.data.segmentation_pipeline`), and writes
checkpoints collectively with Orbax into the one shared workdir, as hosts would on a shared file system.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import atba as atba_config
from hal_jax import main
from hal_jax import metric_writer
from hal_jax import inference
from hal_jax import train
from hal_jax.data import synthetic

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OVERRIDES = dict(eval_every_epochs=100, checkpoint_every_steps=4, progress=False, tensorboard=False)
# A checkpoint of the middle of stage 2 (steps 6-11), which the reference keeps too.
MIDDLE_STEP = 8


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


def _two_process_env() -> dict[str, str]:
  """The environment of each process: two fake CPU devices (four in the job), the repository importable."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return env


def _run_processes(commands: list[list[str]], log_dir, timeout: float = 300) -> list[str]:
  """Runs the commands as concurrent processes; returns their stdouts after checking that each exited with 0.

  Output goes to files, not pipes: a process blocked on a full pipe that nobody reads yet would stall the
  collectives of the others.
  """
  paths = [(log_dir / f"{p}.out", log_dir / f"{p}.err") for p in range(len(commands))]
  workers = []
  for command, (out, err) in zip(commands, paths):
    with open(out, "w") as stdout, open(err, "w") as stderr:  # The child keeps its own copies.
      workers.append(subprocess.Popen(command, cwd=REPO, env=_two_process_env(), stdout=stdout, stderr=stderr))
  try:
    for worker in workers:
      worker.wait(timeout=timeout)
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
        worker.wait()
  for p, (worker, (_, err)) in enumerate(zip(workers, paths)):
    assert worker.returncode == 0, f"process {p}:\n{err.read_text()[-4000:]}"
  return [out.read_text() for out, _ in paths]


def _leaves(params) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(params))]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The synthetic "test" preset, shared by every process (as a data set on a shared file system would be)."""
  directory = str(tmp_path_factory.mktemp("multihost") / "data")
  synthetic.generate(directory, synthetic.PRESETS["test"])
  shutil.rmtree(os.path.join(directory, "latents"))  # No identifiability probe: evaluation stays short.
  return directory


def _config(data_dir, **overrides):
  config = atba_config.get_config("test")
  with config.unlocked():
    config.update(dict(_OVERRIDES, data_dir=data_dir, **overrides))
  return config


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """One process of four devices: params at MIDDLE_STEP and at the end, the final scores, the predictions dir.

  Trained to MIDDLE_STEP, then resumed to the end: bitwise the uninterrupted run (tests/train_test.py).
  """
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  config = _config(data_dir)
  partial = train.train_and_evaluate(config, workdir, stop_after_steps=MIDDLE_STEP)
  final = train.train_and_evaluate(config, workdir)
  main.execute(config, workdir, "predict")
  params = {MIDDLE_STEP: _leaves(partial.state.params), final.steps: _leaves(final.state.params)}
  return params, final.eval_metrics, workdir


def _assert_close(got, want):
  """Equal to within 1e-6 (see `test_main_runs_as_two_processes` for why not bitwise)."""
  for a, b in zip(got, want, strict=True):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def _command(workdir: str, data_dir: str, address: str, process_id: int, mode: str) -> list[str]:
  """One process of a two-process `python -m hal_jax.main` job (every process runs this, with its own id)."""
  return [sys.executable, "-m", "hal_jax.main", "--config=configs/atba.py:test", f"--workdir={workdir}",
          f"--mode={mode}", f"--config.data_dir={data_dir}", "--config.eval_every_epochs=100",
          "--config.checkpoint_every_steps=4", "--config.progress=false", "--config.tensorboard=false",
          f"--coordinator_address={address}", "--num_processes=2", f"--process_id={process_id}"]


def test_main_runs_as_two_processes(data_dir, reference, tmp_path):
  """`python -m hal_jax.main` on two processes x two devices trains, evaluates and predicts like one x four.

  Parameters agree to within 1e-6, not bitwise: the gradient all-reduce crosses processes through gloo, which adds
  the four per-device gradients in another order than XLA's in-process CPU all-reduce; float addition is not
  associative, so the sums differ in the last bit and Adam carries that forward (measured: 1.2e-7 after twelve
  steps). The batches, dropout keys and data order are identical, so anything else (a wrong row split, a process
  training on its own rows only, a missing all-reduce) shows up as an O(1e-2) difference. Both processes evaluate
  the whole test split and get the scores of one process, which process 0 alone prints; process 0 alone writes
  metrics.jsonl, config.json and the predictions; the checkpoints are written by both together.
  """
  shared = str(tmp_path / "shared")
  address = f"localhost:{_free_port()}"
  outputs = _run_processes([_command(shared, data_dir, address, p, "train") for p in range(2)], tmp_path)
  params, final_scores, reference_dir = reference
  config = _config(data_dir)

  # Training: the newest checkpoint (written by both processes together, read back here on one process of four
  # devices) holds the parameters of one process. Logs and config.json come from process 0 alone: one line per
  # logged step, not two.
  _, _, restored, _, step = inference.restore_trained(config, shared)
  assert step in params, step
  _assert_close(_leaves(restored), params[step])
  checkpoints = os.path.join(shared, "checkpoints")
  assert all(name.isdigit() for name in os.listdir(checkpoints)), os.listdir(checkpoints)
  records = metric_writer.read_metrics(os.path.join(shared, "metrics.jsonl"))
  assert [r["step"] for r in records if "train/loss" in r] == [2, 4, 6, 8, 10, 12]
  with open(os.path.join(shared, "config.json")) as f:
    assert json.load(f)["data_dir"] == data_dir

  # Evaluation: process 0 prints the scores of one process; process 1 prints nothing.
  assert step == 12
  printed = json.loads(outputs[0].strip().splitlines()[-1])
  assert not [line for line in outputs[1].splitlines() if line.startswith("{")]
  for key, value in final_scores.items():
    if key != "seconds":
      assert printed[key] == pytest.approx(value, abs=1e-6), key

  # Prediction: both processes predict, process 0 writes the files of one process.
  address = f"localhost:{_free_port()}"
  _run_processes([_command(shared, data_dir, address, p, "predict") for p in range(2)], tmp_path)
  predictions = os.path.join(shared, "predictions")
  expected = os.path.join(reference_dir, "predictions")
  assert sorted(os.listdir(predictions)) == sorted(os.listdir(expected))
  for name in os.listdir(expected):
    if name.endswith(".txt"):
      with open(os.path.join(predictions, name)) as got, open(os.path.join(expected, name)) as want:
        assert got.read() == want.read(), name
