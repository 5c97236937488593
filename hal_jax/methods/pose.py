"""Pose-aware weakly-supervised segmentation (Zhao et al., CVPRW): a host plus pose-to-RGB contrastive distillation.

Spec: ../shared/specs/pose.md. The method composes a transcript-supervised host (``config.host``: ATBA or HAL, any
module whose method has ``loss_with_outputs`` returning the encoder outputs) with a pose branch used in training
only:

  L = L_host + pose_weight · (L_I2P + L_P2I)       (paper Eq. 1, weight 1)

* I_t: the host's last-layer frame token (its representation right before the frame classifier);
* P_t: `pose_encoder.PoseEncoder` of the normalised pose of step t (`pose_encoder.normalise`);
* L_I2P / L_P2I (paper Eqs. 5-6): per video, InfoNCE of I_t against the poses of the same video (and P_t against
  the frames), cosine similarity at temperature τ; the positive is the same step, the negatives the steps whose
  pose distance to t is at least δ ("filtered"; δ = 0 gives the "vanilla" loss with every other step a negative).
  Anchors and candidates are the steps that have a pose (batch keys ``pose_keypoints`` / ``pose_scores``); padding
  and pose-less steps take no part, and a batch without any pose gives a pose loss of exactly 0.

Cost: the pose branch runs only on the steps that have a pose. The paper samples a pose every ``pose_stride`` raw
frames, so with a host step of ``sample_rate`` raw frames about ``sample_rate / pose_stride`` of the steps have one
(a fifth at the paper's 5-frame stride and full frame rate). `pose_capacity` sizes a static array of that many slots
per video (plus one, rounded up to a multiple of 8); the pose steps are gathered into it in time order, and the
encoder, the pose distances and the contrast run on [B, P] instead of [B, T] (encoder cost / (T/P), distances and
similarities / (T/P)²). A batch where some video has more pose steps than slots (a denser pose file than
``pose_stride`` says) takes the ungathered branch of a `lax.cond`, so the loss never drops a pose.

Parameters are ``{"host": host params, "pose": pose encoder params}``; `predict` is the host's on ``params["host"]``,
so inference is RGB only and unchanged. Online (``config.causal``) is the host with a causal encoder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from hal_jax import errors
from hal_jax.methods import base
from hal_jax.methods import pose_input
from hal_jax.models import pose_encoder

TASK = base.Task.SEGMENTATION

_NORM_EPS = 1e-12
# Streams folded into the step's dropout key for the pose encoder (the host keeps the key itself).
_POSE_DROPOUT_STREAM = 0x706F7365


def _unit(x: jax.Array) -> jax.Array:
  """x / max(‖x‖, eps) along the last axis, finite gradient at 0."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), _NORM_EPS**2))


