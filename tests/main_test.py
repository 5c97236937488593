"""The bad-input catalogue of `python -m hal_jax.main` (README "Errors"): one test per case.

Every case checks what a user sees: exit status 2, stderr ending in exactly one line ``error: <where>: <what>`` that
names the file, flag or key and the problem, no traceback (unless --verbose), and nothing written: the workdir absent
or unchanged, the data directory untouched. The flag cases and a few others run the real command line in a
subprocess; the rest call `main.execute`, which is what the command line runs once flags are parsed, in this process
(JAX is then imported once for all of them).
"""

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import atba as atba_config
from configs import hal as hal_config
from hal_jax import main
from hal_jax import workdir as workdir_lib
from hal_jax.data import formats
from hal_jax.data import segmentation_formats
from hal_jax.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------------------------------
# Helpers.


def _cli(*args: str) -> subprocess.CompletedProcess:
  """Runs ``python -m hal_jax.main ARGS`` from the repository root (the environment of conftest.py: 4 CPU devices)."""
  return subprocess.run([sys.executable, "-m", "hal_jax.main", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=300, check=False)


def _assert_one_error_line(stderr: str, where: str, what: str) -> str:
  """stderr ends in ``error: <where>: <what...>`` (`what` a regex searched in the problem) and has no traceback."""
  assert "Traceback" not in stderr, stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: {where}: "), last
  assert re.search(what, last[len(f"error: {where}: "):]), last
  return last


def _assert_cli_error(result: subprocess.CompletedProcess, where: str, what: str) -> str:
  assert result.returncode == 2, result.stderr
  assert result.stdout == "", result.stdout  # No results printed for a failed run.
  return _assert_one_error_line(result.stderr, where, what)


def _assert_exits_2(capsys, config, workdir, where: str, what: str, mode: str = "train") -> str:
  """Runs `main.execute` in this process and checks its bad-input report."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:
    main.execute(config, str(workdir), mode)
  assert exit_info.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  return _assert_one_error_line(captured.err, where, what)


def _snapshot(directory) -> dict[str, tuple[int, int]]:
  """relative path -> (size, mtime_ns) of every file under `directory` (the lock file aside)."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      if name != workdir_lib.LOCK_NAME:
        stat = os.stat(path)
        files[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
  return files


def _config(data_dir, base=atba_config, **overrides):
  config = base.get_config("test")
  config.data_dir = str(data_dir)
  config.progress = False
  config.tensorboard = False
  for key, value in overrides.items():
    config[key] = value
  return config


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory):
  """The synthetic "test" preset (12 train / 4 test videos of 43-104 frames, D = 16), without true latents so
  that evaluation skips the identifiability probe."""
  data_dir = str(tmp_path_factory.mktemp("clean") / "data")
  synthetic.generate(data_dir, synthetic.PRESETS["test"])
  shutil.rmtree(os.path.join(data_dir, "latents"))
  return data_dir


@pytest.fixture
def data(clean_data, tmp_path):
  """A private copy of the clean data to break; the test checks that the run leaves it as it was broken."""
  data_dir = str(tmp_path / "data")
  shutil.copytree(clean_data, data_dir)
  return data_dir


@pytest.fixture
def workdir(tmp_path):
  """A fresh workdir path (absent): a failed run must not leave it behind."""
  return tmp_path / "run"


def _first_video(data_dir, split="train"):
  return formats.read_split_list(segmentation_formats.split_path(data_dir, split, 1))[0]


def _path(data_dir, kind, video):
  return os.path.join(data_dir, kind, f"{video}.npy" if kind == "features" else f"{video}.txt")


def _assert_data_case(capsys, data_dir, workdir, where: str, what: str, **overrides) -> str:
  """A broken data directory: exit 2 naming `where`; neither the data nor a workdir is written."""
  before = _snapshot(data_dir)
  line = _assert_exits_2(capsys, _config(data_dir, **overrides), workdir, where, what)
  assert _snapshot(data_dir) == before
  assert not os.path.exists(workdir)
  return line


# ----------------------------------------------------------------------------------------------------------------------
# Flags and config files (subprocess: absl parses the real command line).


def test_unknown_config_key(workdir):
  result = _cli("--config=configs/atba.py:test", f"--workdir={workdir}", "--config.nmu_epochs=3")
  _assert_cli_error(result, "--config.nmu_epochs", r"^unknown config key 'nmu_epochs' \(did you mean 'num_epochs'\?\)$")
  assert not os.path.exists(workdir)


def test_config_value_of_wrong_type(workdir):
  result = _cli("--config=configs/atba.py:test", f"--workdir={workdir}", "--config.num_epochs=abc")
  _assert_cli_error(result, "--config.num_epochs", r"^expected an integer, got 'abc'$")
  assert not os.path.exists(workdir)


def test_unknown_preset(workdir):
  result = _cli("--config=configs/atba.py:nope", f"--workdir={workdir}")
  _assert_cli_error(result, "--config=configs/atba.py:nope", r"unknown preset 'nope' .*choose one of .*'test'")
  assert not os.path.exists(workdir)


def test_unknown_preset_or_option_names_the_file_given():
  # HAL builds on configs/atba.py's presets; its errors name configs/hal.py (what the user gave).
  with pytest.raises(ValueError, match=r"^unknown preset 'nosuch' for configs/hal.py; choose one of .*'test'"):
    hal_config.get_config("nosuch")
  with pytest.raises(ValueError, match=r"^unknown ablation 'x' for configs/hal.py; choose one of .*'kl_only'"):
    hal_config.get_config("test,ablation=x")


def test_missing_config_file(workdir):
  result = _cli("--config=configs/nope.py", f"--workdir={workdir}", "--config.num_epochs=2")
  _assert_cli_error(result, "--config=configs/nope.py", r"^config file not found$")
  assert not os.path.exists(workdir)


def test_unknown_flag(workdir):
  result = _cli("--config=configs/atba.py:test", f"--workdirr={workdir}")
  _assert_cli_error(result, "--workdirr", r"^unknown flag \(did you mean --workdir\?\)$")


def test_missing_workdir_flag():
  _assert_cli_error(_cli("--config=configs/atba.py:test"), "--workdir", r"^is required$")


def test_incomplete_multi_process_flags(workdir):
  result = _cli("--config=configs/atba.py:test", f"--workdir={workdir}", "--num_processes=2", "--process_id=0")
  _assert_cli_error(result, "--coordinator_address", r"^is required for a multi-process run: give "
                    r"coordinator_address, num_processes and process_id together, or let JAX detect them")
  result = _cli("--config=configs/atba.py:test", f"--workdir={workdir}", "--coordinator_address=localhost:1",
                "--num_processes=2", "--process_id=2")
  _assert_cli_error(result, "--process_id", r"^2 is outside \[0, 2\)$")
  assert not os.path.exists(workdir)


def test_distributed_without_a_cluster_environment(workdir):
  # No TPU pod, SLURM job, Open MPI launch or JAX_COORDINATOR_ADDRESS: nothing to join.
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "OMPI_", "PMI_", "JAX_COORDINATOR", "TPU_", "MEGASCALE_"))}
  result = subprocess.run([sys.executable, "-m", "hal_jax.main", "--config=configs/atba.py:test",
                           f"--workdir={workdir}", "--distributed"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False, env=env)
  _assert_cli_error(result, "--distributed", r"^no cluster environment was detected \(jax.distributed.initialize: "
                    r".*\); give coordinator_address, num_processes and process_id$")
  assert not os.path.exists(workdir)


def test_zero_epochs(workdir):
  result = _cli("--config=configs/atba.py:test", f"--workdir={workdir}", "--config.num_epochs=0")
  _assert_cli_error(result, "config.num_epochs", r"^must be >= 1, got 0$")
  assert not os.path.exists(workdir)


def test_verbose_adds_the_traceback(workdir):
  result = _cli("--config=configs/atba.py:test", f"--workdir={workdir}", "--config.nmu_epochs=3", "--verbose")
  assert result.returncode == 2
  assert "Traceback" in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: --config.nmu_epochs: unknown config key")


# ----------------------------------------------------------------------------------------------------------------------
# Impossible configs.


@pytest.mark.parametrize("key, value, message", [
    pytest.param(key, value, message, id=key) for key, value, message in (
        ("checkpoint_every_steps", 0, r"^must be >= 1, got 0$"),
        ("eval_every_epochs", 0, r"^must be >= 1, got 0$"),
        ("sample_rate", 0, r"^must be >= 1, got 0$"),
        ("batch_size", -4, r"^must be >= 1, got -4$"),
        ("learning_rate", 0.0, r"^must be finite and > 0, got 0.0$"),
    )])
def test_impossible_config_value(capsys, clean_data, workdir, key, value, message):
  _assert_exits_2(capsys, _config(clean_data, **{key: value}), workdir, f"config.{key}", message)
  assert not os.path.exists(workdir)


def test_batch_not_divisible_by_device_count(capsys, clean_data, workdir):
  _assert_exits_2(capsys, _config(clean_data, batch_size=6), workdir, "config.batch_size",
                  r"^6 is not divisible by the number of devices \(4\)$")
  assert not os.path.exists(workdir)


def test_sample_rate_larger_than_a_video(capsys, data, workdir):
  _assert_data_case(capsys, data, workdir, "config.sample_rate", r"200 is larger than video '\w+'.*frames",
                    sample_rate=200, num_epochs=1)


def test_fewer_frames_after_downsampling_than_transcript_actions(capsys, data, workdir):
  # The smallest rate that leaves some video fewer downsampled frames than transcript actions (ATBA needs T_v >= M).
  videos = [v for split in ("train", "test") for v in segmentation_formats.load_mstcn_split(data, split).videos]
  rate = next(s for s in range(2, 100) if any(-(-len(v.labels) // s) < len(v.transcript) for v in videos))
  assert all(len(v.labels) >= rate for v in videos)  # So this is not the "larger than a video" case.
  _assert_data_case(capsys, data, workdir, "config.sample_rate", r"frames after downsampling by \d+, fewer than",
                    sample_rate=rate, num_epochs=1)


def test_feature_dim_of_config_differs_from_data(capsys, data, workdir):
  video = _first_video(data)
  _assert_data_case(capsys, data, workdir, _path(data, "features", video), r"feature dimension: expected 32, found 16",
                    feature_dim=32)


# ----------------------------------------------------------------------------------------------------------------------
# Data files (the cases of the foundation issue).


def test_missing_data_directory(tmp_path, workdir):
  missing = tmp_path / "no_such_data"
  result = _cli("--config=configs/atba.py:test", f"--workdir={workdir}", f"--config.data_dir={missing}")
  _assert_cli_error(result, str(missing), r"^data directory does not exist \(config.data_dir\)$")
  assert not os.path.exists(workdir)


def test_real_data_preset_without_data_dir(workdir):
  # configs/hal.py:breakfast reads 2048-d I3D features: without config.data_dir it must say so (it used to generate
  # the 64-d synthetic default and then fail on the feature dimension).
  result = _cli("--config=configs/hal.py:breakfast", f"--workdir={workdir}")
  _assert_cli_error(result, "config.data_dir", r"^is required: this preset reads real features \(an MS-TCN directory "
                    r".*'breakfast' with config.feature_dim=64")
  assert not os.path.exists(workdir)


def test_synthetic_preset_of_another_task(workdir):
  result = _cli("--config=configs/atba.py:test", f"--workdir={workdir}", "--config.synthetic_preset=thumos")
  _assert_cli_error(result, "config.synthetic_preset", r"^'thumos' is not a synthetic preset of this task; choose "
                    r"one of .*'default'")
  assert not os.path.exists(workdir)


def test_video_in_split_without_features(data, workdir):
  video = _first_video(data)
  os.remove(_path(data, "features", video))
  before = _snapshot(data)
  result = _cli("--config=configs/atba.py:test", f"--workdir={workdir}", f"--config.data_dir={data}")
  _assert_cli_error(result, _path(data, "features", video), rf"video '{video}' of .*train.split1.bundle has no "
                    "features")
  assert _snapshot(data) == before
  assert not os.path.exists(workdir)


def test_video_in_split_without_labels(capsys, data, workdir):
  video = _first_video(data, "test")
  label_path = os.path.join(data, "groundTruth", f"{video}.txt")
  os.remove(label_path)
  _assert_data_case(capsys, data, workdir, label_path, rf"video '{video}' of .*test.split1.bundle has no frame labels")


def test_missing_mapping_file(capsys, data, workdir):
  os.remove(os.path.join(data, "mapping.txt"))
  _assert_data_case(capsys, data, workdir, os.path.join(data, "mapping.txt"), r"^file not found$")


def test_missing_split_list(capsys, data, workdir):
  path = segmentation_formats.split_path(data, "train", 1)
  os.remove(path)
  _assert_data_case(capsys, data, workdir, path, r"^file not found$")


def test_label_not_in_mapping(capsys, data, workdir):
  video = _first_video(data)
  path = os.path.join(data, "groundTruth", f"{video}.txt")
  lines = formats.read_text(path).splitlines()
  lines[5] = "juggling"
  formats.write_text_atomic(path, "\n".join(lines) + "\n")
  _assert_data_case(capsys, data, workdir, path, r"^line 6: label 'juggling' is not in mapping.txt$")


def test_duplicate_mapping_line(capsys, data, workdir):
  path = os.path.join(data, "mapping.txt")
  with open(path, "a", encoding="utf-8") as f:
    f.write("7 action00\n")
  _assert_data_case(capsys, data, workdir, path, r"^line 8: duplicate label 'action00' \(first on line 2\)$")


def test_malformed_mapping_line(capsys, data, workdir):
  path = os.path.join(data, "mapping.txt")
  with open(path, "a", encoding="utf-8") as f:
    f.write("seven action07\n")
  _assert_data_case(capsys, data, workdir, path, r"^line 8: expected '<id> <name>', got 'seven action07'$")


def test_features_of_wrong_rank(capsys, data, workdir):
  video = _first_video(data)
  path = _path(data, "features", video)
  np.save(path, np.load(path)[None])
  _assert_data_case(capsys, data, workdir, path, r"expected a 2-D feature array \[D, T\].*found shape \(1, 16, \d+\)")


def test_non_finite_features(capsys, data, workdir):
  video = _first_video(data)
  path = _path(data, "features", video)
  array = np.load(path)
  array[3, 7] = np.nan
  np.save(path, array)
  _assert_data_case(capsys, data, workdir, path, r"^1 non-finite feature values .* first at frame 7$")


def test_features_beyond_float32_range(capsys, data, workdir):
  video = _first_video(data, "test")
  path = _path(data, "features", video)
  array = np.load(path).astype(np.float64)
  array[0, 2] = 1e300  # Finite in the file, inf once converted to float32.
  np.save(path, array)
  _assert_data_case(capsys, data, workdir, path, r"non-finite feature values \(NaN/Inf after float32 conversion\)")


def test_zero_length_features(capsys, data, workdir):
  video = _first_video(data)
  path = _path(data, "features", video)
  np.save(path, np.zeros([16, 0], np.float32))
  _assert_data_case(capsys, data, workdir, path, r"^empty feature array \(shape \(16, 0\)")


def test_truncated_feature_file(capsys, data, workdir):
  video = _first_video(data)
  path = _path(data, "features", video)
  with open(path, "rb") as f:
    head = f.read(100)
  with open(path, "wb") as f:
    f.write(head)
  _assert_data_case(capsys, data, workdir, path, r"^cannot read .npy array")


def test_label_length_differs_beyond_tolerance(capsys, data, workdir):
  video = _first_video(data)
  path = _path(data, "features", video)
  array = np.load(path)
  np.save(path, np.concatenate([array, array[:, -3:]], axis=1))  # 3 more feature frames than labels.
  frames = array.shape[1]
  _assert_data_case(capsys, data, workdir, path, rf"^{frames + 3} feature frames but .* has {frames} frame labels "
                    r"\(difference \+3, length_tolerance=2\)$", length_tolerance=2)


def test_empty_transcript(capsys, data, workdir):
  video = _first_video(data)
  path = os.path.join(data, "transcripts", f"{video}.txt")
  formats.write_text_atomic(path, "")
  _assert_data_case(capsys, data, workdir, path, r"^empty transcript \(no lines\)$")


def test_transcript_longer_than_video(capsys, data, workdir):
  video = _first_video(data)
  frames = np.load(_path(data, "features", video)).shape[1]
  path = os.path.join(data, "transcripts", f"{video}.txt")
  names = [("action00", "action01")[i % 2] for i in range(frames + 1)]
  formats.write_text_atomic(path, "".join(f"{n}\n" for n in names))
  _assert_data_case(capsys, data, workdir, path, rf"^transcript has {frames + 1} actions but the video has only "
                    rf"{frames} frames$")


# ----------------------------------------------------------------------------------------------------------------------
# Workdirs.


def test_second_run_on_a_locked_workdir_is_refused(clean_data, tmp_path):
  workdir = tmp_path / "run"
  with workdir_lib.locked_workdir(str(workdir)):  # This process plays the first run.
    before = _snapshot(workdir)
    result = _cli("--config=configs/atba.py:test", f"--workdir={workdir}", f"--config.data_dir={clean_data}")
    _assert_cli_error(result, str(workdir), rf"^another run holds the lock .*\.lock \(pid {os.getpid()}\)")
    assert _snapshot(workdir) == before


def test_eval_of_a_workdir_that_does_not_exist(capsys, clean_data, workdir):
  _assert_exits_2(capsys, _config(clean_data), workdir, str(workdir), r"^the workdir does not exist; train first$",
                  mode="eval")
  assert not os.path.exists(workdir)


def test_predict_without_a_checkpoint(capsys, clean_data, workdir):
  os.makedirs(workdir)
  _assert_exits_2(capsys, _config(clean_data), workdir, os.path.join(workdir, "checkpoints"),
                  r"^no checkpoint to evaluate; train first$", mode="predict")
  assert not os.path.exists(os.path.join(workdir, "predictions"))


def test_workdir_that_is_a_file(capsys, clean_data, tmp_path):
  path = tmp_path / "run"
  path.write_text("not a directory\n")
  _assert_exits_2(capsys, _config(clean_data), path, str(path), r"^the workdir exists but is not a directory$")
  assert path.read_text() == "not a directory\n"


@contextlib.contextmanager
def _read_only_directory(path):
  """`path` as a directory this process cannot write: mode 0555, or (as root, who ignores modes) a read-only tmpfs."""
  os.makedirs(path)
  if os.geteuid() != 0:
    os.chmod(path, 0o555)
    try:
      yield path
    finally:
      os.chmod(path, 0o755)
    return
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True,
                    check=False).returncode != 0:
    pytest.skip("running as root without permission to mount a read-only file system")
  try:
    yield path
  finally:
    subprocess.run(["umount", str(path)], check=True)


def test_read_only_workdir(capsys, clean_data, tmp_path):
  with _read_only_directory(tmp_path / "run") as path:
    _assert_exits_2(capsys, _config(clean_data), path, str(path),
                    r"^the workdir is not writable \((Read-only file system|Permission denied)\)$")
    assert os.listdir(path) == []


def test_workdir_on_a_full_file_system(capsys, clean_data, workdir, monkeypatch):
  real_statvfs = os.statvfs

  def full(path):
    stats = real_statvfs(path)
    return os.statvfs_result((stats.f_bsize, stats.f_frsize, stats.f_blocks, 0, 0, stats.f_files, stats.f_ffree,
                              stats.f_favail, stats.f_flag, stats.f_namemax))

  monkeypatch.setattr(os, "statvfs", full)
  _assert_exits_2(capsys, _config(clean_data), workdir, str(workdir), r"^the workdir's file system is full \(0 bytes "
                  r"free\)$")
  assert not os.path.exists(workdir)


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints and training (slow: these train or restore).


@pytest.fixture(scope="module")
def trained(clean_data, tmp_path_factory):
  """A workdir with checkpoints 1 and 2 of the "test" preset (no evaluation)."""
  from hal_jax import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("trained") / "run")
  train.train_and_evaluate(_config(clean_data, num_epochs=1, checkpoint_every_steps=1), workdir, stop_after_steps=2)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]
  return workdir


@pytest.mark.slow
def test_checkpoint_of_another_model_shape(capsys, clean_data, trained):
  before = _snapshot(trained)
  _assert_exits_2(capsys, _config(clean_data, hidden_dim=16), trained, os.path.join(trained, "checkpoints", "2"),
                  r"different parameter shapes .*use a new --workdir$")
  assert _snapshot(trained) == before


@pytest.mark.slow
def test_checkpoint_of_another_method(capsys, clean_data, trained):
  before = _snapshot(trained)
  _assert_exits_2(capsys, _config(clean_data, base=hal_config), trained, os.path.join(trained, "checkpoints", "2"),
                  r"^checkpoint was written with method='atba', this run has method='hal'; use a new --workdir$")
  assert _snapshot(trained) == before


@pytest.mark.slow
def test_corrupted_checkpoint_falls_back_to_the_previous_one(capsys, caplog, clean_data, trained, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained, workdir)
  for root, _, names in os.walk(os.path.join(workdir, "checkpoints", "2", "state")):
    for name in names:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")
  outputs = main.execute(_config(clean_data), workdir, "eval")
  assert outputs["step"] == 1
  warnings = [r.getMessage() for r in caplog.records if "unreadable checkpoint" in r.getMessage()]
  assert warnings and os.path.join("checkpoints", "2") in warnings[0] and "falling back" in warnings[0]


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(clean_data, workdir):
  result = _cli("--config=configs/atba.py:test", f"--workdir={workdir}", f"--config.data_dir={clean_data}",
                "--config.learning_rate=1e30", "--config.checkpoint_every_steps=1", "--config.log_every_steps=1",
                "--config.progress=false")
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  line = result.stderr.strip().splitlines()[-1]
  match = re.fullmatch(r"error: steps (\d+)-(\d+): the training loss is not finite; the last good checkpoint is step "
                       r"(\d+) in (\S+)", line)
  assert match, line
  first, _, good, directory = int(match[1]), int(match[2]), int(match[3]), match[4]
  assert good == first  # Saved right before the window that went wrong.
  assert directory == os.path.join(workdir, "checkpoints")
  assert max(int(s) for s in os.listdir(directory) if s.isdigit()) == good  # Nothing saved after it.


@pytest.mark.slow
def test_disk_full_during_training(clean_data, workdir):
  # Files of more than 16 KiB cannot be written (EFBIG, as ENOSPC would be for a full disk): the first checkpoint
  # fails, after the lock, config.json and the first metrics line were written. The limit is set by a small Python
  # that then execs the command line (a preexec_fn could deadlock in this multithreaded process).
  limited = ("import os, resource, signal, sys\n"
             "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
             "resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))\n"
             "os.execv(sys.executable, [sys.executable, '-m', 'hal_jax.main'] + sys.argv[1:])\n")
  result = subprocess.run(
      [sys.executable, "-c", limited, "--config=configs/atba.py:test", f"--workdir={workdir}",
       f"--config.data_dir={clean_data}", "--config.checkpoint_every_steps=1", "--config.progress=false"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false"))
  # Orbax/tensorstore's own writer threads may print asyncio "Event loop is closed" tracebacks (from C++, several
  # threads interleaved) while the failed save winds down, before our line. That is third-party noise: here we check
  # the exit status, that the last line is exactly our one-line error, and that no traceback frame is hal_jax's.
  assert result.returncode == 2 and result.stdout == "", result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: {workdir}: cannot write "), result.stderr
  assert last.endswith("(File too large)"), result.stderr
  assert not [line for line in result.stderr.splitlines() if line.lstrip().startswith("File ") and "hal_jax" in line]
  # No step looks finished: Orbax's temporary directory is never renamed (and is cleaned up by the next run).
  assert not [s for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
  # The lock died with the process.
  with open(os.path.join(workdir, workdir_lib.LOCK_NAME)) as f:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_results_table_has_the_headline_columns_in_order():
  metrics = {"f1@50": 40.0, "mof": 90.25, "iou_pred": 34.5, "edit": 50.0, "seconds": 3.0, "map@0.5": 20.0}
  assert main.results_table(metrics).splitlines() == [
      "| map@0.5 | mof | iou_pred | edit | f1@50 |", "|---|---|---|---|---|", "| 20.0 | 90.2 | 34.5 | 50.0 | 40.0 |"]
