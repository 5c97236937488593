"""Peak memory against dataset size when training data is read lazily (issue 17); one JSON line per measurement.

For each size in `--videos` it writes a synthetic MS-TCN directory (random features, `--frames` raw frames of
`--dim` dims per video, `--layout` "DT" as MS-TCN's files or "TD"), drops the set from the page cache
(``posix_fadvise(DONTNEED)`` on its own files, so the first pass reads the disk), and runs a fresh process that

1. loads the split (`load_mstcn_split`: the streaming validation pass over every file: ``validate_mb_per_s``),
2. builds the training pipeline and builds every batch of `--epochs` epochs with NumPy (`SegmentationPipeline.batch`,
   no tf.data), gathering frames from the files (``batches_per_s``; ``read_mb_per_s``: the set's bytes per second
   over the epochs, what a "DT" gather touches, while a "TD" gather reads only the kept rows; ``kept_mb_per_s``:
   batch feature bytes per second),

and reports its peak resident set (``peak_rss_mb``, VmHWM) and the growth over the process before loading
(``rss_growth_mb``). ``--eager`` also runs each size with the whole split read into memory first (as before issue 17),
for comparison. ``--cap_mb`` limits the child's data segment (RLIMIT_DATA) to what it holds before loading plus the
cap, so a reader that held the set would fail.

  python benchmarks/dataset_memory.py --videos=16,64,256 --frames=5000 --dim=2048 --layout=DT --eager
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hal_jax.data import formats  # pylint: disable=g-import-not-at-top,wrong-import-position
from hal_jax.data import segmentation_formats  # pylint: disable=g-import-not-at-top,wrong-import-position

_CLASSES = 8


def write_set(root: str, videos: int, frames: int, dim: int, layout: str, seed: int = 0) -> int:
  """Writes an MS-TCN directory of `videos` random videos of `frames` frames, one at a time; returns its bytes."""
  rng = np.random.default_rng(seed)
  label_map = formats.LabelMap(tuple(f"c{c}" for c in range(_CLASSES)))
  formats.write_mapping(os.path.join(root, "mapping.txt"), label_map)
  names, total = [f"video_{i}" for i in range(videos)], 0
  for name in names:
    runs = rng.integers(0, _CLASSES, 8)  # Eight actions per video.
    labels = [label_map.names[runs[8 * t // frames]] for t in range(frames)]
    features = rng.standard_normal((frames, dim), dtype=np.float32)
    segmentation_formats.write_mstcn_video(root, name, features, labels, layout=layout)
    total += os.path.getsize(os.path.join(root, "features", f"{name}.npy"))
  formats.write_split_list(segmentation_formats.split_path(root, "train", 1), names)
  return total


def drop_from_page_cache(root: str) -> None:
  """Asks the kernel to drop this set's feature files from the page cache (only these files)."""
  directory = os.path.join(root, "features")
  for name in os.listdir(directory):
    fd = os.open(os.path.join(directory, name), os.O_RDONLY)
    try:
      os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
      os.close(fd)


def _status_kb(field: str) -> int:
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise KeyError(field)


