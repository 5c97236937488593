"""`python -m hal_jax.main` as a job of two CPU processes of two devices each, against one process of four.

A TPU pod or a GPU cluster runs one process per host; here two local processes stand in for two hosts. Each joins the
job through the command line's --coordinator_address/--num_processes/--process_id (a localhost coordinator; CPU
collectives through gloo), reads only its half of every batch (`hal_jax.data.batching`), and writes checkpoints
collectively with Orbax into the one shared workdir, as hosts would on a shared file system.

Every method's "test" preset runs once as a two-process training job (ATBA: also `--mode=eval` and
`--mode=predict`); one ATBA job is stopped by a SIGTERM sent to one of its processes and resumed. The two-process
runs are the expensive part (start-up, joining, compiling in each process), so each is shared by all its asserts.
"""

import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

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
_MAIN = ("-m", "hal_jax.main")


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


def _two_process_env() -> dict[str, str]:
  """The environment of each process: two fake CPU devices (four in the job), the repository importable."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return env


def _run_processes(commands: list[list[str]], log_dir, timeout: float = 300,
                   extra_env: tuple[dict[str, str], ...] = ({}, {})) -> tuple[list[str], list[str]]:
  """Runs the commands as concurrent processes; returns their stdouts and stderrs after checking that each exited
  with 0. `extra_env[p]` is added to process p's environment.

  Output goes to files, not pipes: a process blocked on a full pipe that nobody reads yet would stall the
  collectives of the others.
  """
  paths = [(log_dir / f"{p}.out", log_dir / f"{p}.err") for p in range(len(commands))]
  workers = []
  for command, (out, err), extra in zip(commands, paths, extra_env):
    with open(out, "w") as stdout, open(err, "w") as stderr:  # The child keeps its own copies.
      workers.append(subprocess.Popen(command, cwd=REPO, env=dict(_two_process_env(), **extra), stdout=stdout,
                                      stderr=stderr))
  deadline = time.monotonic() + timeout
  try:
    # A process that fails leaves the others waiting in a collective: stop them at once. The deadline is a hang
    # guard (a collective that never completes), not a timing: it kills the children before pytest-timeout would end
    # the session and leave them running.
    while any(w.poll() is None for w in workers) and not any(w.poll() for w in workers):
      if time.monotonic() > deadline:
        pytest.fail(f"the processes did not finish within {timeout} s (a hung collective?)")
      time.sleep(0.2)
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
        worker.wait()
  failed = [f"process {p} (status {w.returncode}):\n{err.read_text()[-3000:]}"
            for p, (w, (_, err)) in enumerate(zip(workers, paths)) if w.returncode]
  assert not failed, "\n".join(failed)
  return [out.read_text() for out, _ in paths], [err.read_text() for _, err in paths]


def _leaves(params) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(params))]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The synthetic "test" preset, shared by every process (as a data set on a shared file system would be)."""
  directory = str(tmp_path_factory.mktemp("multihost") / "data")
  synthetic.generate(directory, synthetic.PRESETS["test"])
  shutil.rmtree(os.path.join(directory, "latents"))  # No identifiability probe: evaluation stays short.
  return directory


def _run_job(workdir: str, data_dir: str, mode: str, log_dir, *, config: str = "configs/atba.py:test",
             overrides: dict | None = None, extra_env: tuple[dict[str, str], ...] = ({}, {}),
             programs: tuple[tuple[str, ...], ...] = (_MAIN, _MAIN)) -> tuple[list[str], list[str]]:
  """One two-process `python -m hal_jax.main` job (process p runs `programs[p]` with hal_jax.main's flags); returns
  the stdouts and stderrs of processes 0 and 1."""
  address = f"localhost:{_free_port()}"
  overrides = _OVERRIDES if overrides is None else overrides
  commands = [[sys.executable, *programs[p], f"--config={config}", f"--workdir={workdir}", f"--mode={mode}",
               f"--config.data_dir={data_dir}", *(f"--config.{k}={str(v).lower()}" for k, v in overrides.items()),
               f"--coordinator_address={address}", "--num_processes=2", f"--process_id={p}"] for p in range(2)]
  os.makedirs(log_dir, exist_ok=True)
  return _run_processes(commands, log_dir, extra_env=extra_env)


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



