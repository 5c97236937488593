"""Tests for hal_jax.workdir: the workdir lock, writability, refused writes and impossible config values."""

import errno
import os
import subprocess
import sys

import pytest

from configs import ahlm as ahlm_config
from configs import atba as atba_config
from configs import haan as haan_config
from configs import hal as hal_config
from configs import hclip as hclip_config
from hal_jax import config_check
from hal_jax import errors
from hal_jax import workdir as workdir_lib


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _every_config():
  """(config module, get_config argument) of every preset and variant of every config file."""
  # pylint: disable=protected-access  (the presets are the config files' own tables)
  yield from ((atba_config, p) for p in atba_config.PRESETS)
  yield from ((hal_config, f"{p},ablation={a}") for p in atba_config.PRESETS for a in hal_config._ABLATIONS)
  yield from ((ahlm_config, f"{p},ablation={a}") for p in ahlm_config._PRESETS for a in ahlm_config._ABLATIONS)
  yield from ((haan_config, f"{p},variant={v}") for p in haan_config._PRESETS for v in haan_config._VARIANTS)
  yield from ((hclip_config, f"{p},variant={v}") for p in hclip_config._PRESETS for v in hclip_config._VARIANTS)


def test_every_preset_is_a_valid_config():
  for module, arg in _every_config():
    config_check.validate_config(module.get_config(arg))


@pytest.mark.parametrize("key, value, message", [
    pytest.param(key, value, message, id=key) for key, value, message in (
        ("num_epochs", 0, "must be >= 1, got 0"),
        ("split", 0, "must be >= 1, got 0"),
        ("max_transcript", -1, "must be >= 0, got -1"),
        ("seed", -1, r"must be in \[0, 2\*\*32\), got -1"),
        ("learning_rate", float("nan"), "must be finite and > 0, got nan"),
        ("dropout", 1.0, r"must be in \[0, 1\), got 1.0"),
        ("frame_weight", -0.5, "must be finite and >= 0, got -0.5"),
        ("weight_decay", float("inf"), "must be finite and >= 0, got inf"),
        ("feature_layout", "XY", r"must be one of \('DT', 'TD'\), got 'XY'"),
    )])
def test_impossible_values_name_the_key(key, value, message):
  config = atba_config.get_config("test")
  config[key] = value
  with pytest.raises(errors.ConfigError, match=message) as info:
    config_check.validate_config(config)
  assert info.value.where == f"config.{key}"


def test_batch_size_must_split_over_devices():
  config = atba_config.get_config("test")
  config_check.check_batch_size(config, 4)
  with pytest.raises(errors.ConfigError, match=r"4 is not divisible by the number of devices \(3\)"):
    config_check.check_batch_size(config, 3)


def test_lock_is_exclusive_and_released_on_exit(tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lib.locked_workdir(workdir) as path:
    assert path == workdir and os.path.isdir(workdir)
    with pytest.raises(errors.WorkdirError, match=rf"another run holds the lock .* \(pid {os.getpid()}\)"):
      with workdir_lib.locked_workdir(workdir):
        pass
  with workdir_lib.locked_workdir(workdir):  # Free again.
    pass


def test_other_processes_of_a_job_share_the_workdir_without_the_lock(tmp_path):
  # Process 0 of a multi-process job holds the lock for the job; processes 1, 2, ... use the workdir beside it.
  workdir = str(tmp_path / "run")
  with workdir_lib.locked_workdir(workdir):
    with workdir_lib.locked_workdir(workdir, primary=False) as path:
      assert path == workdir
  # A non-primary process never removes the workdir, even one it created: process 0 may be using it.
  with pytest.raises(errors.DataError):
    with workdir_lib.locked_workdir(str(tmp_path / "other"), primary=False):
      raise errors.DataError("x.npy", "bad")
  assert os.path.isdir(tmp_path / "other")
  assert not os.path.exists(tmp_path / "other" / workdir_lib.LOCK_NAME)


def test_lock_dies_with_a_killed_process(tmp_path):
  workdir = str(tmp_path / "run")
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time\nfrom hal_jax import workdir\n"
       "with workdir.locked_workdir(sys.argv[1]):\n  print('locked', flush=True)\n  time.sleep(600)\n", workdir],
      stdout=subprocess.PIPE, text=True, cwd=_REPO, env=dict(os.environ, PYTHONPATH=_REPO))
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(errors.WorkdirError, match=rf"\(pid {holder.pid}\)"):
      with workdir_lib.locked_workdir(workdir):
        pass
  finally:
    holder.kill()
    holder.wait()
    holder.stdout.close()
  with workdir_lib.locked_workdir(workdir):  # SIGKILL left no stale lock.
    pass


