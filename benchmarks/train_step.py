r"""Times one full training step (forward, pseudo-label alignment, backward, AdamW update) of a method.

  python benchmarks/train_step.py --method=atba --batch=8 --frames=512 --feature_dim=2048 --layers=5 --classes=48
  python benchmarks/train_step.py --method=hal --frames=4096 --batch=1
  python benchmarks/train_step.py --method=ahlm --batch=16 --frames=750 --classes=20     # THUMOS14 widths
  python benchmarks/train_step.py --method=haan --batch=2 --frames=309 --classes=99 --coarse=14   # FineGym widths
  python benchmarks/train_step.py --method=pose --batch=8 --frames=512    # ATBA + pose branch, a pose on every step
  python benchmarks/train_step.py --method=pose --pose_every=5            # a pose every 5th step (paper's stride)
  python benchmarks/train_step.py --method=hclip --batch=32 --frames=16 --feature_dim=512 --hidden=512 --layers=2 \
      --classes=12 --coarse=4                                                     # H-CLIP, FMA with the spec's sizes

  python benchmarks/train_step.py --method=atba --batch=32 --frames=2048 --compute_dtype=bfloat16

Prints one JSON line: ms_per_step_median (stage 2, i.e. with alignment), ms_alignment_median (the jitted batch
alignment alone on the same logits), compile_s, temp_mb (XLA's temporary buffers of one step: the activation memory),
the process's peak_rss_mb, and FLOPs:

* model_gflop_per_step: the analytic matmul FLOPs of the step (`hal_jax.flops`, from the jaxpr: the same on every
  backend); analytic_gflop_per_step adds the elementwise operations; xla_gflop_per_step is XLA's cost analysis of the
  compiled step (on GPU it misses the cuBLAS GEMMs, so it is reported, never used);
* matmul_peak_gflops: jnp.dot of two `--peak_size`² matrices in the compute dtype, measured in the same run, and
  mfu = model FLOPs per second / that peak.
Segmentation shapes follow the official harness (../shared/bench/peer_atba_step.py): random features, every video
`frames` long, random transcripts of 8-12 actions, Breakfast hyper-parameters. Localization methods (AHLM) get
random snippet features and one random class per video, with their THUMOS14 (AHLM) or FineGym (HAAN) preset;
`ms_alignment_median` is null. Methods with refreshed state (HAAN's pseudo-labels) get one real refresh on the batch's
videos before timing (the step's cost depends only on the shapes). `--preset` picks another preset's sizes.
Recognition (H-CLIP) gets `frames` random frame embeddings per clip, a two-level taxonomy of `coarse` parents over
`classes` leaves with random class texts of width `feature_dim`, the spec's encoder (8 heads, MLP 4x `hidden`) and
the FMA preset's other hyper-parameters; it runs in float32 only (`ms_alignment_median` is null).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import contention  # pylint: disable=wrong-import-position
from hal_jax import experiment  # pylint: disable=wrong-import-position
from hal_jax import flops  # pylint: disable=wrong-import-position
from hal_jax import optim  # pylint: disable=wrong-import-position
from hal_jax import sharding  # pylint: disable=wrong-import-position
from hal_jax import train  # pylint: disable=wrong-import-position
from hal_jax.alignment import atba as alignment  # pylint: disable=wrong-import-position
from hal_jax.data import localization_formats  # pylint: disable=wrong-import-position
from hal_jax.data import formats  # pylint: disable=wrong-import-position
from hal_jax.data import recognition_formats  # pylint: disable=wrong-import-position
from hal_jax.methods import base  # pylint: disable=wrong-import-position

# method -> (config module, real-data preset whose hyper-parameters are timed).
_CONFIG_MODULES = {"atba": ("configs.atba", "breakfast"), "hal": ("configs.hal", "breakfast"),
                   "ahlm": ("configs.ahlm", "thumos14"), "haan": ("configs.haan", "finegym"),
                   "pose": ("configs.pose", "desktop_assembly"), "hclip": ("configs.hclip", "fma")}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--method", choices=sorted(_CONFIG_MODULES), default="atba")
  parser.add_argument("--preset", default="", help="config preset (default: the method's real-data preset)")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--frames", type=int, default=512, help="downsampled frames per video")
  parser.add_argument("--feature_dim", type=int, default=2048)
  parser.add_argument("--layers", type=int, default=5)
  parser.add_argument("--classes", type=int, default=48)
  parser.add_argument("--coarse", type=int, default=14, help="coarse classes of a hierarchy (HAAN, H-CLIP)")
  parser.add_argument("--hidden", type=int, default=256)
  parser.add_argument("--steps", type=int, default=10, help="timed steps (after warm-up)")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--devices", type=int, default=0, help="devices in the mesh (0: all)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--max_attempts", type=int, default=40,
                      help="timed steps tried at most while waiting for `--steps` uncontended ones")
  parser.add_argument("--compute_dtype", choices=("float32", "bfloat16"), default="float32")
  parser.add_argument("--peak_size", type=int, default=8192, help="side of the GEMM that measures the peak")
  parser.add_argument("--peak_repeats", type=int, default=3)
  parser.add_argument("--pose_every", type=int, default=1,
                      help="--method=pose: a pose on every this many steps (1: every step, the worst case; 5: the "
                      "paper's 5-frame pose stride at full frame rate)")
  args = parser.parse_args(argv)
  if args.pose_every < 1:
    parser.error(f"--pose_every must be >= 1, got {args.pose_every}")
  if args.method == "hclip" and args.compute_dtype != "float32":
    parser.error("--method=hclip has no bfloat16 path (it computes in float32 only)")
  if args.method == "hclip" and not 0 < args.coarse <= args.classes:
    parser.error(f"--method=hclip needs 1 <= --coarse <= --classes, got --coarse={args.coarse}")
  return args


def random_batch(args: argparse.Namespace, rng: np.random.Generator, segmentation: bool) -> dict[str, np.ndarray]:
  """A batch like the official harness's: all videos `frames` long, transcripts of 8-12 actions (segmentation) or
  one class per video (localization)."""
  b, t, c = args.batch, args.frames, args.classes
  if not segmentation:
    return {"features": rng.standard_normal((b, t, args.feature_dim), np.float32),
            "frame_mask": np.ones((b, t), bool), "num_frames": np.full(b, t, np.int32),
            "video_labels": np.eye(c, dtype=np.float32)[rng.integers(0, c, b)], "batch_mask": np.ones(b, bool),
            "video_index": np.arange(b, dtype=np.int32)}
  max_transcript = 12
  transcript = np.full((b, max_transcript), -1, np.int32)
  video_labels = np.zeros((b, c), np.float32)
  for i in range(b):
    length = int(rng.integers(8, max_transcript + 1))
    actions = [0] + list(rng.choice(np.arange(1, c), size=length - 2, replace=False)) + [0]
    transcript[i, :length] = actions
    video_labels[i, actions] = 1.0
  return {
      "features": rng.standard_normal((b, t, args.feature_dim), np.float32),
      "frame_mask": np.ones((b, t), bool),
      "frame_labels": rng.integers(0, c, (b, t)).astype(np.int32),
      "num_frames": np.full(b, t, np.int32),
      "raw_length": np.full(b, t * 10, np.int32),
      "transcript": transcript,
      "transcript_mask": transcript >= 0,
      "video_labels": video_labels,
      "batch_mask": np.ones(b, bool),
      "video_index": np.arange(b, dtype=np.int32),
  }


def random_poses(args: argparse.Namespace, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A COCO-17 pose on every `args.pose_every`-th step (1: every step, the pose branch's worst case): pixels in a
  640x480 image, confident joints; steps without a pose have scores 0."""
  shape = (args.batch, args.frames, 17)
  scores = rng.uniform(0.5, 1.0, shape).astype(np.float32)
  scores[:, np.arange(args.frames) % args.pose_every != 0] = 0.0
  return {"pose_keypoints": rng.uniform(0, 480, shape + (2,)).astype(np.float32), "pose_scores": scores}


