"""The train-step benchmark keeps its JSON interface (tiny shapes; timings are never asserted)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import train_step  # pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow

_KEYS = ("ms_per_step_median", "ms_alignment_median", "compile_s", "frames", "batch", "devices", "backend",
         "model_gflop_per_step", "xla_gflop_per_step", "matmul_peak_gflops", "mfu", "compute_dtype", "clean_steps")


@pytest.mark.parametrize("method", ["hal", "ahlm"])  # HAL runs ATBA's step plus its taps.
def test_train_step_prints_the_documented_fields(method, capsys):
  result = train_step.main([f"--method={method}", "--batch=4", "--frames=32", "--feature_dim=16", "--layers=3",
                            "--classes=12", "--hidden=16", "--steps=2", "--warmup=1", "--max_attempts=3",
                            "--peak_size=256"])
  printed = capsys.readouterr().out.strip().splitlines()[-1]
  for key in _KEYS:
    assert key in result and f'"{key}"' in printed, key
  assert result["batch"] == 4 and result["frames"] == 32 and result["devices"] == 4
  assert result["model_gflop_per_step"] > 0
  assert (result["ms_alignment_median"] is None) == (method == "ahlm")


def test_train_step_runs_a_stateful_method_after_a_real_refresh(capsys):
  """HAAN's step reads pseudo-labels from its refreshed state; the benchmark refreshes once before timing."""
  result = train_step.main(["--method=haan", "--preset=test", "--batch=4", "--frames=24", "--feature_dim=16",
                            "--classes=6", "--coarse=2", "--steps=2", "--warmup=1", "--max_attempts=3",
                            "--peak_size=256", "--compute_dtype=bfloat16"])
  assert '"method": "haan"' in capsys.readouterr().out
  assert result["model_gflop_per_step"] > 0 and result["ms_alignment_median"] is None
  assert result["compute_dtype"] == "bfloat16"


def test_train_step_times_a_recognition_method(capsys):
  """H-CLIP: random clips on a two-level taxonomy with random class texts; float32 only."""
  result = train_step.main(["--method=hclip", "--batch=4", "--frames=8", "--feature_dim=16", "--hidden=16",
                            "--layers=1", "--classes=6", "--coarse=2", "--steps=2", "--warmup=1", "--max_attempts=3",
                            "--peak_size=256"])
  assert '"method": "hclip"' in capsys.readouterr().out
  assert result["model_gflop_per_step"] > 0 and result["ms_alignment_median"] is None
  with pytest.raises(SystemExit):
    train_step.parse_args(["--method=hclip", "--compute_dtype=bfloat16"])


def test_compile_times_lists_every_function_a_run_compiles(capsys):
  import compile_times  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result, = compile_times.main([f"--presets={os.path.join(root, 'configs', 'haan.py')}:test"])
  assert '"compiles"' in capsys.readouterr().out
  # One train step per stage and training bucket, one predict per evaluation bucket.
  assert set(result["each_s"]) == {"train_stage0_T96", "predict_T32", "predict_T64", "predict_T96"}
  assert result["total_compile_s"] >= result["max_compile_s"] > 0



def test_pose_branch_flops_follow_the_pose_density():
  """With a pose on every 5th step the pose branch runs on the gathered pose steps (cond branch 0): fewer FLOPs
  than with a pose on every step, more than the host alone (traced only, nothing compiled)."""
  from hal_jax import flops  # pylint: disable=import-outside-toplevel
  tiny = ["--batch=2", "--frames=40", "--feature_dim=16", "--layers=2", "--classes=16", "--hidden=16", "--devices=1"]
  counted = {}
  for method, every in (("atba", 1), ("pose", 1), ("pose", 5)):
    built = train_step.setup(train_step.parse_args(tiny + [f"--method={method}", f"--pose_every={every}"]))
    counted[method, every] = flops.count(built["step"], built["state"], built["batch"], cond_branch=0).model
  assert counted["atba", 1] < counted["pose", 5] < counted["pose", 1]
