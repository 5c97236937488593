"""HAAN (Li, He & Xu, ECCV 2022): weakly-supervised fine-grained action detection with hierarchical atomic actions.

Spec: ../shared/specs/haan.md (sections 3 losses, 4 training, 5 inference, 10 choices). Network and concept
hierarchy: `hal_jax.models.concepts`. Per video, with the paper's weights λ (spec §3):

  L_video = λ1 L_mil + λ2 L_pseudo + λ3 L_concept + λ4 L_coarse,     L_batch = Σ over the batch's videos

* L_mil: class-balanced BCE of the mean-thresholded MIL pooling of the clip logits (paper Eqs. 1-2).
* L_pseudo: cross-entropy of the concept logits against the k-means pseudo-labels, weighted by cluster frequency ρ
  (the official code's choice, spec §10.4), PyTorch's weighted mean divided again by the number of clips.
* L_concept: 1 − cos(sg(w_j), e^j) averaged over the classes present (paper Eq. 7; Euclidean for Table 4).
* L_coarse: class-balanced BCE of the coarse head on the pooled fine representations (paper Eqs. 8-9).

State beside the parameters (`ConceptState`, not trained): the pseudo-label of every training clip, the cluster
weights ρ, the class-balance weights and the fine -> coarse membership. `refresh` rebuilds the pseudo-labels every
`config.recluster_every` epochs: a jitted encoder pass over a uniform sample of the training clips, k-means on
device, then one jitted encoder + nearest-centroid pass over every clip in fixed-size chunks (spec §4.1, §11); the
chunks of both passes are split across every device of every host, the k-means (on the sample) runs on each. The
train step gathers a batch's pseudo-labels from the state by `video_index`, so training batches must hold whole
videos on their native clip axis (no snippet sampling: `config.train_length` >= the longest training video).

What the training loop does beyond `base.Method` (HAAN owns how, the loop owns when; see hal_jax.methods.base):

  clips = method.refresh_data(train_split)          # once; the videos the train pipeline draws, same video_index
  state = method.init_state(clips)                  # before any restore: the same shapes as a refreshed state
  before epoch e, if method.refresh_due(e):         # e = 0, 5, 10, ... (also right after resuming at such an e)
    state, info = method.refresh(params, state, clips, fold_in(refresh_key, e))   # info: scalars to log
  loss = method.loss(params, batch, rng, stage, state)                             # inside the jitted step
  the state is checkpointed with the parameters (a run resumed mid-period keeps its labels, as an uninterrupted
  run does).

Inference (spec §5) runs on device over [B, T, C]: video scores (top-⌈T/m⌉ mean), absent classes zeroed, the
threshold mean + α(max − min), runs of clips above it with score max + 0.5·c_j; `postprocess` only lists them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hal_jax import errors
from hal_jax import optim
from hal_jax import precision
from hal_jax import sharding
from hal_jax.methods import base
from hal_jax.models import concepts

# The training loop picks the data family (localization) and metrics (mAP) from this before building the method.
TASK = base.Task.LOCALIZATION
FREQUENCY, INVERSE_FREQUENCY = "frequency", "inverse_frequency"


# ----------------------------------------------------------------------------------------------------------------------
# Training data and state.


@dataclasses.dataclass(frozen=True)
class TrainingClips:
  """Every clip of the training videos, packed video after video, with what the losses need of the split.

  Attributes:
    features: [N, D] float32 clips (N = Σ T_v). Anything NumPy-like that supports `x[a:b]`, `x[int_array]` and
      `.shape` (e.g. a np.memmap): the refresh reads it chunk by chunk.
    lengths: [V] int64 clips per video, in `video_index` order.
    video_labels: [V, C] float32 multi-hot fine labels.
    fine_to_coarse: [C] int64 coarse id of each fine class.
  """
  features: Any
  lengths: np.ndarray
  video_labels: np.ndarray
  fine_to_coarse: np.ndarray

  @property
  def offsets(self) -> np.ndarray:
    """[V + 1] int64 start of each video in `features` (and the total at the end)."""
    return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

  @classmethod
  def from_dataset(cls, dataset: Any, fine_to_coarse: Sequence[int] | None = None) -> TrainingClips:
    """Packs a `LocalizationDataset`-like split (videos with `.features` [T_v, D] and `.labels` class ids).

    Args:
      dataset: has `.videos`, `.label_map.num_classes` and `.fine_to_coarse` ({fine id: coarse id} or None).
      fine_to_coarse: overrides the dataset's hierarchy; without either, every class is its own coarse class.
    """
    num_classes = dataset.label_map.num_classes
    if fine_to_coarse is None and dataset.fine_to_coarse is not None:
      fine_to_coarse = [dataset.fine_to_coarse[j] for j in range(num_classes)]
    if fine_to_coarse is None:
      fine_to_coarse = range(num_classes)
    labels = np.zeros([len(dataset.videos), num_classes], np.float32)
    for i, video in enumerate(dataset.videos):
      labels[i, np.asarray(video.labels, np.int64)] = 1.0
    return cls(features=np.concatenate([v.features for v in dataset.videos]).astype(np.float32, copy=False),
               lengths=np.array([len(v.features) for v in dataset.videos], np.int64), video_labels=labels,
               fine_to_coarse=np.asarray(fine_to_coarse, np.int64))


@flax.struct.dataclass
class ConceptState:
  """HAAN's non-trainable state (V training videos of at most L clips, N concepts, C fine / U coarse classes).

  Attributes:
    pseudo_labels: [V, L] int32 cluster of every training clip; N ("void") past a video's end.
    cluster_weights: [N] float32 ρ of the pseudo-label loss.
    fine_weights: [2, C] float32 ω_j(0), ω_j(1) (spec §3).
    coarse_weights: [2, U] float32 ω'_u(0), ω'_u(1).
    membership: [U, C] float32 {0, 1} fine classes of each coarse class.
  """
  pseudo_labels: jax.Array
  cluster_weights: jax.Array
  fine_weights: jax.Array
  coarse_weights: jax.Array
  membership: jax.Array


def class_balance_weights(labels: np.ndarray) -> np.ndarray:
  """[2, K] ω(0) = K / (N_vid − n⁺), ω(1) = K / n⁺ from [N_vid, K] multi-hot labels (spec §3, HAAN's dataset.py).

  A class that is never (or always) present would divide by zero in the official code; its unused weight is K here.
  """
  num_videos, num_classes = labels.shape
  positives = labels.sum(axis=0)
  negatives = num_videos - positives
  return np.stack([num_classes / np.maximum(negatives, 1), num_classes / np.maximum(positives, 1)]).astype(np.float32)


def cluster_weights(labels: jax.Array, num_concepts: int, weighting: str = FREQUENCY) -> jax.Array:
  """[N] ρ from the pseudo-labels of all clips ([M] int32): count / total, or its inverse (spec §10.4)."""
  counts = jnp.bincount(labels, length=num_concepts).astype(jnp.float32)
  if weighting == FREQUENCY:
    return counts / jnp.sum(counts)
  if weighting == INVERSE_FREQUENCY:
    return jnp.where(counts > 0, jnp.sum(counts) / (num_concepts * jnp.maximum(counts, 1.0)), 0.0)
  raise errors.ConfigError("config.cluster_weighting", f"must be {FREQUENCY!r} or {INVERSE_FREQUENCY!r}, got "
                           f"{weighting!r}")


def cluster_sample_size(total: int, rate: float, num_concepts: int) -> int:
  """Clips k-means is fitted on: ⌊rate · total⌋ (the official code's sample), at least one per concept."""
  return min(total, max(int(math.floor(rate * total)), num_concepts))


# ----------------------------------------------------------------------------------------------------------------------
# Losses (per video, so that the batch loss is their sum).


def mil_pool(clip_logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Paper Eq. 1: per class, the mean of the clip logits at or above their (masked) mean.

  Args:
    clip_logits: [B, T, C] s.
    mask: [B, T] bool valid clips.

  Returns:
    [B, C] ŷ (logits). A video without valid clips gives 0.
  """
  valid = mask[:, :, None]
  count = jnp.maximum(jnp.sum(mask, axis=1), 1)[:, None].astype(clip_logits.dtype)
  mean = jnp.sum(jnp.where(valid, clip_logits, 0.0), axis=1) / count
  selected = valid & (clip_logits >= mean[:, None, :])
  return jnp.sum(jnp.where(selected, clip_logits, 0.0), axis=1) / jnp.maximum(jnp.sum(selected, axis=1), 1)


def balanced_bce(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
  """Per video (1/K) Σ_k ω_k(y_k) BCE(z_k, y_k) (spec §3: L_mil and L_coarse).

  Args:
    logits: [B, K]. labels: [B, K] {0, 1}. weights: [2, K] (ω(0), ω(1)).

  Returns:
    [B].
  """
  per_class = optax.sigmoid_binary_cross_entropy(logits, labels)
  weight = jnp.where(labels > 0, weights[1], weights[0])
  return jnp.mean(weight * per_class, axis=-1)


def pseudo_label_loss(concept_logits: jax.Array, pseudo_labels: jax.Array, weights: jax.Array,
                      mask: jax.Array) -> jax.Array:
  """Per video (1/T) Σ_i ρ_{p_i} CE_i / Σ_i ρ_{p_i} over its labelled clips (spec §3, PyTorch's weighted mean / T).

  Args:
    concept_logits: [B, T, N] p̂.
    pseudo_labels: [B, T] int32 in [0, N]; N = void (padding or not yet clustered).
    weights: [N] ρ.
    mask: [B, T] bool valid clips.

  Returns:
    [B]; 0 for a video without labelled clips.
  """
  num_concepts = concept_logits.shape[-1]
  labelled = mask & (pseudo_labels < num_concepts)
  safe = jnp.where(labelled, pseudo_labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(concept_logits, safe)
  rho = jnp.where(labelled, weights[safe], 0.0)
  clips = jnp.maximum(jnp.sum(mask, axis=1), 1).astype(ce.dtype)
  return jnp.sum(rho * ce, axis=1) / jnp.maximum(jnp.sum(rho, axis=1), 1e-12) / clips


def concept_loss(prototypes: jax.Array, fine_concepts: jax.Array, video_labels: jax.Array,
                 distance: str = concepts.COSINE) -> jax.Array:
  """Per video, D(sg(w_j), e^j) averaged over the classes present (paper Eq. 7; spec §3).

  Args:
    prototypes: [C, H] w (detached here: the prototypes only move through L_mil).
    fine_concepts: [B, C, H] e.
    video_labels: [B, C] {0, 1}.
    distance: "cosine" (1 − cos) or "euclidean" (‖w − e‖, the paper's Table 4 ablation).

  Returns:
    [B]; 0 for a video without labels.
  """
  w = jax.lax.stop_gradient(prototypes)[None]
  if distance == concepts.COSINE:
    per_class = 1.0 - concepts.cosine_similarity(w, fine_concepts)
  elif distance == concepts.EUCLIDEAN:
    per_class = concepts.euclidean_distance(w, fine_concepts)
  else:
    raise errors.ConfigError("config.concept_distance", f"must be {concepts.COSINE!r} or {concepts.EUCLIDEAN!r}")
  present = video_labels > 0
  return jnp.sum(jnp.where(present, per_class, 0.0), axis=1) / jnp.maximum(jnp.sum(present, axis=1), 1)


# ----------------------------------------------------------------------------------------------------------------------
# Inference (spec §5), vectorised over [B, T, C].


def detect(clip_logits: jax.Array, mask: jax.Array, *, top_divisor: int, alpha: float,
           video_score_weight: float = 0.5) -> dict[str, jax.Array]:
  """HAAN's thresholding: video scores, per-class thresholds and the runs of clips above them.

  Args:
    clip_logits: [B, T, C] s (raw logits).
    mask: [B, T] bool valid clips.
    top_divisor: m; the video score c_j is the mean of the ⌈T_v/m⌉ largest s_i^j (m = 4 FineAction, 2 FineGym).
    alpha: α of paper Eq. 11 (−0.8 FineAction, 0.1 FineGym).
    video_score_weight: weight of c_j in a segment's score (0.5 in the official code).

  Returns:
    video_scores [B, C] c; segment_start [B, T, C] bool (a run of positive clips starts here); segment_end
    [B, T, C] int32 exclusive end of the run starting here; segment_score [B, T, C] max s in the run + 0.5 c_j.
  """
  num_clips = clip_logits.shape[1]
  valid = mask[:, :, None]
  length = jnp.sum(mask, axis=1)  # [B]
  top = jnp.maximum(-(-length // top_divisor), 1)  # ⌈T_v / m⌉, at least 1 so padding videos stay finite.
  ranked = -jnp.sort(-jnp.where(valid, clip_logits, -jnp.inf), axis=1)  # Valid clips first, descending.
  ranked = jnp.where(jnp.isfinite(ranked), ranked, 0.0)
  top_sum = jnp.take_along_axis(jnp.cumsum(ranked, axis=1), (top - 1)[:, None, None], axis=1)[:, 0]
  video_scores = top_sum / top[:, None]
  present = video_scores > 0
  scores = jnp.where(present[:, None, :], clip_logits, 0.0)  # Absent classes: all zero, hence no positive clip.
  count = jnp.maximum(length, 1)[:, None].astype(scores.dtype)
  mean = jnp.sum(jnp.where(valid, scores, 0.0), axis=1) / count
  spread = (jnp.max(jnp.where(valid, scores, -jnp.inf), axis=1) - jnp.min(jnp.where(valid, scores, jnp.inf), axis=1))
  threshold = mean + alpha * jnp.where(length[:, None] > 0, spread, 0.0)
  positive = valid & (scores > threshold[:, None, :])

  previous = jnp.pad(positive, ((0, 0), (1, 0), (0, 0)))[:, :-1]
  start = positive & ~previous
  index = jnp.arange(num_clips, dtype=jnp.int32)[None, :, None]
  # The run starting at t ends at the first non-positive clip after it: a reverse cumulative minimum.
  end = jax.lax.cummin(jnp.where(positive, num_clips, index), axis=1, reverse=True)
  # Run maxima: number the runs of each (video, class) by a cumulative count of starts and take a segment max over
  # them (a scatter; a segmented associative scan gave the same values but took seconds to compile per length).
  batch, _, classes = scores.shape
  run = jnp.cumsum(start, axis=1, dtype=jnp.int32)  # 1.. inside the k-th run; clips outside runs are masked below.
  series = (jnp.arange(batch, dtype=jnp.int32)[:, None, None] * classes
            + jnp.arange(classes, dtype=jnp.int32)[None, None, :])
  segment = jnp.where(positive, series * (num_clips + 1) + run, batch * classes * (num_clips + 1))
  maxima = jax.ops.segment_max(scores.reshape(-1), segment.reshape(-1),
                               num_segments=batch * classes * (num_clips + 1) + 1)
  run_max = maxima[segment]
  segment_score = jnp.where(start, run_max + video_score_weight * video_scores[:, None, :], 0.0)
  return {"video_scores": video_scores, "segment_start": start, "segment_end": end.astype(jnp.int32),
          "segment_score": segment_score}


# ----------------------------------------------------------------------------------------------------------------------
# The method.


@dataclasses.dataclass(frozen=True)
class Haan:
  """The HAAN method (module docstring). Build it with `make_method(config, label_names)`."""
  config: ml_collections.ConfigDict
  num_classes: int
  name: str = "haan"

  @property
  def model(self) -> concepts.HaanNetwork:
    c = self.config
    return concepts.HaanNetwork(num_classes=self.num_classes, num_concepts=c.num_concepts, hidden_dim=c.hidden_dim,
                                dropout_rate=c.dropout, top_k=c.top_k, distance=c.concept_distance,
                                coarse_pooling=c.coarse_pooling)

  @property
  def uses_hierarchy(self) -> bool:
    """Whether the losses need the concept hierarchy (L_concept or L_coarse)."""
    return bool(self.config.concept_weight or self.config.coarse_weight)

  @property
  def uses_pseudo_labels(self) -> bool:
    """Whether anything reads the pseudo-labels (the "L_mil only" ablation never clusters)."""
    return bool(self.config.pseudo_weight) or self.uses_hierarchy

  @property
  def compute_dtype(self):
    return precision.compute_dtype(self.config)

  def stage_for_epoch(self, epoch: int) -> int:
    del epoch  # One stage; the pseudo-labels change through `refresh`, not through stages.
    return 0

  def learning_rate(self, epoch: jax.Array) -> jax.Array:
    del epoch  # Constant (spec section 4).
    return optim.constant_learning_rate(self.config.learning_rate)

  def refresh_due(self, epoch: int) -> bool:
    """Whether the pseudo-labels are rebuilt before `epoch` (every `recluster_every` epochs from 0; spec §4.1)."""
    return self.uses_pseudo_labels and epoch % self.config.recluster_every == 0

  def init(self, rng: jax.Array, batch: base.Batch) -> Any:
    features = batch["features"]
    void = jnp.full(features.shape[:2], self.config.num_concepts, jnp.int32)
    # The coarse head's parameters do not depend on U: a one-row membership creates them.
    return self.model.init({"params": rng}, features, void, jnp.ones([1, self.num_classes]),
                           deterministic=True)["params"]

  # -- state -----------------------------------------------------------------------------------------------------------

  def refresh_data(self, train_split: Any) -> TrainingClips:
    """Every clip of the training split (the videos the train pipeline draws, in `video_index` order)."""
    return TrainingClips.from_dataset(train_split)

  def init_state(self, clips: TrainingClips) -> ConceptState:
    """The state before the first refresh: the split's constants and void pseudo-labels (same shapes as later).

    Raises:
      ConfigError: a training video is longer than `config.train_length` (the pipeline would sample its clips, so
        pseudo-labels could not be looked up by clip index), or the labels do not match the classes.
    """
    c = self.config
    longest = int(clips.lengths.max())
    if longest > c.train_length:
      raise errors.ConfigError("config.train_length", f"{c.train_length} is shorter than the longest training video "
                               f"({longest} clips); HAAN trains on whole videos")
    if clips.video_labels.shape[1] != self.num_classes or len(clips.fine_to_coarse) != self.num_classes:
      raise errors.ConfigError("config.method", f"training labels / hierarchy have {clips.video_labels.shape[1]} / "
                               f"{len(clips.fine_to_coarse)} classes, the method {self.num_classes}")
    membership = concepts.membership_matrix(clips.fine_to_coarse)
    coarse_labels = (clips.video_labels @ membership.T > 0).astype(np.float32)
    return ConceptState(
        pseudo_labels=jnp.full([len(clips.lengths), longest], c.num_concepts, jnp.int32),
        cluster_weights=jnp.full([c.num_concepts], 1.0 / c.num_concepts, jnp.float32),
        fine_weights=jnp.asarray(class_balance_weights(clips.video_labels)),
        coarse_weights=jnp.asarray(class_balance_weights(coarse_labels)),
        membership=jnp.asarray(membership))

  @functools.cached_property
  def _encode(self):
    """Jitted h = E(φ) of [chunk, D] clips."""
    return jax.jit(lambda params, x: precision.apply(self.model, params, x, dtype=self.compute_dtype,
                                                     method=concepts.HaanNetwork.encode))

  @functools.cached_property
  def _encode_assign(self):
    """Jitted nearest centroid of E(φ) for [chunk, D] clips: [chunk] int32."""
    def assign(params, centroids, x):
      encoded = precision.apply(self.model, params, x, dtype=self.compute_dtype, method=concepts.HaanNetwork.encode)
      return jnp.argmin(concepts.squared_distances(encoded, centroids), axis=1).astype(jnp.int32)
    return jax.jit(assign)

  def _map_chunks(self, fn, args: Any, features: Any, rows: np.ndarray | int) -> jax.Array:
    """fn(args, block) over [chunk, D] float32 blocks of the clips `rows` (ids, or the first `rows`), concatenated
    and cut to the number of rows. The last block is zero-padded (one compiled shape). The blocks are split across
    every device of every process (`sharding.map_blocks`; each host reads only its own blocks' clips), with the
    results of one device computing them all."""
    ids = np.arange(rows) if isinstance(rows, int) else rows
    size = min(self.config.refresh_chunk_size, len(ids))

    def block(i: int) -> np.ndarray:
      wanted = ids[i * size:(i + 1) * size]
      contiguous = wanted[-1] - wanted[0] + 1 == len(wanted)  # A slice, not a gather: memory-mapped files read less.
      rows_read = np.asarray(features[wanted[0]:wanted[-1] + 1] if contiguous else features[wanted], np.float32)
      return np.concatenate([rows_read, np.zeros([size - len(wanted), rows_read.shape[1]], np.float32)])

    outputs = sharding.map_blocks(fn, args, block, -(-len(ids) // size))
    return jnp.asarray(outputs.reshape(-1, *outputs.shape[2:])[:len(ids)])

  def refresh(self, params: Any, state: ConceptState, clips: TrainingClips,
              key: jax.Array) -> tuple[ConceptState, dict[str, float]]:
    """Re-clusters the training clips (spec §4.1, §11): new pseudo-labels and cluster weights.

    1. A uniform sample without replacement of ⌊r·N⌋ clips (at least N_concepts) is encoded (dropout off).
    2. k-means on device on the sample (`concepts.kmeans_fit`), the same on every host.
    3. Every clip is encoded and assigned to its nearest centroid, chunk by chunk (never all encodings at once).
    Steps 1 and 3 split their chunks across every device of every host and gather the results
    (`sharding.map_blocks`): bitwise the result of one device doing all of them. Collective with several processes.

    Args:
      params: the current parameters.
      state: the current state (its constants are kept).
      clips: the training split, in `video_index` order.
      key: the refresh's PRNG key (e.g. fold_in(seed key, epoch)).

    Returns:
      The new state and diagnostics (k-means inertia per sampled clip, iterations, sample size, seconds per phase).
    """
    c = self.config
    offsets = clips.offsets
    total = int(offsets[-1])
    if total < c.num_concepts:
      raise errors.ConfigError("config.num_concepts", f"{c.num_concepts} concepts but the training split has only "
                               f"{total} clips")
    sample_size = cluster_sample_size(total, c.cluster_sample_rate, c.num_concepts)
    started = time.perf_counter()
    sample_key, fit_key = jax.random.split(key)
    sample_ids = np.sort(np.asarray(jax.random.choice(sample_key, total, (sample_size,), replace=False)))
    sample = self._map_chunks(self._encode, params, clips.features, sample_ids)
    sample.block_until_ready()
    encoded = time.perf_counter()
    fit = concepts.kmeans_fit(fit_key, sample, c.num_concepts, restarts=c.kmeans_restarts,
                              max_iterations=c.kmeans_max_iterations, tolerance=c.kmeans_tolerance,
                              sketch_dim=c.kmeans_sketch_dim)
    del sample
    fit.centroids.block_until_ready()
    fitted = time.perf_counter()
    labels = self._map_chunks(lambda args, block: self._encode_assign(*args, block), (params, fit.centroids),
                              clips.features, total)
    labels.block_until_ready()
    assigned = time.perf_counter()
    # [V, L] table: clip t of video v is flat clip offsets[v] + t; past the end it is void.
    longest = state.pseudo_labels.shape[1]
    position = np.arange(longest)[None, :]
    flat = np.minimum(offsets[:-1, None] + position, total - 1)
    table = jnp.where(jnp.asarray(position < clips.lengths[:, None]), labels[jnp.asarray(flat)], c.num_concepts)
    new_state = state.replace(pseudo_labels=table.astype(jnp.int32),
                              cluster_weights=cluster_weights(labels, c.num_concepts, c.cluster_weighting))
    info = {"kmeans_inertia_per_clip": float(fit.inertia) / sample_size, "kmeans_iterations": int(fit.iterations),
            "kmeans_sample_size": sample_size, "seconds_sample_encoding": encoded - started,
            "seconds_kmeans_fit": fitted - encoded, "seconds_encode_assign_all": assigned - fitted}
    return new_state, info

  def batch_pseudo_labels(self, state: ConceptState, batch: base.Batch) -> jax.Array:
    """[B, T] int32 pseudo-labels of the batch's clips from the state (void on padding clips and videos)."""
    num_clips = batch["features"].shape[1]
    video_index = batch["video_index"]
    rows = state.pseudo_labels[jnp.maximum(video_index, 0)]
    longest = rows.shape[1]
    if longest >= num_clips:
      rows = rows[:, :num_clips]
    else:
      rows = jnp.pad(rows, ((0, 0), (0, num_clips - longest)), constant_values=self.config.num_concepts)
    keep = batch["frame_mask"] & (batch["batch_mask"] & (video_index >= 0))[:, None]
    return jnp.where(keep, rows, self.config.num_concepts)

  # -- training --------------------------------------------------------------------------------------------------------

  def loss(self, params: Any, batch: base.Batch, rng: jax.Array, stage: int,
           state: ConceptState) -> tuple[jax.Array, base.Aux]:
    """Σ over the batch's real videos of λ1 L_mil + λ2 L_pseudo + λ3 L_concept + λ4 L_coarse (spec §3).

    Returns:
      The loss and {term: (sum over real videos, number of real videos)} for the terms that are on, plus
      "pseudo_label_accuracy" (the concept classifier's agreement with its targets, over labelled clips).
    """
    del stage
    c = self.config
    mask, labels, batch_mask = batch["frame_mask"], batch["video_labels"], batch["batch_mask"]
    pseudo = self.batch_pseudo_labels(state, batch) if self.uses_pseudo_labels else None
    outputs = precision.apply(self.model, params, batch["features"], pseudo if self.uses_hierarchy else None,
                              state.membership, dtype=self.compute_dtype, deterministic=False, rngs={"dropout": rng})
    real = batch_mask.astype(jnp.float32)
    videos = jnp.sum(real)
    terms = {"mil": (c.mil_weight, balanced_bce(mil_pool(outputs.clip_logits, mask), labels, state.fine_weights))}
    if c.pseudo_weight:
      terms["pseudo"] = (c.pseudo_weight,
                         pseudo_label_loss(outputs.concept_logits, pseudo, state.cluster_weights, mask))
    if c.concept_weight:
      terms["concept"] = (c.concept_weight, concept_loss(outputs.prototypes, outputs.fine_concepts, labels,
                                                         c.concept_distance))
    if c.coarse_weight:
      coarse_labels = (labels @ state.membership.T > 0).astype(jnp.float32)
      terms["coarse"] = (c.coarse_weight, balanced_bce(outputs.coarse_logits, coarse_labels, state.coarse_weights))
    loss = jnp.zeros([], jnp.float32)
    aux = {}
    for name, (weight, per_video) in terms.items():
      total = jnp.sum(per_video * real)
      loss += weight * total
      aux[name] = (total, videos)
    if pseudo is not None:
      labelled = pseudo < c.num_concepts
      hits = labelled & (jnp.argmax(outputs.concept_logits, axis=-1) == pseudo)
      aux["pseudo_label_accuracy"] = (jnp.sum(hits).astype(jnp.float32), jnp.sum(labelled).astype(jnp.float32))
    return loss, aux

  # -- inference -------------------------------------------------------------------------------------------------------

  def predict(self, params: Any, batch: base.Batch) -> dict[str, jax.Array]:
    """Device outputs: clip_logits [B, T, C] and `detect`'s arrays (dropout off)."""
    c = self.config
    outputs = precision.apply(self.model, params, batch["features"], dtype=self.compute_dtype, deterministic=True)
    found = detect(outputs.clip_logits, batch["frame_mask"], top_divisor=c.video_top_divisor,
                   alpha=c.detection_alpha, video_score_weight=c.video_score_weight)
    return {"clip_logits": outputs.clip_logits, **found}

  def postprocess(self, batch: dict[str, np.ndarray],
                  outputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray] | None]:
    """Lists the runs `predict` found (no NMS, no minimum length: spec §5.6).

    Returns:
      Per batch row, None for a padding video, else {"detections": [N, 4] float64 rows (class id, score, start,
      end) in clips, end exclusive}.
    """
    start = np.asarray(outputs["segment_start"])
    rows, clips, classes = np.nonzero(start)
    table = np.stack([classes, np.asarray(outputs["segment_score"])[rows, clips, classes], clips,
                      np.asarray(outputs["segment_end"])[rows, clips, classes]], axis=1).astype(np.float64)
    results: list[dict[str, np.ndarray] | None] = []
    for row, real in enumerate(np.asarray(batch["batch_mask"])):
      results.append({"detections": table[rows == row]} if real else None)
    return results


def make_method(config: ml_collections.ConfigDict, label_names: tuple[str, ...]) -> Haan:
  """HAAN for data with fine classes `label_names` (the hierarchy comes with the training data, `init_state`)."""
  if config.concept_distance not in (concepts.COSINE, concepts.EUCLIDEAN):
    raise errors.ConfigError("config.concept_distance", f"must be {concepts.COSINE!r} or {concepts.EUCLIDEAN!r}, "
                             f"got {config.concept_distance!r}")
  if config.coarse_pooling not in (concepts.MAX, concepts.MEAN):
    raise errors.ConfigError("config.coarse_pooling", f"must be {concepts.MAX!r} or {concepts.MEAN!r}, got "
                             f"{config.coarse_pooling!r}")
  if config.cluster_weighting not in (FREQUENCY, INVERSE_FREQUENCY):
    raise errors.ConfigError("config.cluster_weighting", f"must be {FREQUENCY!r} or {INVERSE_FREQUENCY!r}, got "
                             f"{config.cluster_weighting!r}")
  if config.top_k > config.num_concepts:
    raise errors.ConfigError("config.top_k", f"{config.top_k} > num_concepts ({config.num_concepts})")
  precision.compute_dtype(config)  # A bad value fails here, before training.
  return Haan(config=config, num_classes=len(label_names))