@pytest.fixture(scope="module")
def two_process_run(data_dir, tmp_path_factory):
  """The ATBA "test" preset trained by one uninterrupted two-process job: (workdir, stdouts, stderrs)."""
  root = tmp_path_factory.mktemp("two_process")
  workdir = str(root / "shared")
  outputs, errors = _run_job(workdir, data_dir, "train", root / "train")
  return workdir, outputs, errors


def _restored(config, workdir) -> tuple[list[np.ndarray], int]:
  """The leaves of the params that `--mode=eval` would score (read here by one process of four devices), and their
  step."""
  _, _, params, _, step = inference.restore_trained(config, workdir)
  return _leaves(params), step


def _printed(stdout: str) -> dict:
  """The JSON line that process 0 prints last."""
  return json.loads(stdout.strip().splitlines()[-1])


def test_main_runs_as_two_processes(data_dir, reference, two_process_run, tmp_path):
  """`python -m hal_jax.main` on two processes x two devices trains, evaluates and predicts like one x four.

  Parameters agree to within 1e-6, not bitwise: the gradient all-reduce crosses processes through gloo, which adds
  the four per-device gradients in another order than XLA's in-process CPU all-reduce; float addition is not
  associative, so the sums differ in the last bit and Adam carries that forward (measured: 1.2e-7 after twelve
  steps). The batches, dropout keys and data order are identical, so anything else (a wrong row split, a process
  training on its own rows only, a missing all-reduce) shows up as an O(1e-2) difference. Both processes evaluate
  the whole test split and get the scores of one process, which process 0 alone prints; process 0 alone writes
  metrics.jsonl, config.json and the predictions; the checkpoints are written by both together.
  """
  shared, outputs, _ = two_process_run
  params, final_scores, reference_dir = reference
  config = _config(data_dir)

  # Training: the newest checkpoint (written by both processes together, read back here on one process of four
  # devices) holds the parameters of one process. Logs and config.json come from process 0 alone: one line per
  # logged step, not two.
  restored, step = _restored(config, shared)
  assert step in params, step
  _assert_close(restored, params[step])
  checkpoints = os.path.join(shared, "checkpoints")
  assert all(name.isdigit() for name in os.listdir(checkpoints)), os.listdir(checkpoints)
  records = metric_writer.read_metrics(os.path.join(shared, "metrics.jsonl"))
  assert [r["step"] for r in records if "train/loss" in r] == [2, 4, 6, 8, 10, 12]
  with open(os.path.join(shared, "config.json")) as f:
    assert json.load(f)["data_dir"] == data_dir

  # Evaluation at the end of training and --mode=eval: process 0 prints the scores of one process; process 1 prints
  # nothing.
  assert step == 12
  evaluated, _ = _run_job(shared, data_dir, "eval", tmp_path / "eval")
  for printed in (_printed(outputs[0]), _printed(evaluated[0])):
    assert printed["step"] == step
    for key, value in final_scores.items():
      if key != "seconds":
        assert printed[key] == pytest.approx(value, abs=1e-6), key
  for stdout in (outputs[1], evaluated[1]):
    assert not [line for line in stdout.splitlines() if line.startswith("{")]

  # Prediction: both processes predict, process 0 writes the files of one process.
  _run_job(shared, data_dir, "predict", tmp_path / "predict")
  predictions = os.path.join(shared, "predictions")
  expected = os.path.join(reference_dir, "predictions")
  assert sorted(os.listdir(predictions)) == sorted(os.listdir(expected))
  for name in os.listdir(expected):
    if name.endswith(".txt"):
      with open(os.path.join(predictions, name)) as got, open(os.path.join(expected, name)) as want:
        assert got.read() == want.read(), name