def contrastive_terms(frame_embeddings: jax.Array, pose_embeddings: jax.Array, valid: jax.Array,
                      negatives: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """Per-anchor L_I2P and L_P2I terms (spec §3), 0 on anchors that take no part.

  Args:
    frame_embeddings: [B, T, D] I_t.
    pose_embeddings: [B, T, D] P_t.
    valid: [B, T] bool, steps that take part (a pose, a real frame of a real video).
    negatives: [B, T, T] bool, symmetric: j may be a negative of anchor t (d(t, j) >= δ); the diagonal is the
      positive whatever it holds.
    temperature: τ.

  Returns:
    i2p [B, T], p2i [B, T]; an anchor with no negative has term 0.
  """
  similarity = jnp.einsum("btd,bsd->bts", _unit(frame_embeddings), _unit(pose_embeddings)) / temperature
  diagonal = jnp.eye(valid.shape[1], dtype=bool)[None]
  allowed = (valid[:, :, None] & valid[:, None, :] & negatives) | diagonal  # the diagonal keeps every row finite

  def direction(logits):  # rows are anchors
    log_normaliser = jax.nn.logsumexp(jnp.where(allowed, logits, -jnp.inf), axis=-1)
    return jnp.where(valid, log_normaliser - jnp.diagonal(logits, axis1=1, axis2=2), 0.0)

  return direction(similarity), direction(jnp.swapaxes(similarity, 1, 2))


def contrastive_loss(frame_embeddings: jax.Array, pose_embeddings: jax.Array, valid: jax.Array,
                     negatives: jax.Array, temperature: float) -> dict[str, tuple[jax.Array, jax.Array]]:
  """{"pose_i2p": (sum, count), "pose_p2i": (sum, count)} of `contrastive_terms` pooled over the batch's anchors.

  Every anchor counts once, also one without negatives (spec §3); no anchor gives (0, 0).
  """
  i2p, p2i = contrastive_terms(frame_embeddings, pose_embeddings, valid, negatives, temperature)
  count = jnp.sum(valid).astype(i2p.dtype)
  return {"pose_i2p": (jnp.sum(i2p), count), "pose_p2i": (jnp.sum(p2i), count)}


def pose_capacity(frames: int, sample_rate: int, pose_stride: int) -> int:
  """Pose slots per video for `frames` steps of `sample_rate` raw frames with a pose every `pose_stride` raw frames.

  ceil(frames · sample_rate / pose_stride) + 1 (a window may hold one pose more than the mean rate), rounded up to a
  multiple of 8 and at most `frames`.
  """
  expected = -(-frames * sample_rate // pose_stride) + 1
  return min(frames, -(-expected // 8) * 8)


def gather_slots(valid: jax.Array, capacity: int) -> tuple[jax.Array, jax.Array]:
  """The first `capacity` steps of each video that take part, in time order.

  Args:
    valid: [B, T] bool.
    capacity: P <= T.

  Returns:
    slots [B, P] int step indices (the valid steps first, then padding steps) and slot_valid [B, P] bool.
  """
  slots = jnp.argsort(~valid, axis=1, stable=True)[:, :capacity]
  return slots, jnp.take_along_axis(valid, slots, axis=1)


@dataclasses.dataclass(frozen=True)
class Pose:
  """The host plus the pose branch (module docstring). Build it with `make_method(config, label_names)`."""
  config: ml_collections.ConfigDict
  host: Any
  name: str = "pose"

  def stage_for_epoch(self, epoch: int) -> int:
    return self.host.stage_for_epoch(epoch)

  def learning_rate(self, epoch: jax.Array) -> jax.Array:
    """The host's schedule (spec §4: everything but the loss is the host baseline's)."""
    return self.host.learning_rate(epoch)

  def init(self, rng: jax.Array, batch: base.Batch) -> Any:
    """Host and pose-encoder parameters; evaluation batches carry no poses, so the encoder is sized by the layout."""
    host_rng, pose_rng = jax.random.split(rng)
    return {"host": self.host.init(host_rng, batch), "pose": pose_input.init_encoder(self.config, pose_rng)}

  def pose_losses(self, params: Any, frame_tokens: jax.Array, batch: base.Batch,
                  rng: jax.Array | None) -> dict[str, tuple[jax.Array, jax.Array]]:
    """L_I2P and L_P2I as (sum, count) from the host's frame tokens [B, T, D] and the batch's poses.

    Computed on the gathered pose steps (module docstring, "Cost"); the same value as on all T steps.
    """
    c = self.config
    poses, joint_mask, has_pose = pose_encoder.normalise(batch["pose_keypoints"], batch["pose_scores"])
    valid = has_pose & batch["frame_mask"] & batch["batch_mask"][:, None]

    def terms(tokens, poses, joint_mask, valid):
      rngs = None if rng is None else {"dropout": rng}
      embeddings = pose_input.make_encoder(c).apply({"params": params}, poses, joint_mask, deterministic=rng is None,
                                                    rngs=rngs)
      negatives = pose_encoder.negative_mask(poses, joint_mask, c.pose_delta)
      return contrastive_loss(tokens, embeddings, valid, negatives, c.pose_temperature)

    capacity = pose_capacity(valid.shape[1], c.sample_rate, c.pose_stride)
    if capacity >= valid.shape[1]:
      return terms(frame_tokens, poses, joint_mask, valid)
    slots, slot_valid = gather_slots(valid, capacity)
    gather = lambda x: jnp.take_along_axis(x, slots.reshape(slots.shape + (1,) * (x.ndim - 2)), axis=1)
    overflow = jnp.any(jnp.sum(valid, axis=1) > capacity)
    # Differentiating a cond makes every branch's residuals outputs of the cond (zeros where the branch did not run):
    # rematerialising the full branch keeps its [B, T, K, width] activations out of the gathered branch's step.
    full = jax.checkpoint(terms)
    return jax.lax.cond(overflow, lambda: full(frame_tokens, poses, joint_mask, valid),
                        lambda: terms(gather(frame_tokens), gather(poses), gather(joint_mask), slot_valid))

  def loss(self, params: Any, batch: base.Batch, rng: jax.Array, stage: int) -> tuple[jax.Array, base.Aux]:
    loss, aux, outputs = self.host.loss_with_outputs(params["host"], batch, rng, stage)
    terms = self.pose_losses(params["pose"], outputs.frame_tokens, batch,
                             jax.random.fold_in(rng, _POSE_DROPOUT_STREAM))
    for total, count in terms.values():
      loss += self.config.pose_weight * total / jnp.maximum(count, 1.0)
    return loss, {**aux, **terms}

  def predict(self, params: Any, batch: base.Batch) -> dict[str, jax.Array]:
    """The host's predictions from the host parameters only (the pose branch is training-only)."""
    return self.host.predict(params["host"], batch)


def make_method(config: ml_collections.ConfigDict, label_names: tuple[str, ...]) -> Pose:
  """The pose method on the host ``config.host`` (`pose_input.make_method`) for data with classes `label_names`."""
  host = pose_input.make_method(config, label_names)
  if config.pose_temperature <= 0:
    raise errors.ConfigError("config.pose_temperature", f"must be > 0, got {config.pose_temperature}")
  if config.pose_delta < 0:
    raise errors.ConfigError("config.pose_delta", f"must be >= 0, got {config.pose_delta}")
  return Pose(config=config, host=host)
