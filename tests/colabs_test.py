"""The quickstart notebook: its paired .py runs end to end on the tiny preset, and the .ipynb is in sync with it."""

import os
import subprocess
import sys

import jupytext
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_notebook_and_script_hold_the_same_cells():
  script = jupytext.read(os.path.join(ROOT, "colabs", "quickstart.py"))
  notebook = jupytext.read(os.path.join(ROOT, "colabs", "quickstart.ipynb"))
  assert [c.source for c in script.cells] == [c.source for c in notebook.cells]


@pytest.mark.slow
def test_quickstart_runs_on_the_tiny_preset(tmp_path):
  env = dict(os.environ, HAL_JAX_QUICKSTART_PRESET="test", HAL_JAX_QUICKSTART_WORKDIR=str(tmp_path),
             PYTHONPATH=ROOT, MPLBACKEND="Agg")
  result = subprocess.run([sys.executable, os.path.join(ROOT, "colabs", "quickstart.py")], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| mof |" in result.stdout
  plots = os.listdir(tmp_path / "predictions" / "plots")
  assert plots and all(name.endswith(".png") for name in plots)
  assert len([n for n in os.listdir(tmp_path / "predictions") if n.endswith(".txt")]) == len(plots)
