"""Times the jitted batch ATBA alignment (hal_jax.alignment.atba.pseudo_labels_batch); prints one JSON line.

  python benchmarks/alignment.py                      # batch 8, T = 512 downsampled frames, C = 48, M in [8, 12]
  python benchmarks/alignment.py --batch=32 --frames=1024

Inputs are noisy piecewise-constant logits (a random segmentation per video, valid lengths between 3T/4 and T),
so the NMS and the DP run on realistic score landscapes; the cost does not depend on the values, only on the shapes.
ATBA's official per-video PyTorch implementation takes about 160 ms for a batch of 8 at T = 512 on a CPU.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from hal_jax.alignment import atba


def make_batch(rng: np.random.Generator, batch: int, frames: int, classes: int, min_transcript: int,
               max_transcript: int) -> tuple[np.ndarray, ...]:
  """logits [B, T, C] float32, num_frames [B], transcript [B, M_max] (-1 padded), transcript_len [B]."""
  logits = rng.normal(size=(batch, frames, classes)).astype(np.float32)
  num_frames = rng.integers(3 * frames // 4, frames + 1, batch).astype(np.int32)
  transcript_len = rng.integers(min_transcript, max_transcript + 1, batch).astype(np.int32)
  transcript = np.full((batch, max_transcript), -1, np.int32)
  for i in range(batch):
    labels = [int(rng.integers(classes))]
    while len(labels) < transcript_len[i]:
      labels.append(int((labels[-1] + rng.integers(1, classes)) % classes))  # no consecutive repeats
    transcript[i, :transcript_len[i]] = labels
    cuts = np.sort(rng.choice(np.arange(1, num_frames[i]), transcript_len[i] - 1, replace=False))
    lengths = np.diff(np.concatenate([[0], cuts, [num_frames[i]]]))
    logits[i, :num_frames[i]] += 3.0 * np.eye(classes, dtype=np.float32)[np.repeat(labels, lengths)]
  return logits, num_frames, transcript, transcript_len


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--frames", type=int, default=512)
  parser.add_argument("--classes", type=int, default=48)
  parser.add_argument("--min_transcript", type=int, default=8)
  parser.add_argument("--max_transcript", type=int, default=12)
  parser.add_argument("--repeats", type=int, default=50)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  host_batch = make_batch(np.random.default_rng(args.seed), args.batch, args.frames, args.classes,
                          args.min_transcript, args.max_transcript)
  device_batch = [jnp.asarray(x) for x in host_batch]
  start = time.perf_counter()
  atba.pseudo_labels_batch(*device_batch).block_until_ready()
  compile_ms = (time.perf_counter() - start) * 1e3
  times = []
  cpu_start = time.process_time()
  for _ in range(args.repeats):
    start = time.perf_counter()
    atba.pseudo_labels_batch(*device_batch).block_until_ready()
    times.append((time.perf_counter() - start) * 1e3)
  # CPU seconds of all of this process's threads: less sensitive than wall time to other jobs on a shared machine.
  cpu_ms = (time.process_time() - cpu_start) * 1e3 / args.repeats
  print(json.dumps({
      "benchmark": "atba_alignment",
      "ms_alignment_median": round(float(np.median(times)), 3),
      "ms_alignment_min": round(float(np.min(times)), 3),
      "ms_process_cpu_per_call": round(cpu_ms, 3),
      "ms_first_call_with_compile": round(compile_ms, 1),
      "batch": args.batch,
      "frames": args.frames,
      "classes": args.classes,
      "max_transcript": args.max_transcript,
      "transcript_lens": host_batch[3].tolist(),
      "num_frames": host_batch[1].tolist(),
      "repeats": args.repeats,
      "backend": jax.default_backend(),
      "device": str(jax.devices()[0].device_kind),
      "jax": jax.__version__,
  }))


if __name__ == "__main__":
  main()
