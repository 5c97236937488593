"""Throughput of the segmentation input pipeline (hal_jax/data/segmentation_pipeline.py); one JSON line per measurement.

Builds a random in-memory split (video lengths uniform in [(1 - spread) frames, (1 + spread) frames], `--spread` 0.5
by default) and times `--epochs` epochs (after a warm-up epoch; best of `--repeats` runs, median too) along these
paths:

* ``numpy``: `SegmentationPipeline.batch` in a plain loop (no tf.data, no prefetch: the cost of building batches);
* ``epoch_batches``: one tf.data pipeline per epoch (parallel map + prefetch), host NumPy batches;
* ``stream``: one tf.data pipeline for all epochs (`SegmentationPipeline.stream`);
* ``global_stream``: `stream` also sharded onto every device of the mesh (waits for the last transfer).

With ``--step_ms`` each consumed batch is followed by a sleep of that length, standing in for a training step, which
shows how much of the build time prefetching hides (without prefetch the cost per batch is build + step).
With ``--files=DT`` or ``--files=TD`` the split is written to a temporary MS-TCN directory in that layout and read back
lazily (`load_mstcn_split`: frames are gathered from the files while batches are built).

  python benchmarks/input_pipeline.py --videos=512 --frames=2000 --dim=2048 --batch=32 --sample_rate=10
  python benchmarks/input_pipeline.py --videos=64 --frames=5120 --spread=0 --dim=2048 --batch=8 --paths=numpy  # 8x512
"""

import argparse
import json
import os
import tempfile
import time

# TensorFlow (tf.data only) should stay quiet and off the GPU, as in the library.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from hal_jax import sharding  # pylint: disable=g-import-not-at-top
from hal_jax.data import batching  # pylint: disable=g-import-not-at-top
from hal_jax.data import formats  # pylint: disable=g-import-not-at-top
from hal_jax.data import segmentation_formats  # pylint: disable=g-import-not-at-top
from hal_jax.data import segmentation_pipeline as pipeline  # pylint: disable=g-import-not-at-top
from hal_jax.data.formats import LabelMap  # pylint: disable=g-import-not-at-top
from hal_jax.data.segmentation_formats import SegmentationDataset, SegmentationVideo  # pylint: disable=g-import-not-at-top


