"""HAAN's concept refresh against scikit-learn KMeans at the official code's FineGym sizes; one JSON line per part.

  python benchmarks/kmeans.py                                   # both parts, FineGym sizes, n_init = 1
  python benchmarks/kmeans.py --part=clustering --restarts=10   # scikit-learn 0.24's n_init = 10 on both sides
  python benchmarks/kmeans.py --part=refresh --sketch_dim=128   # k-means++ seeding in a 128-d projection

Sizes (../shared/bench/official_cpu.md, measured with ../shared/bench/peer_haan_step.py): 3,775 training videos of
20-140 clips (mean 80, ≈ 302,000 clips), 2048-d I3D features, H = 2048, a 10% sample (≈ 30,200 clips), 500
clusters. The clip features are built exactly as that harness builds them: four random batches of 2 × 309 clips
reused round-robin (video v takes the first T_v clips of row v mod 2 of batch (v // 2) mod 4), so both sides see
the same data. Our features are produced lazily, chunk by chunk, like the harness's loader (no 2.5 GB array).

Parts:
* refresh: the whole `Haan.refresh` (encoder on the sample, k-means on device, encoder + nearest centroid on every
  clip), twice: the first call includes compilation, the second is the steady state of a training run (the refresh
  runs every 5 epochs with the same shapes). Peak RSS is read right after. Officially: 241 s (n_init = 1; 808 s with
  10), 21.4 GB peak, of which 173 s is the encoder pass over every padded video.
* clustering: k-means fit on the sample + assignment of every clip, on the same encoder outputs (computed once,
  stored as a [N, 2048] array for both sides): hal_jax.models.concepts (warm, i.e. compiled before timing) against
  scikit-learn `KMeans(n_clusters, random_state=0, n_init, algorithm="lloyd")` limited to the same number of threads
  (`--threads`, default all cores). Officially: 68 s (fit 63 s + predict 4.5 s) at n_init = 1. scikit-learn is the
  `bench` extra: ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from hal_jax.methods import haan
from hal_jax.models import concepts

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # The repo root, for configs/.
from configs import haan as haan_configs  # pylint: disable=wrong-import-position


class PooledClips:
  """The harness's clip features as a lazy [N, D] array: row i is `pool[row_of_clip[i]]` (see the module docstring).

  Supports what `Haan.refresh` reads: `.shape`, `x[a:b]` and `x[int_array]`.
  """

  def __init__(self, pool: np.ndarray, row_of_clip: np.ndarray):
    self.pool = pool
    self.row_of_clip = row_of_clip
    self.shape = (len(row_of_clip), pool.shape[1])

  def __getitem__(self, index):
    return self.pool[self.row_of_clip[index]]


def harness_clips(args) -> tuple[PooledClips, np.ndarray]:
  """Features and lengths drawn in the same order and with the same seed as peer_haan_step.py's refresh loader."""
  rng = np.random.default_rng(args.seed)
  pool = [rng.standard_normal((2, args.pad_len, args.feature_dim), dtype=np.float32) for _ in range(4)]
  low, high = max(1, int(args.avg_len * 0.25)), min(args.pad_len, int(args.avg_len * 1.75))
  lengths = rng.integers(low, high + 1, size=args.videos).astype(np.int64)
  video = np.repeat(np.arange(args.videos), lengths)
  clip = np.arange(len(video)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  row_of_clip = (((video // 2) % 4) * 2 + video % 2) * args.pad_len + clip
  return PooledClips(np.concatenate(pool).reshape(-1, args.feature_dim), row_of_clip), lengths


def peak_rss_mb() -> float:
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def make_method(args):
  config = haan_configs.get_config("finegym")
  with config.unlocked():
    config.update(dict(feature_dim=args.feature_dim, train_length=args.pad_len, num_concepts=args.clusters,
                       cluster_sample_rate=args.sample_rate, kmeans_restarts=args.restarts,
                       kmeans_sketch_dim=args.sketch_dim, refresh_chunk_size=args.chunk))
  return haan.make_method(config, tuple(f"class{j}" for j in range(99)))


def run_refresh(args, method, params, features: PooledClips, lengths: np.ndarray) -> dict:
  labels = np.zeros([len(lengths), 99], np.float32)
  clips = haan.TrainingClips(features=features, lengths=lengths, video_labels=labels,
                             fine_to_coarse=np.arange(99) * 14 // 99)
  state = method.init_state(clips)
  runs = []
  for run in range(2):
    started = time.perf_counter()
    new_state, info = method.refresh(params, state, clips, jax.random.key(run))
    new_state.pseudo_labels.block_until_ready()
    runs.append(dict(seconds_total=round(time.perf_counter() - started, 2),
                     **{k: round(v, 4) if isinstance(v, float) else v for k, v in info.items()}))
  return {"part": "refresh", "cold_with_compile": runs[0], "warm": runs[1], "peak_rss_mb": peak_rss_mb()}


def run_clustering(args, method, params, features: PooledClips) -> dict:
  """Our k-means fit + assignment against scikit-learn's on the same encoder outputs."""
  encode = jax.jit(lambda p, x: method.model.apply({"params": p}, x, method=concepts.HaanNetwork.encode))
  encoded_pool = np.asarray(encode(params, jnp.asarray(features.pool)))
  encoded = encoded_pool[features.row_of_clip]  # [N, H], the same array for both sides.
  del encoded_pool
  total = len(encoded)
  sample_size = int(math.floor(args.sample_rate * total))
  sample = encoded[np.sort(np.random.default_rng(args.seed).choice(total, sample_size, replace=False))]

  def ours() -> tuple[float, float, float, int, np.ndarray]:
    started = time.perf_counter()
    fit = concepts.kmeans_fit(jax.random.key(0), jnp.asarray(sample), args.clusters, restarts=args.restarts,
                              sketch_dim=args.sketch_dim)
    fit.centroids.block_until_ready()
    fitted = time.perf_counter()
    labels = [concepts.kmeans_assign(jnp.asarray(encoded[a:a + args.chunk]), fit.centroids, block_size=args.chunk)[0]
              for a in range(0, total, args.chunk)]
    labels = np.concatenate(jax.device_get(labels))
    return fitted - started, time.perf_counter() - fitted, float(fit.inertia), int(fit.iterations), labels

  ours()  # Compiles every shape used below (the last chunk is shorter: its own compile) - not timed.
  fit_s, assign_s, inertia, iterations, labels = ours()
  result = {
      "part": "clustering", "n_clips": total, "n_sample": sample_size, "n_clusters": args.clusters,
      "restarts": args.restarts, "sketch_dim": args.sketch_dim,
      "ours_s_fit": round(fit_s, 2), "ours_s_assign_all": round(assign_s, 2),
      "ours_s_total": round(fit_s + assign_s, 2),
      "ours_iterations": iterations, "ours_inertia_per_sample": round(inertia / sample_size, 4),
      "clusters_used_ours": int(len(np.unique(labels))),
  }
  if not args.sklearn:
    return {**result, "peak_rss_mb": peak_rss_mb()}
  from sklearn.cluster import KMeans  # pylint: disable=import-outside-toplevel
  import sklearn  # pylint: disable=import-outside-toplevel
  from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel
  with threadpool_limits(limits=args.threads):
    started = time.perf_counter()
    reference = KMeans(n_clusters=args.clusters, random_state=0, n_init=args.restarts, algorithm="lloyd").fit(sample)
    fitted = time.perf_counter()
    reference_labels = reference.predict(encoded)
    predicted = time.perf_counter()
  sk_fit, sk_predict = fitted - started, predicted - fitted
  return {
      **result, "sklearn_s_fit": round(sk_fit, 2), "sklearn_s_predict_all": round(sk_predict, 2),
      "sklearn_s_total": round(sk_fit + sk_predict, 2), "sklearn_iterations": int(reference.n_iter_),
      "sklearn_inertia_per_sample": round(float(reference.inertia_) / sample_size, 4),
      "speedup_total": round((sk_fit + sk_predict) / (fit_s + assign_s), 2),
      "clusters_used_sklearn": int(len(np.unique(reference_labels))),
      "sklearn": sklearn.__version__, "threads": args.threads, "peak_rss_mb": peak_rss_mb(),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", choices=["refresh", "clustering", "all"], default="all")
  parser.add_argument("--videos", type=int, default=3775)
  parser.add_argument("--avg_len", type=int, default=80)
  parser.add_argument("--pad_len", type=int, default=309)
  parser.add_argument("--feature_dim", type=int, default=2048)
  parser.add_argument("--clusters", type=int, default=500)
  parser.add_argument("--sample_rate", type=float, default=0.1)
  parser.add_argument("--restarts", type=int, default=1, help="n_init on both sides (official measurement: 1)")
  parser.add_argument("--sketch_dim", type=int, default=0, help="k-means++ seeding projection; 0 = exact")
  parser.add_argument("--chunk", type=int, default=8192, help="clips per device call")
  parser.add_argument("--threads", type=int, default=os.cpu_count(), help="scikit-learn's BLAS / OpenMP threads")
  parser.add_argument("--sklearn", type=int, default=1, help="0: time only our clustering")
  parser.add_argument("--seed", type=int, default=1, help="the harness's seed")
  args = parser.parse_args()

  features, lengths = harness_clips(args)
  method = make_method(args)
  dummy = {"features": jnp.zeros([2, args.pad_len, args.feature_dim], jnp.float32)}
  params = jax.jit(method.init)(jax.random.key(args.seed), dummy)
  common = {"benchmark": "haan_kmeans", "n_videos": args.videos, "n_clips": int(lengths.sum()),
            "backend": jax.default_backend(), "jax": jax.__version__, "cpu_count": os.cpu_count()}
  if args.part in ("refresh", "all"):  # First: its peak RSS must not include the clustering part's arrays.
    load = os.getloadavg()
    result = run_refresh(args, method, params, features, lengths)
    print(json.dumps({**common, **result, "restarts": args.restarts, "sketch_dim": args.sketch_dim,
                      "loadavg": [round(x, 2) for x in load + os.getloadavg()]}), flush=True)
  if args.part in ("clustering", "all"):
    load = os.getloadavg()
    result = run_clustering(args, method, params, features)
    print(json.dumps({**common, **result, "loadavg": [round(x, 2) for x in load + os.getloadavg()]}), flush=True)


if __name__ == "__main__":
  main()
