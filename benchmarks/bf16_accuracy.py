"""Task metric of float32 against bfloat16 compute (`config.compute_dtype`, issue 17); one JSON line per run.

Trains each method's `--preset` (configs/<method>.py) once per seed and compute dtype the main job's way
(`hal_jax.train.train_and_evaluate`, fresh workdir; the synthetic data is generated once per method and shared by its
runs) and prints the last evaluation's task metric (MoF for segmentation, average mAP for localization), the
training steps, the run's wall-clock seconds (compile and evaluation included) and the median wall-clock per train
step, timing the run's jitted train steps (each waited for; the first of each stage, which compiles, left out).

  JAX_PLATFORMS=cpu python benchmarks/bf16_accuracy.py --methods=atba,hal,ahlm,haan --preset=test --seeds=0,1,2
"""

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from hal_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

# The headline metric of each task's evaluation.
_METRICS = ("mof", "average_map")


def _timed_steps(step_times: list[float]):
  """`train._Compiled.step` whose steps are timed until their outputs are ready; the first call of each stage (its
  compilation) is left out."""
  step = train._Compiled.step  # pylint: disable=protected-access
  compiled_stages = set()

  def timed_step(self, stage: int):
    fn = step(self, stage)

    def timed(*args, **kwargs):
      start = time.perf_counter()
      out = jax.block_until_ready(fn(*args, **kwargs))
      if stage in compiled_stages:
        step_times.append(time.perf_counter() - start)
      compiled_stages.add(stage)
      return out
    return timed
  return timed_step


def run(method: str, preset: str, seed: int, dtype: str, data_dir: str, workdir: str) -> dict:
  config = importlib.import_module(f"configs.{method}").get_config(preset)
  with config.unlocked():
    config.seed = seed
    config.compute_dtype = dtype
    config.progress = False
    if os.path.isdir(data_dir):
      config.data_dir = data_dir
  step_times: list[float] = []
  original = train._Compiled.step  # pylint: disable=protected-access
  train._Compiled.step = _timed_steps(step_times)  # pylint: disable=protected-access
  try:
    start = time.perf_counter()
    result = train.train_and_evaluate(config, workdir)
    seconds = time.perf_counter() - start
  finally:
    train._Compiled.step = original  # pylint: disable=protected-access
  name = next(k for k in _METRICS if k in result.eval_metrics)
  return {"benchmark": "bf16_accuracy", "method": method, "preset": preset, "seed": seed, "compute_dtype": dtype,
          "metric": name, "value": round(float(result.eval_metrics[name]), 3), "steps": int(result.steps),
          "step_ms_median": round(1000 * statistics.median(step_times), 2) if step_times else None,
          "run_s": round(seconds, 1)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--methods", default="atba,hal,ahlm,haan")
  parser.add_argument("--preset", default="test")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as root:
    for method in args.methods.split(","):
      data_dir = os.path.join(root, method, "data")  # Written by the method's first run, read by the others.
      for seed in (int(s) for s in args.seeds.split(",")):
        for dtype in args.dtypes.split(","):
          workdir = os.path.join(root, method, f"{seed}_{dtype}")
          result = run(method, args.preset, seed, dtype, data_dir, workdir)
          if not os.path.isdir(data_dir):
            os.rename(os.path.join(workdir, "data"), data_dir)
          print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
