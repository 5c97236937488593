r"""The device check of issue 17, as one script: run it when a GPU is lent (prints one JSON line per check).

  python benchmarks/gpu_check.py --out=$OUT                 # on the device (budget ~10 minutes)
  python benchmarks/gpu_check.py --tiny --methods=haan      # on CPU, tiny shapes: shows the script works

Checks, in order (each in a try block, so one failure does not lose the others):

1. determinism: per method, the same seed twice (two fresh builds and compiles), `--det_steps` steps, SHA-256 of the
   parameters; `equal` says whether both runs agree bitwise;
2. steps: `train_step.py` rows in float32 and bfloat16 (ATBA B8×T512, B32×T2048; HAL B8×T512; HAAN B2×T309), with
   model FLOPs and MFU against the same-run GEMM peak of the dtype;
3. long video: ATBA B1×T54000 (a 1-hour video at 15 fps) in bfloat16: temp memory and step time, or the error;
4. trace: a `jax.profiler` trace of five ATBA B8×T512 bfloat16 steps into `--out/trace` (open with TensorBoard or
   Perfetto to see where the time goes).

The official PyTorch steps on the same GPU come from ../shared/bench/gpu/ (see its README): run them in the same
device command, before or after this script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import traceback

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train_step  # pylint: disable=wrong-import-position

# (method, extra train_step flags) of the full-size and the tiny rows.
_FULL_ROWS = [("atba", ["--batch=8", "--frames=512"]), ("atba", ["--batch=32", "--frames=2048"]),
              ("hal", ["--batch=8", "--frames=512"]),
              ("haan", ["--batch=2", "--frames=309", "--classes=99", "--coarse=14"])]
_TINY = ["--batch=2", "--frames=32", "--feature_dim=16", "--layers=3", "--classes=12", "--coarse=2", "--hidden=16",
         "--preset=test", "--devices=1"]


def _emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


def parameter_hash(method: str, extra: list[str], steps: int) -> str:
  """SHA-256 of the parameters after `steps` steps of a fresh build (seed 0)."""
  built = train_step.setup(train_step.parse_args([f"--method={method}", *extra]))
  step = jax.jit(built["step"])
  state = built["state"]
  for _ in range(steps):
    state, _ = step(state, built["batch"])
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(state.params)):
    digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU smoke run)")
  parser.add_argument("--methods", default="atba,hal,ahlm,haan", help="methods of the determinism check")
  parser.add_argument("--det_steps", type=int, default=20)
  parser.add_argument("--checks", default="determinism,steps,long_video,trace")
  parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_check"))
  args = parser.parse_args(argv)
  checks = args.checks.split(",")
  size = _TINY if args.tiny else []
  peak = ["--peak_size=256", "--peak_repeats=1"] if args.tiny else []
  timing = ["--steps=2", "--warmup=1", "--max_attempts=2"] if args.tiny else ["--steps=10", "--warmup=2"]
  records = []

  def run(check: str, fn) -> None:
    try:
      record = {"check": check, **fn()}
    except Exception as error:  # pylint: disable=broad-except
      record = {"check": check, "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-2000:]}
    record["backend"], record["device"] = jax.default_backend(), str(jax.devices()[0].device_kind)
    records.append(record)
    _emit(record)

  if "determinism" in checks:
    for method in args.methods.split(","):
      for dtype in ("float32", "bfloat16"):
        extra = size + [f"--compute_dtype={dtype}"]
        steps = 2 if args.tiny else args.det_steps

        def determinism(method=method, extra=extra, steps=steps, dtype=dtype):
          first, second = parameter_hash(method, extra, steps), parameter_hash(method, extra, steps)
          return {"method": method, "compute_dtype": dtype, "steps": steps, "hash": first, "equal": first == second}

        run("determinism", determinism)
  if "steps" in checks:
    rows = [(m, size) for m in ("atba", "hal")] if args.tiny else _FULL_ROWS
    for method, extra in rows:
      for dtype in ("float32", "bfloat16"):
        flags = [f"--method={method}", *extra, *timing, *peak, f"--compute_dtype={dtype}"]
        run("step", lambda flags=flags: train_step.main(flags))
  if "long_video" in checks:
    frames = ["--frames=256"] if args.tiny else ["--frames=54000"]
    flags = ["--method=atba", *size, "--batch=1", *frames, *timing, *peak, "--compute_dtype=bfloat16"]
    run("long_video", lambda: train_step.main(flags))
  if "trace" in checks:
    def trace():
      built = train_step.setup(train_step.parse_args(["--method=atba", *(size or ["--batch=8", "--frames=512"]),
                                                      "--compute_dtype=bfloat16"]))
      step = jax.jit(built["step"], donate_argnums=0)
      state, _ = step(built["state"], built["batch"])
      directory = os.path.join(args.out, "trace")
      with jax.profiler.trace(directory):
        for _ in range(5):
          state, metrics = step(state, built["batch"])
        jax.block_until_ready(metrics)
      return {"trace_dir": directory, "files": sum(len(f) for _, _, f in os.walk(directory))}
    run("trace", trace)
  return records


if __name__ == "__main__":
  main()
