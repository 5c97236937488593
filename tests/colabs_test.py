"""The notebooks: each paired .py runs end to end on the tiny preset, its .ipynb holds the same cells, and the .ipynb
is committed without outputs."""

import json
import os
import subprocess
import sys

import jupytext
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart", "hal", "ahlm", "haan", "pose", "hclip")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_and_script_hold_the_same_cells(name):
  script = jupytext.read(os.path.join(ROOT, "colabs", f"{name}.py"))
  notebook = jupytext.read(os.path.join(ROOT, "colabs", f"{name}.ipynb"))
  assert [c.source for c in script.cells] == [c.source for c in notebook.cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
  with open(os.path.join(ROOT, "colabs", f"{name}.ipynb"), encoding="utf-8") as file:
    cells = json.load(file)["cells"]
  code = [cell for cell in cells if cell["cell_type"] == "code"]
  assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)


def run_script(name, env):
  # One epoch of the tiny preset runs every cell (CI time: the notebooks' learning is tested elsewhere).
  env = dict(os.environ, PYTHONPATH=ROOT, MPLBACKEND="Agg", HAL_JAX_NOTEBOOK_EPOCHS="1", **env)
  return subprocess.run([sys.executable, os.path.join(ROOT, "colabs", f"{name}.py")], capture_output=True,
                        text=True, env=env, cwd=ROOT, timeout=900, check=False)


@pytest.mark.slow
def test_quickstart_runs_on_the_tiny_preset(tmp_path):
  result = run_script("quickstart", {"HAL_JAX_QUICKSTART_PRESET": "test", "HAL_JAX_QUICKSTART_WORKDIR": str(tmp_path)})
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| mof |" in result.stdout
  plots = os.listdir(tmp_path / "predictions" / "plots")
  assert plots and all(name.endswith(".png") for name in plots)
  assert len([n for n in os.listdir(tmp_path / "predictions") if n.endswith(".txt")]) == len(plots)


@pytest.mark.slow
@pytest.mark.parametrize("name, metric", [("hal", "| mof |"), ("ahlm", "change_point_f1"), ("haan", "average_map"),
                                          ("pose", "| mof |"), ("hclip", "path_acc")])
def test_method_notebook_runs_on_the_tiny_preset(tmp_path, name, metric):
  result = run_script(name, {"HAL_JAX_NOTEBOOK_PRESET": "test", "HAL_JAX_NOTEBOOK_WORKDIR": str(tmp_path)})
  assert result.returncode == 0, result.stderr[-3000:]
  assert metric in result.stdout and "sections:" in result.stdout
  assert (tmp_path / "report.html").is_file()
