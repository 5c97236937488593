r"""Per-chunk latency of the streaming (online) predictor, `hal_jax.models.streaming.StreamingSegmenter`.

  python benchmarks/streaming.py --chunk=64 --layers=5 --hidden=256 --feature_dim=2048 --classes=48

Prints one JSON line: the median and minimum milliseconds to push one chunk of `chunk` feature steps through a causal
pyramid transformer with random weights (labels of the chunk back on the host), the compile time, and the tokens the
stream keeps between chunks (2**layers - 1 per layer: bounded by the attention band, not the video length).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hal_jax.models import pyramid_transformer as pt  # pylint: disable=wrong-import-position
from hal_jax.models import streaming  # pylint: disable=wrong-import-position


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--chunk", type=int, default=64)
  parser.add_argument("--chunks", type=int, default=30, help="timed chunks (after one warm-up chunk)")
  parser.add_argument("--layers", type=int, default=5)
  parser.add_argument("--hidden", type=int, default=256)
  parser.add_argument("--feature_dim", type=int, default=2048)
  parser.add_argument("--classes", type=int, default=48)
  args = parser.parse_args(argv)
  positions = (args.chunks + 1) * args.chunk
  model = pt.PyramidTransformer(num_classes=args.classes, max_positions=positions, hidden_dim=args.hidden,
                                num_layers=args.layers, causal=True)
  rng = np.random.default_rng(0)
  features = rng.standard_normal((positions, args.feature_dim)).astype(np.float32)
  params = model.init(jax.random.key(0), features[None, :args.chunk], np.ones((1, args.chunk), bool))["params"]
  stream = streaming.StreamingSegmenter(model, params, chunk_size=args.chunk)
  state = stream.initial_state()
  started = time.perf_counter()
  state, _ = stream.push(state, features[:args.chunk])
  compile_s = time.perf_counter() - started
  times = []
  for i in range(1, args.chunks + 1):
    started = time.perf_counter()
    state, labels = stream.push(state, features[i * args.chunk:(i + 1) * args.chunk])
    times.append(time.perf_counter() - started)
  result = {"chunk": args.chunk, "layers": args.layers, "hidden": args.hidden, "feature_dim": args.feature_dim,
            "classes": args.classes, "ms_per_chunk_median": 1e3 * statistics.median(times),
            "ms_per_chunk_min": 1e3 * min(times), "compile_s": compile_s,
            "cached_tokens": sum(c.shape[0] for c in state.caches), "frames_streamed": int(state.position),
            "backend": jax.default_backend(), "jax": jax.__version__, "python": platform.python_version()}
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
