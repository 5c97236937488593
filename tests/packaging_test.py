"""Packaging: the wheel `pip` builds from the repository (what `python -m build` makes, through the same setuptools
backend) holds a working package, and the main job runs from it with the repository's configs/."""

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

import hal_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_wheel_installs_and_the_main_job_runs_from_it(tmp_path):
  wheels, target, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
  # setuptools builds in the source tree (build/, *.egg-info): build from a copy of what the wheel is made of.
  shutil.copytree(os.path.join(ROOT, "hal_jax"), source / "hal_jax", ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), source / name)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
                 check=True, capture_output=True)
  (wheel,) = glob.glob(str(wheels / "hal_jax-*.whl"))
  assert os.path.basename(wheel).startswith(f"hal_jax-{hal_jax.__version__}-")
  names = zipfile.ZipFile(wheel).namelist()
  assert "hal_jax/main.py" in names and "hal_jax/tasks/segmentation.py" in names
  assert not any(name.startswith(("tests/", "configs/", "benchmarks/")) for name in names)
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), wheel],
                 check=True, capture_output=True)
  # The installed copy, not the source tree: run outside the repository with the wheel's files first on the path
  # (the dependencies come from this environment); configs/ are the repository's, as the README says.
  env = dict(os.environ, PYTHONPATH=f"{target}{os.pathsep}{ROOT}")
  where = subprocess.run([sys.executable, "-c", "import hal_jax; print(hal_jax.__file__)"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
  assert where.startswith(str(target)), where
  result = subprocess.run(
      [sys.executable, "-m", "hal_jax.main", f"--config={ROOT}/configs/atba.py:test", f"--workdir={tmp_path / 'run'}",
       "--config.num_epochs=1", "--config.eval_every_epochs=1"], cwd=tmp_path, env=env, capture_output=True,
      text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "mof" in result.stdout.lower()
