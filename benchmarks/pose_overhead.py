r"""What the pose branch adds to its host's training step: ATBA and ATBA + pose, interleaved in one process.

  python benchmarks/pose_overhead.py --batch=8 --frames=512 --rounds=6                  # a pose on every step
  python benchmarks/pose_overhead.py --batch=8 --frames=512 --rounds=6 --pose_every=5   # the paper's pose stride

Builds both steps as `train_step.py` does (`--method=atba` and `--method=pose`: the same host sizes, random
features and transcripts, a COCO-17 pose on every `--pose_every`-th step for the pose branch: 1, the worst case, or
5, the paper's 5-frame pose stride on a host that sees every frame), compiles both, then runs `--rounds`
rounds of one host step followed by one pose step. Alternating the two within a round makes a neighbour's load
(the machine may be shared) fall on both alike; the process's CPU time per step (all threads) is less sensitive to
that load than wall time. Prints one JSON line: per method the median wall and CPU milliseconds and the analytic
model GFLOP of a step (of the branch that runs: with `--pose_every` > 1 the gathered one, methods/pose.py), and the
overhead of the pose step over the host's (pose / host − 1) by each measure, wall and
CPU taken as the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train_step  # pylint: disable=wrong-import-position
from hal_jax import flops  # pylint: disable=wrong-import-position

_METHODS = ("atba", "pose")


def _cpu_seconds() -> float:
  times = os.times()
  return times.user + times.system


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  for name, default in (("batch", 8), ("frames", 512), ("feature_dim", 2048), ("layers", 5), ("classes", 48),
                        ("hidden", 256), ("rounds", 6), ("warmup", 1), ("seed", 0), ("pose_every", 1)):
    parser.add_argument(f"--{name}", type=int, default=default)
  args = parser.parse_args(argv)
  compiled, states, batches, result = {}, {}, {}, {"batch": args.batch, "frames": args.frames,
                                                   "feature_dim": args.feature_dim, "layers": args.layers,
                                                   "hidden": args.hidden, "rounds": args.rounds,
                                                   "pose_every": args.pose_every}
  for method in _METHODS:
    built = train_step.setup(train_step.parse_args([
        f"--method={method}", f"--batch={args.batch}", f"--frames={args.frames}",
        f"--feature_dim={args.feature_dim}", f"--layers={args.layers}", f"--classes={args.classes}",
        f"--hidden={args.hidden}", f"--seed={args.seed}", "--devices=1", f"--pose_every={args.pose_every}"]))
    states[method], batches[method] = built["state"], built["batch"]
    # With --pose_every > 1 the pose branch is a cond whose gathered branch (index 0) is the one that runs.
    result[f"{method}_model_gflop"] = flops.count(built["step"], built["state"], built["batch"],
                                                  cond_branch=0).model / 1e9
    started = time.perf_counter()
    compiled[method] = jax.jit(built["step"], donate_argnums=0).lower(built["state"], built["batch"]).compile()
    result[f"{method}_compile_s"] = time.perf_counter() - started
  wall = {m: [] for m in _METHODS}
  cpu = {m: [] for m in _METHODS}
  for round_index in range(args.warmup + args.rounds):
    for method in _METHODS:
      wall_start, cpu_start = time.perf_counter(), _cpu_seconds()
      states[method], metrics = compiled[method](states[method], batches[method])
      jax.block_until_ready(metrics)
      if round_index >= args.warmup:
        wall[method].append(time.perf_counter() - wall_start)
        cpu[method].append(_cpu_seconds() - cpu_start)
  for method in _METHODS:
    result[f"{method}_wall_ms_median"] = 1e3 * statistics.median(wall[method])
    result[f"{method}_cpu_ms_median"] = 1e3 * statistics.median(cpu[method])
  for name, measure in (("wall", wall), ("cpu", cpu)):
    ratios = [p / a for p, a in zip(measure["pose"], measure["atba"])]
    result[f"overhead_{name}"] = statistics.median(ratios) - 1
    result[f"overhead_{name}_per_round"] = [round(r - 1, 3) for r in ratios]
  result["overhead_model_flops"] = result["pose_model_gflop"] / result["atba_model_gflop"] - 1
  result["jax"] = jax.__version__
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
