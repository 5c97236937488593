r"""Compile time of every train step and predict function a run of a preset compiles; one JSON line per preset.

  python benchmarks/compile_times.py                                   # every preset with embedded (synthetic) data
  python benchmarks/compile_times.py --presets=configs/hal.py:synthetic

A run compiles one train step per (training stage, training bucket length) and one predict per evaluation bucket
length (hal_jax.train). This script builds the run's data (generating the synthetic set into a temporary directory),
then lowers and compiles each of those functions from abstract shapes (`batch_spec`), exactly as the loop would, and
reports each compile and their sum. Real-data presets (Breakfast, THUMOS14, FineGym, ...) need their features; their
step compile times at the papers' shapes are the `compile_s` field of benchmarks/train_step.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hal_jax import experiment  # pylint: disable=wrong-import-position
from hal_jax import optim  # pylint: disable=wrong-import-position
from hal_jax import sharding  # pylint: disable=wrong-import-position
from hal_jax import train  # pylint: disable=wrong-import-position
from hal_jax.methods import base  # pylint: disable=wrong-import-position

_DEFAULT_PRESETS = ("configs/atba.py:synthetic", "configs/atba.py:test", "configs/hal.py:synthetic",
                    "configs/hal.py:test", "configs/ahlm.py:synthetic", "configs/ahlm.py:test",
                    "configs/haan.py:synthetic", "configs/haan.py:test")


def load_config(spec: str):
  """The locked config of ``"configs/<file>.py[:arg]"``, as --config would load it."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("preset_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def timed_compile(fn, *args) -> float:
  started = time.perf_counter()
  jax.jit(fn).lower(*args).compile()
  return time.perf_counter() - started


def preset_compile_times(spec: str, workdir: str) -> dict:
  """Compiles every function a run of `spec` compiles; returns their times."""
  config = load_config(spec)
  data = experiment.load_data(config, workdir)
  method = base.make_method(config, data.label_map.names)
  mesh = sharding.make_mesh()
  tx = optim.make_optimizer(config)
  train_pipeline = data.train_pipeline
  example = sharding.shard_batch(train_pipeline.batch(0, 0), mesh)
  refresh_data = method.refresh_data(data.train) if base.has_state(method) else None
  state, _ = experiment.init_state(method, tx, config, example, mesh,
                              method.init_state(refresh_data) if refresh_data is not None else None)
  abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  stages = sorted({method.stage_for_epoch(e) for e in range(config.num_epochs)})
  steps = {}
  for stage in stages:
    step = train.make_train_step(method, tx, stage=stage, steps_per_epoch=train_pipeline.num_batches_per_epoch,
                                 dropout_key=jax.random.key(0))
    for length in train_pipeline.bucket_lengths:
      steps[f"train_stage{stage}_T{length}"] = timed_compile(step, abstract_state, train_pipeline.batch_spec(length))
  for length in data.test_pipeline.bucket_lengths:
    steps[f"predict_T{length}"] = timed_compile(method.predict, abstract_state.params,
                                                data.test_pipeline.batch_spec(length))
  return {"preset": spec, "compiles": len(steps), "max_compile_s": round(max(steps.values()), 2),
          "total_compile_s": round(sum(steps.values()), 2), "each_s": {k: round(v, 2) for k, v in steps.items()},
          "jax": jax.__version__, "backend": jax.default_backend()}


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--presets", default=",".join(_DEFAULT_PRESETS), help="comma-separated FILE:preset")
  args = parser.parse_args(argv)
  results = []
  for spec in args.presets.split(","):
    with tempfile.TemporaryDirectory() as workdir:
      result = preset_compile_times(spec, workdir)
    print(json.dumps(result), flush=True)
    results.append(result)
  return results


if __name__ == "__main__":
  main()