def child(args: argparse.Namespace) -> dict:
  """Loads and iterates the set at `args.root` in this process; returns the measurement."""
  from hal_jax.data import segmentation_pipeline  # pylint: disable=g-import-not-at-top
  before_kb = _status_kb("VmRSS")
  if args.cap_mb:
    limit = _status_kb("VmData") * 1024 + args.cap_mb * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
  with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
    f.write("5")  # Resets VmHWM: the peak below is that of loading and iterating.
  start = time.perf_counter()
  dataset = segmentation_formats.load_mstcn_split(args.root, "train", feature_layout=args.layout)
  validate_s = time.perf_counter() - start
  file_bytes = sum(os.path.getsize(v.features.path) for v in dataset.videos)
  if args.eager:
    dataset = segmentation_formats.SegmentationDataset(dataset.root, dataset.label_map, tuple(
        segmentation_formats.SegmentationVideo(v.name, np.asarray(v.features), v.labels, v.transcript)
        for v in dataset.videos))
  longest = segmentation_pipeline.longest_video(dataset, args.sample_rate)
  pipe = segmentation_pipeline.SegmentationPipeline(
      dataset, batch_size=args.batch, sample_rate=args.sample_rate, bucket_lengths=[longest],
      max_transcript=segmentation_pipeline.longest_transcript(dataset), seed=0, train=True, process_index=0,
      process_count=1, num_devices=1)
  start, kept = time.perf_counter(), 0
  for epoch in range(args.epochs):
    for index in range(pipe.num_batches_per_epoch):
      kept += pipe.batch(epoch, index)["features"].nbytes
  epoch_s = time.perf_counter() - start
  batches = args.epochs * pipe.num_batches_per_epoch
  return {
      "validate_s": round(validate_s, 3), "validate_mb_per_s": round(file_bytes / validate_s / 2**20, 1),
      "epochs_s": round(epoch_s, 3), "batches": batches, "batches_per_s": round(batches / epoch_s, 2),
      "read_mb_per_s": round(args.epochs * file_bytes / epoch_s / 2**20, 1),
      "kept_mb_per_s": round(kept / epoch_s / 2**20, 1),
      "rss_before_mb": round(before_kb / 1024, 1), "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1),
      "rss_growth_mb": round((_status_kb("VmHWM") - before_kb) / 1024, 1),
  }


def run_child(root: str, layout: str, *, batch: int, sample_rate: int, epochs: int, eager: bool = False,
              cap_mb: int = 0) -> dict:
  """`child` in a fresh process (its own peak RSS); raises CalledProcessError when it fails (e.g. over the cap)."""
  command = [sys.executable, os.path.abspath(__file__), "--child", f"--root={root}", f"--layout={layout}",
             f"--batch={batch}", f"--sample_rate={sample_rate}", f"--epochs={epochs}", f"--cap_mb={cap_mb}"]
  command += ["--eager"] if eager else []
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
  return json.loads(result.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--videos", default="16,64,256", help="comma-separated set sizes, in videos")
  parser.add_argument("--frames", type=int, default=5000, help="raw frames per video")
  parser.add_argument("--dim", type=int, default=2048)
  parser.add_argument("--layout", default="DT", choices=formats.FEATURE_LAYOUTS)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--sample_rate", type=int, default=10)
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--eager", action="store_true", help="also read each set whole into memory first")
  parser.add_argument("--cap_mb", type=int, default=0, help="RLIMIT_DATA headroom of the lazy child (0: none)")
  parser.add_argument("--dir", default=None, help="where to write the sets (default: a temporary directory)")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--root", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args)))
    return
  with tempfile.TemporaryDirectory(dir=args.dir) as workdir:
    for videos in (int(v) for v in args.videos.split(",")):
      root = os.path.join(workdir, f"set_{videos}")
      set_bytes = write_set(root, videos, args.frames, args.dim, args.layout)
      for eager in (False, True) if args.eager else (False,):
        drop_from_page_cache(root)
        result = run_child(root, args.layout, batch=args.batch, sample_rate=args.sample_rate, epochs=args.epochs,
                           eager=eager, cap_mb=0 if eager else args.cap_mb)
        print(json.dumps({"benchmark": "dataset_memory", "reader": "eager" if eager else "lazy", "videos": videos,
                          "frames": args.frames, "dim": args.dim, "layout": args.layout, "batch": args.batch,
                          "sample_rate": args.sample_rate, "set_mb": round(set_bytes / 2**20, 1), **result}),
              flush=True)
      # Free the disk before the next, larger set.
      for name in os.listdir(os.path.join(root, "features")):
        os.remove(os.path.join(root, "features", name))


if __name__ == "__main__":
  main()