def test_a_workdir_created_by_a_failed_run_is_removed(tmp_path):
  workdir = str(tmp_path / "run")
  with pytest.raises(errors.DataError):
    with workdir_lib.locked_workdir(workdir):
      raise errors.DataError("x.npy", "bad")
  assert not os.path.exists(workdir)


def test_an_existing_or_written_workdir_is_kept(tmp_path):
  existing = tmp_path / "existing"
  existing.mkdir()
  with pytest.raises(errors.DataError):
    with workdir_lib.locked_workdir(str(existing)):
      raise errors.DataError("x.npy", "bad")
  assert existing.is_dir()
  written = str(tmp_path / "written")
  with pytest.raises(errors.NonFiniteLossError):
    with workdir_lib.locked_workdir(written):
      with open(os.path.join(written, "metrics.jsonl"), "w") as f:
        f.write("{}\n")
      raise errors.NonFiniteLossError("steps 3-3", "the training loss is not finite")
  assert os.path.isfile(os.path.join(written, "metrics.jsonl"))


def test_eval_needs_an_existing_workdir(tmp_path):
  with pytest.raises(errors.WorkdirError, match="does not exist; train first"):
    with workdir_lib.locked_workdir(str(tmp_path / "run"), create=False):
      pass
  assert not os.path.exists(tmp_path / "run")


def test_refused_writes_become_one_checkpoint_error(tmp_path):
  workdir = str(tmp_path / "run")
  target = os.path.join(workdir, "metrics.jsonl")
  with pytest.raises(errors.WorkdirError) as info:
    with workdir_lib.locked_workdir(workdir):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
  assert (info.value.where, info.value.what) == (workdir, "cannot write metrics.jsonl (No space left on device)")
  # A write without a file name (f.write on a full disk), or one outside the workdir.
  for filename, where in ((None, workdir), ("/elsewhere/cache.bin", "/elsewhere/cache.bin")):
    with pytest.raises(errors.WorkdirError) as info:
      with workdir_lib.locked_workdir(workdir):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), filename)
    assert (info.value.where, info.value.what) == (where, f"cannot write ({os.strerror(errno.EDQUOT)})")
  # Orbax's tensorstore says the same in a ValueError.
  tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database at local file "x": '
                           f'Failed writing: "{workdir}/checkpoints/4.orbax-checkpoint-tmp/d/ab12": Failed to write '
                           "62079 bytes to file 15: No space left on device [os_error_code='28']")
  with pytest.raises(errors.WorkdirError, match=r"cannot write checkpoints/4.orbax-checkpoint-tmp/d/ab12 \(No "
                     r"space left on device\)"):
    with workdir_lib.locked_workdir(workdir):
      raise tensorstore


@pytest.mark.parametrize("error", [FileNotFoundError(errno.ENOENT, "No such file or directory", "x"),
                                   ValueError("a bug, not a disk")], ids=["enoent", "valueerror"])
def test_other_errors_pass_through(tmp_path, error):
  with pytest.raises(type(error)):
    with workdir_lib.locked_workdir(str(tmp_path / "run")):
      raise error