def recognition_inputs(args: argparse.Namespace, rng: np.random.Generator
                       ) -> tuple[dict[str, np.ndarray], recognition_formats.TaxonomyNames]:
  """(batch, leaf names carrying their taxonomy): `coarse` parents over `classes` leaves, random class texts."""
  b, c, k = args.batch, args.classes, args.coarse
  parents = (np.arange(c) * k // c).astype(np.int32)
  taxonomy = recognition_formats.Taxonomy(
      ("coarse", "fine"), (tuple(f"c{i}" for i in range(k)), tuple(f"f{j}" for j in range(c))),
      (np.zeros([0], np.int32), parents),
      text=tuple(rng.standard_normal((n, args.feature_dim)).astype(np.float32) for n in (k, c)))
  leaves = rng.integers(0, c, b)
  batch = {"features": rng.standard_normal((b, args.frames, args.feature_dim), np.float32),
           "frame_mask": np.ones((b, args.frames), bool),
           "labels": np.stack([parents[leaves], leaves], axis=1).astype(np.int32),
           "batch_mask": np.ones(b, bool), "video_index": np.arange(b, dtype=np.int32)}
  return batch, taxonomy.names


def random_split(args: argparse.Namespace, batch: dict[str, np.ndarray],
                 label_names: tuple[str, ...]) -> localization_formats.LocalizationDataset:
  """The batch's videos as a training split (for a stateful method's refresh), `args.coarse` even coarse groups."""
  videos = tuple(localization_formats.LocalizationVideo(
      f"video{i}", "train", float(args.frames), 1.0, batch["features"][i], np.zeros([0, 2]),
      np.flatnonzero(batch["video_labels"][i]).astype(np.int32)) for i in range(args.batch))
  hierarchy = {j: j * args.coarse // args.classes for j in range(args.classes)}
  return localization_formats.LocalizationDataset("", formats.LabelMap(label_names), videos, hierarchy)


def matmul_peak_gflops(size: int = 8192, repeats: int = 3, dtype=jnp.float32) -> float:
  """Measured GFLOP/s of jnp.dot on size² matrices of `dtype` (best of `repeats`, after one warm-up)."""
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  dot = jax.jit(jnp.dot)
  dot(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best / 1e9


def alignment_ms(args: argparse.Namespace, config, batch) -> float:
  """Median ms of the jitted batch alignment alone, on random logits of the step's shape."""
  logits = jax.random.normal(jax.random.key(2), (args.batch, args.frames, args.classes))
  align = jax.jit(lambda lg: alignment.pseudo_labels_batch(
      lg, batch["num_frames"], batch["transcript"], jnp.sum(batch["transcript_mask"], 1).astype(jnp.int32),
      boundary_kernel=config.boundary_kernel, boundary_scale=config.boundary_scale,
      transition_kernel=config.transition_kernel, candidate_multiplier=config.candidate_multiplier))
  align(logits).block_until_ready()
  align_times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    align(logits).block_until_ready()
    align_times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(align_times)


def label_names(args: argparse.Namespace, config) -> tuple[str, ...]:
  """`args.classes` names, the first the config's background class (if it has one)."""
  return (config.get("background") or "SIL",) + tuple(f"action_{i}" for i in range(1, args.classes))


def setup(args: argparse.Namespace) -> dict:
  """Everything a timed step needs: config, method, mesh, optimizer, host and device batch, the train state (after
  one real refresh for stateful methods) and the unjitted step of the last training stage."""
  module_name, preset = _CONFIG_MODULES[args.method]
  config = __import__(module_name, fromlist=["get_config"]).get_config(args.preset or preset)
  segmentation = base.method_task(config) is base.Task.SEGMENTATION
  recognition = base.method_task(config) is base.Task.RECOGNITION
  with config.unlocked():
    config.compute_dtype = args.compute_dtype
    config.feature_dim = args.feature_dim
    config.batch_size = args.batch
    if "train_length" in config:
      config.train_length = max(config.train_length, args.frames)
    if segmentation:
      config.num_layers = args.layers
      config.hidden_dim = args.hidden
      config.max_positions = max(config.max_positions, args.frames)
    if recognition:  # The spec's encoder (hclip.md §3): 8 heads, MLP 4x the width.
      config.update(num_layers=args.layers, hidden_dim=args.hidden, mlp_dim=4 * args.hidden, num_heads=8,
                    num_frames=args.frames)
    if "expected_classes" in config:
      config.expected_classes = 0  # The pose presets check the data's class count; here it is --classes.
    if "pose_stride" in config:  # The pose slots (methods/pose.py pose_capacity) follow the poses' density.
      config.pose_stride = args.pose_every * config.sample_rate
  devices = jax.devices()[:args.devices] if args.devices else jax.devices()
  mesh = sharding.make_mesh(devices)
  if recognition:
    host_batch, names = recognition_inputs(args, np.random.default_rng(args.seed))
  else:
    names = label_names(args, config)
    host_batch = random_batch(args, np.random.default_rng(args.seed), segmentation)
  method = base.make_method(config, names)
  tx = optim.make_optimizer(config)
  if config.get("use_poses", False):
    host_batch.update(random_poses(args, np.random.default_rng(args.seed + 1)))
  batch = sharding.shard_batch(host_batch, mesh)
  refresh_data = method.refresh_data(random_split(args, host_batch, names)) if base.has_state(method) else None
  state, _ = experiment.init_state(method, tx, config, batch, mesh,
                              method.init_state(refresh_data) if refresh_data is not None else None)
  if refresh_data is not None:
    method_state, _ = method.refresh(state.params, state.method_state, refresh_data, jax.random.key(args.seed))
    state = state.replace(method_state=method_state)
  # The last training stage: for ATBA/HAL the one with pseudo-label alignment.
  final_stage = method.stage_for_epoch(config.num_epochs - 1)
  step = train.make_train_step(method, tx, stage=final_stage, steps_per_epoch=1,
                               dropout_key=jax.random.key(1))
  return {"config": config, "method": method, "segmentation": segmentation, "devices": devices, "mesh": mesh,
          "tx": tx, "host_batch": host_batch, "batch": batch, "state": state, "step": step}


def main(argv=None) -> dict:
  args = parse_args(argv)
  built = setup(args)
  config, segmentation, devices = built["config"], built["segmentation"], built["devices"]
  state, batch, step = built["state"], built["batch"], built["step"]
  counted = flops.count(step, state, batch)

  started = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=0).lower(state, batch).compile()
  compile_s = time.perf_counter() - started
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  memory = compiled.memory_analysis()  # XLA's buffer assignment: temporaries live during one step.
  temp_mb = memory.temp_size_in_bytes / 2**20 if memory is not None else float("nan")

  for _ in range(args.warmup):
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
  # Medians over steps during which no other process used the CPU (see contention.py); all steps if too few.
  clean, every = [], []
  for _ in range(args.max_attempts):
    with contention.TimedRegion() as region:
      state, metrics = compiled(state, batch)
      jax.block_until_ready(metrics)
    every.append(region.seconds)
    if region.clean:
      clean.append(region.seconds)
    if len(clean) >= args.steps:
      break
  contended = len(clean) < 3
  times = every if contended else clean

  align_ms = alignment_ms(args, config, batch) if segmentation else None
  step_s = statistics.median(times)
  peak = matmul_peak_gflops(args.peak_size, args.peak_repeats, jnp.dtype(args.compute_dtype))
  result = {
      "method": args.method, "batch": args.batch, "frames": args.frames, "feature_dim": args.feature_dim,
      "layers": args.layers, "classes": args.classes, "devices": len(devices), "backend": jax.default_backend(),
      "ms_per_step_median": 1e3 * step_s, "ms_per_step_min": 1e3 * min(times),
      "ms_alignment_median": align_ms, "compile_s": compile_s,
      "compute_dtype": args.compute_dtype, "model_gflop_per_step": counted.model / 1e9,
      "analytic_gflop_per_step": counted.total / 1e9, "xla_gflop_per_step": xla_flops / 1e9,
      "achieved_gflops": counted.model / 1e9 / step_s, "matmul_peak_gflops": peak, "peak_size": args.peak_size,
      "mfu": counted.model / 1e9 / step_s / peak, "temp_mb": temp_mb,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "clean_steps": len(clean),
      "attempted_steps": len(every),
      "contended": contended, "jax": jax.__version__, "python": platform.python_version(),
  }
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
