"""Times one jitted HAAN training step (forward, the four losses, backward, Adam); prints one JSON line.

  python benchmarks/haan_step.py                          # FineGym: batch 2, 309 clips, 2048-d, 99 / 14 classes
  python benchmarks/haan_step.py --batch=2 --clips=160 --hierarchy=0     # L_mil + L_pseudo only

The step is the one the training loop runs: `Haan.loss` under `jax.value_and_grad` with the state's pseudo-labels
gathered by video index, then Adam (lr 3e-5), parameters and optimizer state donated. Inputs are random I3D-like
features, random multi-hot labels and random pseudo-labels (a refresh's output); the cost depends only on the
shapes. HAAN's official PyTorch step takes about 2.4 s at batch 2 and 309 clips on a 2-core CPU, of which about
0.64 s per video is a Python loop over its 500 visual concepts (../shared/bench/official_cpu.md).

`flops_per_step` counts the matrix multiplications of the forward pass (2 per multiply-add) times 3 for the
backward pass: the floor any implementation pays for this network on a given machine.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hal_jax.methods import haan

_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "haan.py")


def load_config(preset: str):
  spec = importlib.util.spec_from_file_location("haan_configs", _CONFIGS)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def make_inputs(rng: np.random.Generator, args) -> tuple[dict, haan.TrainingClips]:
  """A batch of `args.batch` videos of `args.clips` clips and the split they come from (random contents)."""
  num_videos = args.batch
  lengths = np.full(num_videos, args.clips, np.int64)
  labels = np.zeros([num_videos, args.classes], np.float32)
  for v in range(num_videos):
    labels[v, rng.choice(args.classes, size=int(rng.integers(1, 6)), replace=False)] = 1.0
  fine_to_coarse = np.arange(args.classes) * args.coarse // args.classes
  clips = haan.TrainingClips(features=np.zeros([0, args.feature_dim], np.float32), lengths=lengths,
                             video_labels=labels, fine_to_coarse=fine_to_coarse)
  batch = {
      "features": rng.standard_normal([num_videos, args.clips, args.feature_dim], dtype=np.float32),
      "frame_mask": np.ones([num_videos, args.clips], bool),
      "num_frames": np.full(num_videos, args.clips, np.int32),
      "video_labels": labels,
      "batch_mask": np.ones(num_videos, bool),
      "video_index": np.arange(num_videos, dtype=np.int32),
  }
  return batch, clips


def forward_flops(args, config) -> float:
  """2 × multiply-adds of the forward pass's matrix products (encoder, three heads, concept similarities)."""
  h, d, c, n = config.hidden_dim, args.feature_dim, args.classes, config.num_concepts
  clips = args.batch * args.clips
  per_clip = d * h + h * h + (h * h + h * c) + (h * h + h * n)
  hierarchy = args.batch * (c * n * h + args.coarse * (h * h + h)) if args.hierarchy else 0
  return 2.0 * (clips * per_clip + hierarchy)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="finegym", help="configs/haan.py preset (network sizes and weights)")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--clips", type=int, default=309)
  parser.add_argument("--feature_dim", type=int, default=2048)
  parser.add_argument("--classes", type=int, default=99)
  parser.add_argument("--coarse", type=int, default=14)
  parser.add_argument("--hierarchy", type=int, default=1, help="0: L_mil + L_pseudo only (no concept hierarchy)")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  config = load_config(args.preset)
  with config.unlocked():
    config.feature_dim = args.feature_dim
    config.train_length = args.clips
    if not args.hierarchy:
      config.concept_weight = config.coarse_weight = 0.0
  names = tuple(f"class{j}" for j in range(args.classes))
  method = haan.make_method(config, names)
  rng = np.random.default_rng(args.seed)
  host_batch, clips = make_inputs(rng, args)
  batch = jax.device_put(host_batch)
  state = method.init_state(clips)
  state = state.replace(pseudo_labels=jnp.asarray(rng.integers(0, config.num_concepts, state.pseudo_labels.shape),
                                                  jnp.int32),
                        cluster_weights=jnp.asarray(rng.dirichlet(np.ones(config.num_concepts)), jnp.float32))
  params = jax.jit(method.init)(jax.random.key(args.seed), batch)
  tx = optax.adam(config.learning_rate)
  opt_state = tx.init(params)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def train_step(params, opt_state, batch, state, step):
    rng = jax.random.fold_in(jax.random.key(args.seed), step)
    (loss, _), grads = jax.value_and_grad(method.loss, has_aux=True)(params, batch, rng, 0, state)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  start = time.perf_counter()
  params, opt_state, loss = train_step(params, opt_state, batch, state, 0)
  loss.block_until_ready()
  compile_ms = (time.perf_counter() - start) * 1e3
  for step in range(1, args.warmup):
    params, opt_state, loss = train_step(params, opt_state, batch, state, step)
  loss.block_until_ready()
  times = []
  for step in range(args.repeats):
    start = time.perf_counter()
    params, opt_state, loss = train_step(params, opt_state, batch, state, args.warmup + step)
    loss.block_until_ready()
    times.append((time.perf_counter() - start) * 1e3)
  median = float(np.median(times))
  flops = 3.0 * forward_flops(args, config)
  print(json.dumps({
      "benchmark": "haan_train_step",
      "ms_per_step_median": round(median, 2),
      "ms_per_step_min": round(float(np.min(times)), 2),
      "ms_first_call_with_compile": round(compile_ms, 1),
      "gflop_per_step": round(flops / 1e9, 2),
      "achieved_gflops": round(flops / median / 1e6, 1),
      "loss": float(loss),
      "batch": args.batch, "clips": args.clips, "feature_dim": args.feature_dim, "hidden_dim": config.hidden_dim,
      "classes": args.classes, "coarse": args.coarse, "concepts": config.num_concepts,
      "hierarchy": bool(args.hierarchy),
      "repeats": args.repeats, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "loadavg": [round(x, 2) for x in os.getloadavg()],
      "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
  }))


if __name__ == "__main__":
  main()
