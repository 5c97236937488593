"""HAAN's network and its visual-concept hierarchy: k-means on device, concept pooling and composition.

Spec: ../shared/specs/haan.md, sections 2 (architecture), 2.2-2.3 (concepts and composition), 4 and 10.10 (k-means)
and 11 (JAX notes). Paper: Li, He & Xu, "Weakly-Supervised Temporal Action Detection for Fine-Grained Videos with
Hierarchical Atomic Actions", ECCV 2022, Eqs. 4-6 and 8.

* `HaanNetwork`: the four two-layer blocks of HAAN's official code (encoder E, fine classifier S, visual-concept
  classifier F, coarse head S') and, given pseudo-labels, the concept hierarchy clip -> concept -> fine -> coarse.
* Concepts, per video (vmapped over the batch by the network): `visual_concepts` (Eq. 4, a masked segment mean),
  `compose_fine` (Eqs. 5-6: top-k concepts nearest to each class prototype, averaged) and `compose_coarse` (Eq. 8).
* k-means (the pseudo-labels' source, replacing scikit-learn on the host): `kmeans_fit` (greedy k-means++ seeding,
  Lloyd iterations under `lax.while_loop`, restarts under `lax.map`) and `kmeans_assign` (blocked arg-min).

Everything here is jittable with static shapes; padding is handled with masks and a "void" concept id N.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hal_jax.models import dropout as dropout_lib
from hal_jax.models import pyramid_transformer

# PyTorch's F.cosine_similarity epsilon (spec §2.2): cos = a·b / max(‖a‖‖b‖, 1e-8).
COSINE_EPS = 1e-8
COSINE, EUCLIDEAN = "cosine", "euclidean"
MAX, MEAN = "max", "mean"
# Distances inside k-means are exact float32 matmuls even on accelerators whose default f32 matmul is reduced
# precision: ‖x‖² − 2x·c + ‖c‖² cancels badly otherwise.
_DISTANCE_PRECISION = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------------------------------------------
# The network.


class Block(nn.Module):
  """HAAN's module: Linear -> ReLU -> Dropout -> Linear, returning the hidden activation too (spec §2).

  Both layers have biases and PyTorch's `nn.Linear` default initialisation, U(±1/sqrt(fan_in)) (spec §10.12).

  Attributes:
    hidden_dim: width of the hidden layer.
    out_dim: width of the output (no activation).
    dropout_rate: dropout after the ReLU, training only.
  """
  hidden_dim: int
  out_dim: int
  dropout_rate: float

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    """Applies the block.

    Args:
      x: [..., in_dim].
      deterministic: no dropout when True; otherwise draws from the 'dropout' rng stream.

    Returns:
      hidden [..., hidden_dim] (after ReLU and dropout) and output [..., out_dim].
    """
    hidden = nn.Dense(self.hidden_dim, kernel_init=pyramid_transformer.pytorch_default_kernel_init,
                      bias_init=pyramid_transformer.pytorch_default_bias_init(x.shape[-1]), name="hidden")(x)
    hidden = dropout_lib.Dropout(self.dropout_rate)(nn.relu(hidden), deterministic=deterministic)
    out = nn.Dense(self.out_dim, kernel_init=pyramid_transformer.pytorch_default_kernel_init,
                   bias_init=pyramid_transformer.pytorch_default_bias_init(self.hidden_dim), name="out")(hidden)
    return hidden, out


class HaanOutputs(NamedTuple):
  """What `HaanNetwork` returns (B videos, T clips, C fine classes, U coarse classes, N concepts, H hidden).

  Attributes:
    encoded: [B, T, H] h = E(φ), the features k-means clusters.
    clip_features: [B, T, H] x, the hidden layer of S: the features pooled into visual concepts.
    clip_logits: [B, T, C] s, the fine clip logits.
    concept_logits: [B, T, N] p̂ = F(h), the pseudo-label (cluster) logits.
    prototypes: [C, H] w, the last-layer weight of S (class prototypes).
    fine_concepts: [B, C, H] e, composed fine representations (None without pseudo-labels).
    coarse_logits: [B, U] g = S'(e'), one logit per coarse class (None without pseudo-labels).
  """
  encoded: jax.Array
  clip_features: jax.Array
  clip_logits: jax.Array
  concept_logits: jax.Array
  prototypes: jax.Array
  fine_concepts: jax.Array | None
  coarse_logits: jax.Array | None


class HaanNetwork(nn.Module):
  """HAAN's networks (spec §2, following the official code where it differs from the paper).

  Attributes:
    num_classes: C fine classes.
    num_concepts: N visual concepts (k-means clusters).
    hidden_dim: H, the encoder's width and every block's hidden width.
    dropout_rate: p of every block.
    top_k: concepts composed per fine class (k).
    distance: "cosine" (the paper) or "euclidean" (its Table 4 ablation) between prototypes and concepts.
    coarse_pooling: "max" (FineAction) or "mean" (FineGym) over the fine classes of a coarse class.
  """
  num_classes: int
  num_concepts: int
  hidden_dim: int
  dropout_rate: float
  top_k: int = 5
  distance: str = COSINE
  coarse_pooling: str = MEAN

  def setup(self):
    h = self.hidden_dim
    self.encoder = Block(h, h, self.dropout_rate)
    self.fine = Block(h, self.num_classes, self.dropout_rate)
    self.concept = Block(h, self.num_concepts, self.dropout_rate)
    self.coarse = Block(h, 1, self.dropout_rate)  # One binary head shared by the U coarse representations.

  def encode(self, features: jax.Array) -> jax.Array:
    """h = E(φ) without dropout, for re-clustering: [..., D] -> [..., H]."""
    return self.encoder(features, True)[1]

  def __call__(self, features: jax.Array, pseudo_labels: jax.Array | None = None,
               membership: jax.Array | None = None, *, deterministic: bool = True) -> HaanOutputs:
    """Runs the clip networks and, given pseudo-labels, the concept hierarchy.

    Args:
      features: [B, T, D] clip features φ (padding clips may hold anything: they are masked through the labels).
      pseudo_labels: [B, T] int32 cluster ids in [0, N]; N marks padding (a "void" concept that never pools).
      membership: [U, C] {0, 1}, row u marks the fine classes of coarse class u (needed with `pseudo_labels`).
      deterministic: no dropout when True; otherwise draws from the 'dropout' rng stream.
    """
    encoded = self.encoder(features, deterministic)[1]
    clip_features, clip_logits = self.fine(encoded, deterministic)
    concept_logits = self.concept(encoded, deterministic)[1]
    prototypes = self.fine.variables["params"]["out"]["kernel"].T  # [C, H]
    fine_concepts = coarse_logits = None
    if pseudo_labels is not None:
      concepts = jax.vmap(visual_concepts, in_axes=(0, 0, None))(clip_features, pseudo_labels, self.num_concepts)
      fine_concepts = jax.vmap(compose_fine, in_axes=(None, 0, None, None))(
          prototypes, concepts, self.top_k, self.distance)
      coarse = jax.vmap(compose_coarse, in_axes=(0, None, None))(fine_concepts, membership, self.coarse_pooling)
      coarse_logits = self.coarse(coarse, deterministic)[1][..., 0]
    return HaanOutputs(encoded, clip_features, clip_logits, concept_logits, prototypes, fine_concepts, coarse_logits)


# ----------------------------------------------------------------------------------------------------------------------
# Visual concepts and their composition (one video; the network vmaps them).


def _dot_last(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.sum(a * b, axis=-1)


def cosine_similarity(a: jax.Array, b: jax.Array, eps: float = COSINE_EPS) -> jax.Array:
  """a·b / max(‖a‖‖b‖, eps) over the last axis, broadcasting (PyTorch's F.cosine_similarity).

  Written with one square root of the clamped product so that a zero vector gives similarity 0 and finite gradients
  (jnp.linalg.norm has a NaN gradient at 0).
  """
  squared = _dot_last(a, a) * _dot_last(b, b)
  return _dot_last(a, b) * jax.lax.rsqrt(jnp.maximum(squared, eps * eps))


def euclidean_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """‖a − b‖ over the last axis, broadcasting, with a zero (not NaN) gradient at a = b."""
  diff = a - b
  squared = _dot_last(diff, diff)
  safe = jnp.where(squared > 0, squared, 1.0)
  return jnp.where(squared > 0, jnp.sqrt(safe), 0.0)


def visual_concepts(clip_features: jax.Array, labels: jax.Array, num_concepts: int) -> jax.Array:
  """Visual concepts of one video (paper Eq. 4): the mean clip feature of each cluster, 0 for absent clusters.

  Args:
    clip_features: [T, H] x.
    labels: [T] int32 pseudo-labels in [0, N]; N (padding) pools nowhere.
    num_concepts: N.

  Returns:
    [N, H] v. A segment sum, not a one-hot matmul: O(T·H) instead of O(T·N·H).
  """
  sums = jax.ops.segment_sum(clip_features, labels, num_segments=num_concepts + 1)[:num_concepts]
  counts = jax.ops.segment_sum(jnp.ones_like(labels, clip_features.dtype), labels,
                               num_segments=num_concepts + 1)[:num_concepts]
  return sums / jnp.maximum(counts, 1.0)[:, None]


def concept_similarity(prototypes: jax.Array, concepts: jax.Array, distance: str = COSINE) -> jax.Array:
  """How close each concept is to each class prototype, larger = closer (paper Eq. 5).

  Args:
    prototypes: [C, H] w.
    concepts: [N, H] v.
    distance: "cosine" (similarity σ) or "euclidean" (negated squared distance).

  Returns:
    [C, N].
  """
  if distance == COSINE:
    norms_p = jnp.sum(prototypes * prototypes, axis=-1)
    norms_c = jnp.sum(concepts * concepts, axis=-1)
    dots = prototypes @ concepts.T
    return dots * jax.lax.rsqrt(jnp.maximum(norms_p[:, None] * norms_c[None, :], COSINE_EPS * COSINE_EPS))
  if distance == EUCLIDEAN:
    # Negated squared distance: the same ranking as the distance, without a [C, N, H] difference tensor.
    return -squared_distances(prototypes, concepts)
  raise ValueError(f"distance must be {COSINE!r} or {EUCLIDEAN!r}, got {distance!r}")


def compose_fine(prototypes: jax.Array, concepts: jax.Array, top_k: int, distance: str = COSINE) -> jax.Array:
  """Fine representations of one video (paper Eq. 6): e^j = mean of the k concepts nearest to prototype j.

  The selection is under stop-gradient (neither w nor v gets a gradient from the ranking); the mean lets gradients
  into the selected concepts. Absent (zero) concepts are selectable, as in the official code (spec §10.6). Every
  class gets a representation, present in the video or not.

  Args:
    prototypes: [C, H] w.
    concepts: [N, H] v.
    top_k: k.
    distance: see `concept_similarity`.

  Returns:
    [C, H] e.
  """
  similarity = concept_similarity(jax.lax.stop_gradient(prototypes), jax.lax.stop_gradient(concepts), distance)
  _, nearest = jax.lax.top_k(similarity, top_k)  # [C, k]
  return jnp.mean(concepts[nearest], axis=1)


def compose_coarse(fine_concepts: jax.Array, membership: jax.Array, pooling: str = MEAN) -> jax.Array:
  """Coarse representations of one video (paper Eq. 8): pool e^j over the fine classes j of each coarse class.

  Args:
    fine_concepts: [C, H] e.
    membership: [U, C] {0, 1}; every coarse class has at least one fine class.
    pooling: "max" (element-wise) or "mean".

  Returns:
    [U, H] e'.
  """
  member = membership > 0
  if pooling == MAX:
    return jnp.max(jnp.where(member[:, :, None], fine_concepts[None], -jnp.inf), axis=1)
  if pooling == MEAN:
    weights = member.astype(fine_concepts.dtype)
    return (weights @ fine_concepts) / jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1.0)
  raise ValueError(f"coarse pooling must be {MAX!r} or {MEAN!r}, got {pooling!r}")


def membership_matrix(fine_to_coarse: np.ndarray | list[int]) -> np.ndarray:
  """[U, C] float32 {0, 1} from the coarse id of each fine class ([C] ints, coarse ids 0..U-1)."""
  fine_to_coarse = np.asarray(fine_to_coarse, np.int64)
  return (np.arange(int(fine_to_coarse.max()) + 1)[:, None] == fine_to_coarse[None, :]).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# k-means on device.


class KMeansResult(NamedTuple):
  """A k-means fit.

  Attributes:
    centroids: [K, H].
    inertia: [] sum of squared distances of the fitted points to their nearest centroid.
    iterations: [] int32 Lloyd iterations of the kept restart.
    restart_inertia: [R] the final inertia of every restart.
  """
  centroids: jax.Array
  inertia: jax.Array
  iterations: jax.Array
  restart_inertia: jax.Array


def squared_distances(x: jax.Array, centroids: jax.Array, x_squared: jax.Array | None = None) -> jax.Array:
  """[M, K] ‖x − c‖² as ‖x‖² − 2x·c + ‖c‖² (one matmul), clamped at 0 against rounding.

  Args:
    x: [M, H].
    centroids: [K, H].
    x_squared: [M] ‖x‖², when already known.
  """
  if x_squared is None:
    x_squared = jnp.sum(x * x, axis=-1)
  cross = jnp.matmul(x, centroids.T, precision=_DISTANCE_PRECISION)
  return jnp.maximum(x_squared[:, None] - 2.0 * cross + jnp.sum(centroids * centroids, axis=-1)[None, :], 0.0)


def default_num_candidates(num_clusters: int) -> int:
  """Candidates per greedy k-means++ step, 2 + ⌊ln K⌋ (Arthur & Vassilvitskii 2007; scikit-learn's choice)."""
  return 2 + int(math.log(num_clusters))


def kmeans_plusplus(key: jax.Array, x: jax.Array, num_clusters: int, num_candidates: int | None = None,
                    sketch_dim: int = 0) -> jax.Array:
  """Greedy k-means++ seeding: indices of K points of `x`, distinct while x has K distinct points (D² sampling).

  Step t draws `num_candidates` points with probability proportional to their squared distance to the nearest
  centre so far and keeps the one that lowers the potential Σ min d² most (scikit-learn's `_kmeans_plusplus`).

  Each step reads all of x once for only a few candidates, so it is memory-bound; `sketch_dim` > 0 measures the
  seeding distances in a Gaussian random projection of that width (Johnson-Lindenstrauss: squared distances are
  kept in expectation), which makes the K sequential steps cheap on a CPU. 0 = exact distances.

  Args:
    key: PRNG key.
    x: [M, H] points, M >= K.
    num_clusters: K.
    num_candidates: candidates per step (default `default_num_candidates(K)`).
    sketch_dim: width of the random projection used for the seeding distances; 0 (or >= H) = none.

  Returns:
    [K] int32 row indices of x.
  """
  num_points = x.shape[0]
  num_candidates = num_candidates or default_num_candidates(num_clusters)
  key_first, key_sketch, key_steps = jax.random.split(key, 3)
  if 0 < sketch_dim < x.shape[1]:
    projection = jax.random.normal(key_sketch, (x.shape[1], sketch_dim), x.dtype) / math.sqrt(sketch_dim)
    x = jnp.matmul(x, projection, precision=_DISTANCE_PRECISION)
  x_squared = jnp.sum(x * x, axis=-1)
  first = jax.random.randint(key_first, (), 0, num_points)
  closest = squared_distances(x, x[first][None], x_squared)[:, 0]
  indices = jnp.zeros([num_clusters], jnp.int32).at[0].set(first)

  def step(t, carry):
    closest, indices = carry
    cumulative = jnp.cumsum(closest)
    draws = jax.random.uniform(jax.random.fold_in(key_steps, t), (num_candidates,)) * cumulative[-1]
    candidates = jnp.minimum(jnp.searchsorted(cumulative, draws), num_points - 1)
    trial = jnp.minimum(closest[None, :], squared_distances(x, x[candidates], x_squared).T)  # [L, M]
    best = jnp.argmin(jnp.sum(trial, axis=1))
    return trial[best], indices.at[t].set(candidates[best])

  _, indices = jax.lax.fori_loop(1, num_clusters, step, (closest, indices))
  return indices


def _nearest(x: jax.Array, centroids: jax.Array, x_squared: jax.Array) -> tuple[jax.Array, jax.Array]:
  distances = squared_distances(x, centroids, x_squared)
  labels = jnp.argmin(distances, axis=1).astype(jnp.int32)
  return labels, jnp.take_along_axis(distances, labels[:, None], axis=1)[:, 0]


def lloyd(x: jax.Array, centroids: jax.Array, max_iterations: int,
          tolerance: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Lloyd iterations from `centroids` until convergence (scikit-learn's `_kmeans_single_lloyd` criteria).

  Stops when the labels no longer change, when the summed squared centre shift is <= `tolerance` × the mean
  per-dimension variance of x, or after `max_iterations`. A cluster left empty is re-seeded with the point farthest
  from its centre (the e-th empty cluster gets the e-th farthest point), as scikit-learn relocates empty clusters.

  Args:
    x: [M, H].
    centroids: [K, H] initial centres.
    max_iterations: at most this many iterations.
    tolerance: relative tolerance on the centre shift.

  Returns:
    centroids [K, H], inertia [] (with the final centroids) and the iteration count [] int32.
  """
  num_clusters = centroids.shape[0]
  x_squared = jnp.sum(x * x, axis=-1)
  absolute_tolerance = tolerance * jnp.mean(jnp.var(x, axis=0))
  ones = jnp.ones([x.shape[0]], x.dtype)

  def body(carry):
    centroids, previous, iteration, _ = carry
    labels, distances = _nearest(x, centroids, x_squared)
    sums = jax.ops.segment_sum(x, labels, num_segments=num_clusters)
    counts = jax.ops.segment_sum(ones, labels, num_segments=num_clusters)
    empty = counts == 0
    farthest = jax.lax.top_k(distances, min(num_clusters, x.shape[0]))[1]
    relocated = x[farthest[jnp.clip(jnp.cumsum(empty) - 1, 0, farthest.shape[0] - 1)]]
    updated = jnp.where(empty[:, None], relocated, sums / jnp.maximum(counts, 1.0)[:, None])
    shift = jnp.sum((updated - centroids) ** 2)
    converged = jnp.all(labels == previous) | (shift <= absolute_tolerance)
    return updated, labels, iteration + 1, converged

  def cond(carry):
    _, _, iteration, converged = carry
    return (iteration < max_iterations) & ~converged

  start = (centroids, jnp.full([x.shape[0]], -1, jnp.int32), jnp.zeros([], jnp.int32), jnp.zeros([], bool))
  centroids, _, iterations, _ = jax.lax.while_loop(cond, body, start)
  _, distances = _nearest(x, centroids, x_squared)
  return centroids, jnp.sum(distances), iterations


@functools.partial(jax.jit, static_argnames=("num_clusters", "restarts", "max_iterations", "num_candidates",
                                             "sketch_dim"))
def kmeans_fit(key: jax.Array, x: jax.Array, num_clusters: int, *, restarts: int = 10, max_iterations: int = 300,
               tolerance: float = 1e-4, num_candidates: int | None = None, sketch_dim: int = 0) -> KMeansResult:
  """k-means on device: `restarts` runs of greedy k-means++ + Lloyd, keeping the lowest inertia (spec §10.10).

  The restarts run one after another (`lax.map`), so memory does not grow with their number. Deterministic given
  `key`. Not bit-identical to scikit-learn (other random streams), but the same algorithm and stopping rules.

  Args:
    key: PRNG key.
    x: [M, H] points (M >= K).
    num_clusters: K.
    restarts: independent seedings (scikit-learn 0.24's n_init = 10; >= 1.4 uses 1).
    max_iterations: Lloyd iterations per restart at most.
    tolerance: relative centre-shift tolerance (see `lloyd`); 0 runs exactly `max_iterations` unless labels settle.
    num_candidates: k-means++ candidates per step (default 2 + ⌊ln K⌋).
    sketch_dim: see `kmeans_plusplus`.
  """
  if x.shape[0] < num_clusters:
    raise ValueError(f"k-means needs at least as many points as clusters, got {x.shape[0]} < {num_clusters}")

  def one_restart(restart_key):
    seeds = kmeans_plusplus(restart_key, x, num_clusters, num_candidates, sketch_dim)
    return lloyd(x, x[seeds], max_iterations, tolerance)

  centroids, inertia, iterations = jax.lax.map(one_restart, jax.random.split(key, restarts))
  best = jnp.argmin(inertia)
  return KMeansResult(centroids[best], inertia[best], iterations[best], inertia)


@functools.partial(jax.jit, static_argnames=("block_size",))
def kmeans_assign(x: jax.Array, centroids: jax.Array, block_size: int = 16384) -> tuple[jax.Array, jax.Array]:
  """Nearest centroid of every point, in blocks of `block_size` rows (bounded [block, K] distance buffers).

  Args:
    x: [M, H].
    centroids: [K, H].

  Returns:
    labels [M] int32 and squared distances [M].
  """
  num_points = x.shape[0]
  block_size = min(block_size, num_points)
  num_blocks = -(-num_points // block_size)
  padded = jnp.pad(x, ((0, num_blocks * block_size - num_points), (0, 0)))

  def one_block(block):
    return _nearest(block, centroids, jnp.sum(block * block, axis=-1))

  labels, distances = jax.lax.map(one_block, padded.reshape(num_blocks, block_size, -1))
  return labels.reshape(-1)[:num_points], distances.reshape(-1)[:num_points]