def test_sigterm_to_one_process_stops_every_process_at_one_step(data_dir, two_process_run, tmp_path):
  """A preemption notice (SIGTERM) to process 1 alone, during step 5: both processes stop after step 6, the next
  step at which they agree on stop requests (every `log_every_steps` = 2 steps, `hal_jax.train._StopRequest`), write
  checkpoint 6 together (off the every-4-steps cadence) and exit with 0. Run again, the job resumes from step 6 and
  ends with the parameters of the uninterrupted two-process job, bitwise (the same job, in the same order of
  additions).

  Without the agreement, process 1 would save and leave after step 5 while process 0 waits in step 6's gradient
  all-reduce: both would hang until the coordination service gives up.
  """
  shared = str(tmp_path / "shared")
  kill_log = tmp_path / "kill.log"
  sigterm = dict(KILL_AT="sigterm:5", KILL_LOG=str(kill_log))
  outputs, errors = _run_job(shared, data_dir, "train", tmp_path / "stopped", extra_env=({}, sigterm),
                             programs=(_MAIN, (os.path.join(REPO, "tests", "kill_driver.py"),)))
  assert kill_log.read_text().startswith("step 5 "), kill_log.read_text()
  assert _printed(outputs[0])["step"] == 6
  for stderr in errors:
    assert "Stopping at step 6: a stop (SIGTERM/SIGINT) was requested on process(es) [1]" in stderr, stderr[-2000:]
  assert sorted(int(name) for name in os.listdir(os.path.join(shared, "checkpoints"))) == [4, 6]

  resumed, _ = _run_job(shared, data_dir, "train", tmp_path / "resumed")
  assert _printed(resumed[0])["step"] == 12
  config = _config(data_dir)
  got, step = _restored(config, shared)
  want, want_step = _restored(config, two_process_run[0])
  assert step == want_step == 12
  for a, b in zip(got, want, strict=True):
    np.testing.assert_array_equal(a, b)
  records = metric_writer.read_metrics(os.path.join(shared, "metrics.jsonl"))
  assert [r["step"] for r in records if "train/loss" in r] == [2, 4, 6, 8, 10, 12]


@pytest.mark.parametrize("method", ["ahlm", "haan"])
def test_localization_methods_run_as_two_processes(method, tmp_path):
  """AHLM and HAAN as jobs of two processes train and score like one process of four devices.

  Their "test" presets: 2 epochs (AHLM 2 steps each, HAAN 1), one evaluation at the end. HAAN re-clusters before
  each epoch, and each refresh splits its encoder passes over both processes (`sharding.map_blocks`): the logged
  k-means results are the one-process run's. HAAN also selects its checkpoint on held-out videos (the parameters
  compared are the selected ones). Parameters and scores agree to 1e-6 (gloo's order of additions, as for ATBA).
  """
  config = importlib.import_module(f"configs.{method}").get_config("test")
  data_dir = synthetic.generate(str(tmp_path / "data"), synthetic.PRESETS[config.synthetic_preset])
  overrides = dict(progress=False, tensorboard=False, eval_every_epochs=config.num_epochs)
  with config.unlocked():
    config.update(dict(overrides, data_dir=data_dir))
  reference_dir, shared = str(tmp_path / "reference"), str(tmp_path / "shared")
  reference = train.train_and_evaluate(config, reference_dir)

  outputs, _ = _run_job(shared, data_dir, "train", tmp_path / "train", config=f"configs/{method}.py:test",
                        overrides=overrides)
  printed = _printed(outputs[0])
  assert printed["step"] == reference.steps
  for key, value in reference.eval_metrics.items():
    if key != "seconds":  # Relative too: AHLM's identifiability probe (a regression on the features) scales it.
      assert printed[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
  got, step = _restored(config, shared)
  want, want_step = _restored(config, reference_dir)
  assert step == want_step
  _assert_close(got, want)

  def refreshes(workdir) -> np.ndarray:
    """[refreshes, 3]: the step, k-means iterations and inertia per sampled clip of each refresh."""
    records = metric_writer.read_metrics(os.path.join(workdir, "metrics.jsonl"))
    return np.array([(r["step"], r["refresh/kmeans_iterations"], r["refresh/kmeans_inertia_per_clip"])
                     for r in records if "refresh/kmeans_iterations" in r]).reshape(-1, 3)

  assert len(refreshes(shared)) == (2 if method == "haan" else 0)
  np.testing.assert_allclose(refreshes(shared), refreshes(reference_dir), rtol=1e-6, atol=0)