def random_dataset(videos: int, frames: int, dim: int, classes: int, seed: int, spread: float = 0.5
                   ) -> SegmentationDataset:
  """Random features [T, dim] and labels in runs of ~frames/8, so that transcripts are ~8 long."""
  rng = np.random.default_rng(seed)
  items = []
  for i in range(videos):
    length = int(rng.integers(max(int(frames * (1 - spread)), 1), int(frames * (1 + spread)) + 1))
    run = max(frames // 8, 1)
    labels = np.repeat(rng.integers(0, classes, -(-length // run)), run)[:length].astype(np.int32)
    keep = np.concatenate([[True], labels[1:] != labels[:-1]])
    features = rng.standard_normal((length, dim), dtype=np.float32)
    items.append(SegmentationVideo(f"video_{i}", features, labels, labels[keep]))
  return SegmentationDataset("<random>", LabelMap(tuple(f"c{c}" for c in range(classes))), tuple(items))


def written_and_read_back(dataset: SegmentationDataset, layout: str, root: str) -> SegmentationDataset:
  """`dataset` written as an MS-TCN directory under `root` in `layout`, loaded lazily."""
  formats.write_mapping(os.path.join(root, "mapping.txt"), dataset.label_map)
  for video in dataset.videos:
    segmentation_formats.write_mstcn_video(root, video.name, video.features,
                                           dataset.label_map.names_of(video.labels), layout=layout)
  formats.write_split_list(segmentation_formats.split_path(root, "train", 1), [v.name for v in dataset.videos])
  return segmentation_formats.load_mstcn_split(root, "train", feature_layout=layout)


def time_batches(batches, step_s: float) -> tuple[float, int, int, int]:
  """Consumes `batches`; returns (seconds, batches, valid frames, feature bytes)."""
  count = frames = nbytes = 0
  last = None
  start = time.perf_counter()
  for batch in batches:
    count += 1
    frames += int(np.asarray(batch["num_frames"]).sum())
    nbytes += batch["features"].nbytes
    last = batch
    if step_s:
      time.sleep(step_s)
  if last is not None:
    jax.block_until_ready(last)
  return time.perf_counter() - start, count, frames, nbytes


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--videos", type=int, default=128)
  parser.add_argument("--frames", type=int, default=1000, help="mean raw frames per video")
  parser.add_argument("--spread", type=float, default=0.5, help="relative spread of the video lengths")
  parser.add_argument("--dim", type=int, default=512)
  parser.add_argument("--classes", type=int, default=48)
  parser.add_argument("--batch", type=int, default=16, help="global batch size")
  parser.add_argument("--sample_rate", type=int, default=10)
  parser.add_argument("--bucket_multiple", type=int, default=64)
  parser.add_argument("--epochs", type=int, default=2, help="timed epochs, after one warm-up epoch")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per path; the best is reported")
  parser.add_argument("--step_ms", type=float, default=0.0, help="simulated training step per batch")
  parser.add_argument("--eval", action="store_true", help="evaluation pipeline (middle frames, no shuffle)")
  parser.add_argument("--paths", default="numpy,epoch_batches,stream,global_stream")
  parser.add_argument("--files", default="", choices=("", *formats.FEATURE_LAYOUTS),
                      help="read the split lazily from files in this layout (default: in memory)")
  args = parser.parse_args()

  dataset = random_dataset(args.videos, args.frames, args.dim, args.classes, seed=0, spread=args.spread)
  with tempfile.TemporaryDirectory() as root:
    if args.files:
      dataset = written_and_read_back(dataset, args.files, root)
    measure(args, dataset)


def measure(args: argparse.Namespace, dataset: SegmentationDataset) -> None:
  buckets = batching.default_buckets(pipeline.longest_video(dataset, args.sample_rate), args.bucket_multiple)
  pipe = pipeline.SegmentationPipeline(dataset, batch_size=args.batch, sample_rate=args.sample_rate,
                                       bucket_lengths=buckets, max_transcript=pipeline.longest_transcript(dataset),
                                       seed=0, train=not args.eval)
  mesh = sharding.make_mesh()
  paths = {
      "numpy": lambda first, n: (pipe.batch(e, b) for e in range(first, first + n)
                                 for b in range(pipe.num_batches_per_epoch)),
      "epoch_batches": lambda first, n: (batch for e in range(first, first + n) for batch in pipe.epoch_batches(e)),
      "stream": lambda first, n: (batch for _, _, batch in pipe.stream(first, 0, n)),
      "global_stream": lambda first, n: (batch for _, _, batch in pipe.global_stream(mesh, first, 0, n)),
  }
  for name in args.paths.split(","):
    time_batches(paths[name](0, 1), 0.0)  # Warm-up epoch 0: TF import, first tf.data graph, first transfers.
    # Shared machines are noisy: repeat, and report the best run (what the pipeline can do) and the median.
    runs = sorted((time_batches(paths[name](1, args.epochs), args.step_ms / 1000) for _ in range(args.repeats)),
                  key=lambda run: run[0])
    seconds, count, frames, nbytes = runs[0]
    median_seconds = runs[len(runs) // 2][0]
    print(json.dumps({
        "benchmark": "input_pipeline", "path": name, "train": not args.eval, "videos": args.videos,
        "mean_raw_frames": args.frames, "spread": args.spread, "files": args.files or None, "dim": args.dim,
        "batch": args.batch, "sample_rate": args.sample_rate,
        "buckets": len(buckets), "step_ms": args.step_ms, "epochs": args.epochs, "batches": count,
        "repeats": args.repeats, "seconds": round(seconds, 4), "batches_per_s": round(count / seconds, 2),
        "median_batches_per_s": round(count / median_seconds, 2),
        "videos_per_s": round(count * args.batch / seconds, 1),
        "frames_per_s": round(frames / seconds, 1), "feature_mb_per_s": round(nbytes / seconds / 2**20, 1),
        "host_cpus": os.cpu_count(), "devices": f"{jax.device_count()}x{jax.devices()[0].platform}",
    }), flush=True)


if __name__ == "__main__":
  main()
