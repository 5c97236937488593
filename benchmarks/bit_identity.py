"""Fingerprints of a training run per method, to show that a refactoring changes no output (issue 13).

For the `test` preset of each method (configs/{hal,atba,ahlm,haan}.py:test) this trains the main job's way
(`hal_jax.train.train_and_evaluate`) in a fresh temporary workdir and prints one JSON line per method with sha256
hashes of:

* ``synthetic``: every file the run generated under ``<workdir>/data`` (relative path + bytes);
* ``batches``: the first `--batches` training batches of epochs 0 and 1 and the first test batch (every array's
  name, dtype, shape and bytes);
* ``metrics``: the values of metrics.jsonl without wall-clock fields (times, input-wait fractions);
* ``params``: the final parameters (every leaf's path, dtype, shape and bytes).

Run it before and after a change with the same environment and compare the lines:

  JAX_PLATFORMS=cpu python benchmarks/bit_identity.py > before.jsonl
  ... change ...
  JAX_PLATFORMS=cpu python benchmarks/bit_identity.py | diff before.jsonl -
"""

import argparse
import hashlib
import importlib
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from hal_jax import experiment  # pylint: disable=g-import-not-at-top,wrong-import-position
from hal_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

METHODS = ("hal", "atba", "ahlm", "haan")
# metrics.jsonl fields that measure wall-clock time, not the computation.
_WALL_CLOCK = ("seconds", "input_wait_fraction", "steps_per_second", "time", "timestamp", "wall")


def _hash_arrays(items) -> str:
  """sha256 over `(name, array)` pairs: name, dtype, shape and bytes of each."""
  digest = hashlib.sha256()
  for name, value in items:
    array = np.ascontiguousarray(np.asarray(value))
    digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def _hash_files(root: str) -> str:
  digest = hashlib.sha256()
  for directory, subdirs, files in os.walk(root):
    subdirs.sort()
    for name in sorted(files):
      path = os.path.join(directory, name)
      digest.update(os.path.relpath(path, root).encode() + b"\0")
      with open(path, "rb") as f:
        digest.update(f.read())
  return digest.hexdigest()


def _is_wall_clock(key: str) -> bool:
  return any(part in key for part in _WALL_CLOCK)


def _hash_metrics(path: str) -> str:
  rows = []
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      rows.append({k: v for k, v in sorted(record.items()) if not _is_wall_clock(k)})
  # Floats round-trip through repr exactly, so this is the values' bits; NaN compares as the string "nan".
  return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(method: str, num_batches: int) -> dict:
  config = importlib.import_module(f"configs.{method}").get_config("test")
  with tempfile.TemporaryDirectory() as workdir:
    with config.unlocked():
      config.progress = False
    result = train.train_and_evaluate(config, workdir)
    params = jax.device_get(result.state.params)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    data = experiment.load_data(config, workdir)  # Reuses the generated data (and checks it is unchanged).
    batches = []
    for epoch in (0, 1):
      for index in range(min(num_batches, data.train_pipeline.num_batches_per_epoch)):
        batch = data.train_pipeline.batch(epoch, index)
        batches += [(f"train/{epoch}/{index}/{k}", v) for k, v in sorted(batch.items())]
    batches += [(f"test/0/{k}", v) for k, v in sorted(data.test_pipeline.batch(0, 0).items())]
    return {
        "method": method,
        "steps": int(result.steps),
        "synthetic": _hash_files(os.path.join(workdir, "data")),
        "batches": _hash_arrays(batches),
        "metrics": _hash_metrics(os.path.join(workdir, "metrics.jsonl")),
        "params": _hash_arrays((jax.tree_util.keystr(path), leaf) for path, leaf in leaves),
    }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated configs/<method>.py to run")
  parser.add_argument("--batches", type=int, default=3, help="training batches hashed per epoch (epochs 0 and 1)")
  args = parser.parse_args()
  for method in args.methods.split(","):
    print(json.dumps(fingerprint(method, args.batches), sort_keys=True), flush=True)


if __name__ == "__main__":
  main()
