"""ATBA (Xu & Zheng, CVPR 2024): losses, stages and prediction on top of the pyramid transformer.

Spec: ../shared/specs/hal_atba.md, sections 5 (pseudo-labels), 6 (losses), 8 (stages) and 9 (inference).

  stage 0 (epochs < stage_epoch):   L = α L_vid
  stage 1 (epochs >= stage_epoch):  L = α L_vid + β L_fr + γ L_glc, pseudo-labels from boundary alignment

* L_vid: binary cross-entropy of the class-token logits against the multi-hot transcript labels, mean over the
  B·C entries of the real videos (logit-space BCE; equals ATBA's probability-space one away from saturation).
* L_fr: cross-entropy of the frame logits against the pseudo-labels, pooled over all labelled frames of the batch,
  class-weighted by `background_weight` for the background class (weighted mean, as ATBA).
* L_glc: global-local InfoNCE: per video, the mean last-layer frame token of each pseudo-label class against all C
  (detached) class tokens of the same video at temperature τ; mean over the video's classes, then over videos.

Pseudo-labels are computed inside the jitted step, on the same dropout-perturbed forward pass, under
`stop_gradient` (`hal_jax.alignment.atba`).

Learning rate (spec §8): a function of the epoch, set once per epoch as in ATBA's code,

  epochs [0, W)               base · (0.01 + 0.99 · e / (W − 1))      warm-up from 1% of base
  epochs [W, E1)              base
  epochs [E1, E1 + W)         base · (0.1 + 0.9 · (e − E1) / (W − 1)) warm-up again after the stage switch
  epochs [E1 + W, E)          cosine from base to final_lr_factor · base over K = E − W − E1 epochs

with W = `warmup_epochs`, E1 = `stage_epoch` (ATBA's `warm_epc`), E = `num_epochs`; the loop resets the optimizer
state at the stage switch (ATBA creates a fresh optimizer there).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from hal_jax import errors
from hal_jax import precision
from hal_jax.alignment import atba as alignment
from hal_jax.methods import base
from hal_jax.models import pyramid_transformer

TASK = base.Task.SEGMENTATION

# Normalisation epsilon of the contrastive loss (ATBA: F.normalize's default).
_NORM_EPS = 1e-12


def epoch_learning_rate(epoch: jnp.ndarray | int, *, base_lr: float, warmup_epochs: int, stage_epoch: int,
                        num_epochs: int, final_factor: float = 0.01) -> jnp.ndarray:
  """ATBA's learning rate of `epoch` (scalar, jittable). See the module docstring for the formula."""
  epoch = jnp.asarray(epoch, jnp.float32)
  warm = max(warmup_epochs - 1, 1)
  first_warmup = base_lr * (0.01 + 0.99 * epoch / warm)
  second_warmup = base_lr * (0.1 + 0.9 * (epoch - stage_epoch) / warm)
  cosine_len = max(num_epochs - warmup_epochs - stage_epoch, 1)
  k = epoch - stage_epoch - warmup_epochs
  min_lr = final_factor * base_lr
  cosine = min_lr + 0.5 * (base_lr - min_lr) * (1.0 + jnp.cos(jnp.pi * k / cosine_len))
  return jnp.where(
      epoch < warmup_epochs, first_warmup,
      jnp.where(epoch < stage_epoch, base_lr,
                jnp.where(epoch < stage_epoch + warmup_epochs, second_warmup, cosine)))


def video_bce(video_logits: jax.Array, video_labels: jax.Array, batch_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(sum, count) of the per-entry BCE over real videos.

  Args:
    video_logits: [B, C] class-token logits.
    video_labels: [B, C] multi-hot {0, 1}.
    batch_mask: [B] bool, False on padding videos.
  """
  per_entry = optax.sigmoid_binary_cross_entropy(video_logits, video_labels)
  weight = batch_mask[:, None].astype(per_entry.dtype) * jnp.ones_like(per_entry)
  return jnp.sum(per_entry * weight), jnp.sum(weight)


def frame_cross_entropy(frame_logits: jax.Array, labels: jax.Array, background_id: int | None,
                        background_weight: float) -> tuple[jax.Array, jax.Array]:
  """(weighted sum, weight sum) of the frame CE against `labels` (-1 = ignore).

  Args:
    frame_logits: [B, T, C].
    labels: [B, T] int32 pseudo-labels, -1 on padded or unlabelled frames.
  """
  valid = labels >= 0
  safe = jnp.where(valid, labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(frame_logits, safe)
  weight = valid.astype(ce.dtype)
  if background_id is not None and background_weight != 1.0:
    weight = weight * jnp.where(safe == background_id, background_weight, 1.0)
  return jnp.sum(ce * weight), jnp.sum(weight)


def global_local_contrast(frame_tokens: jax.Array, class_tokens: jax.Array, labels: jax.Array,
                          batch_mask: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """(sum over videos, number of videos) of ATBA's global-local InfoNCE.

  Args:
    frame_tokens: [B, T, d] last-layer frame tokens.
    class_tokens: [B, C, d] last-layer class tokens of the same videos (detached here).
    labels: [B, T] int32 pseudo-labels, -1 = ignore.
    batch_mask: [B] bool.
    temperature: τ.
  """
  num_classes = class_tokens.shape[1]
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=frame_tokens.dtype)  # -1 gives an all-zero row.
  sums = jnp.einsum("btc,btd->bcd", one_hot, frame_tokens)
  counts = jnp.sum(one_hot, axis=1)  # [B, C]
  present = counts > 0
  means = sums / jnp.maximum(counts, 1.0)[..., None]

  def normalise(x):
    # x / max(|x|, eps) written through the squared norm: the norm's gradient is NaN at the zero vector (absent
    # classes have all-zero means), while max(|x|², eps²) routes it to the constant branch.
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), _NORM_EPS**2))

  logits = jnp.einsum("bkd,bcd->bkc", normalise(means), normalise(jax.lax.stop_gradient(class_tokens)))
  log_probs = jax.nn.log_softmax(logits / temperature, axis=-1)
  positive = jnp.diagonal(log_probs, axis1=1, axis2=2)  # [B, C]: class k's segment mean vs class token k.
  num_present = jnp.sum(present, axis=1)
  per_video = -jnp.sum(jnp.where(present, positive, 0.0), axis=1) / jnp.maximum(num_present, 1)
  counted = batch_mask & (num_present > 0)  # Videos without pseudo-labels (T_v < M) have no classes to contrast.
  return jnp.sum(jnp.where(counted, per_video, 0.0)), jnp.sum(counted).astype(per_video.dtype)


@dataclasses.dataclass(frozen=True)
class Atba:
  """The ATBA method (see the module docstring). Build it with `make_method(config, label_names)`."""
  config: ml_collections.ConfigDict
  num_classes: int
  background_id: int | None
  name: str = "atba"

  @property
  def model(self) -> pyramid_transformer.PyramidTransformer:
    c = self.config
    # `causal` (online segmentation, configs/pose.py) is absent from the offline configs: offline is the default.
    return pyramid_transformer.PyramidTransformer(
        num_classes=self.num_classes, hidden_dim=c.hidden_dim, num_layers=c.num_layers, num_heads=c.num_heads,
        dropout_rate=c.dropout, max_positions=c.max_positions, causal=c.get("causal", False))

  @property
  def compute_dtype(self):
    return precision.compute_dtype(self.config)

  def stage_for_epoch(self, epoch: int) -> int:
    return 0 if epoch < self.config.stage_epoch else 1

  def learning_rate(self, epoch: jax.Array) -> jax.Array:
    c = self.config
    return epoch_learning_rate(epoch, base_lr=c.learning_rate, warmup_epochs=c.warmup_epochs,
                               stage_epoch=c.stage_epoch, num_epochs=c.num_epochs, final_factor=c.final_lr_factor)

  def init(self, rng: jax.Array, batch: base.Batch) -> Any:
    return self.model.init({"params": rng}, batch["features"], batch["frame_mask"], deterministic=True)["params"]

  def forward(self, params: Any, batch: base.Batch, rng: jax.Array | None):
    """The encoder's outputs with every layer's tokens; dropout is on when `rng` is given."""
    deterministic = rng is None
    rngs = None if deterministic else {"dropout": rng}
    return precision.apply(self.model, params, batch["features"], batch["frame_mask"], dtype=self.compute_dtype,
                           deterministic=deterministic, rngs=rngs, return_layer_states=True)

  def pseudo_labels(self, frame_logits: jax.Array, batch: base.Batch) -> jax.Array:
    """[B, T] int32 boundary-alignment pseudo-labels (no gradient), -1 on padding and padding videos."""
    c = self.config
    labels = alignment.pseudo_labels_batch(
        jax.lax.stop_gradient(frame_logits), batch["num_frames"], batch["transcript"],
        jnp.sum(batch["transcript_mask"], axis=1).astype(jnp.int32), boundary_kernel=c.boundary_kernel,
        boundary_scale=c.boundary_scale, transition_kernel=c.transition_kernel,
        candidate_multiplier=c.candidate_multiplier)
    return jnp.where(batch["batch_mask"][:, None] & batch["frame_mask"], labels, -1)

  def atba_losses(self, outputs, batch: base.Batch, stage: int) -> tuple[jax.Array, base.Aux]:
    """ATBA's weighted loss of one stage from the encoder outputs, and its logged terms."""
    c = self.config
    vid_sum, vid_count = video_bce(outputs.video_logits, batch["video_labels"], batch["batch_mask"])
    loss = c.video_weight * vid_sum / jnp.maximum(vid_count, 1.0)
    aux = {"video_bce": (vid_sum, vid_count)}
    if stage >= 1:
      labels = self.pseudo_labels(outputs.frame_logits, batch)
      fr_sum, fr_weight = frame_cross_entropy(outputs.frame_logits, labels, self.background_id, c.background_weight)
      glc_sum, glc_count = global_local_contrast(outputs.frame_tokens, outputs.class_tokens, labels,
                                                 batch["batch_mask"], c.contrast_temperature)
      loss += c.frame_weight * fr_sum / jnp.maximum(fr_weight, 1e-12)
      loss += c.contrast_weight * glc_sum / jnp.maximum(glc_count, 1.0)
      labelled = labels >= 0
      # How often the pseudo-labels agree with the (never trained on) ground truth: a diagnostic only.
      agree = jnp.sum(labelled & (labels == batch["frame_labels"])).astype(jnp.float32)
      aux.update(frame_ce=(fr_sum, fr_weight), contrast=(glc_sum, glc_count),
                 pseudo_label_accuracy=(agree, jnp.sum(labelled).astype(jnp.float32)))
    return loss, aux

  def loss(self, params: Any, batch: base.Batch, rng: jax.Array, stage: int) -> tuple[jax.Array, base.Aux]:
    loss, aux, _ = self.loss_with_outputs(params, batch, rng, stage)
    return loss, aux

  def loss_with_outputs(self, params: Any, batch: base.Batch, rng: jax.Array,
                        stage: int) -> tuple[jax.Array, base.Aux, pyramid_transformer.EncoderOutput]:
    """`loss` and the encoder outputs of the same forward pass (add-ons such as the pose branch read them)."""
    outputs = self.forward(params, batch, rng)
    loss, aux = self.atba_losses(outputs, batch, stage)
    return loss, aux, outputs

  def predict(self, params: Any, batch: base.Batch) -> dict[str, jax.Array]:
    """Frame and video logits, plus the frame tokens after layers z_layer and z_layer + 1 (HAL's visual and action
    latent means), which the identifiability metrics probe for any method."""
    outputs = self.forward(params, batch, None)
    visual, action = outputs.layer_outputs[self.config.z_layer], outputs.layer_outputs[self.config.z_layer + 1]
    return {"frame_logits": outputs.frame_logits, "video_logits": outputs.video_logits,
            "visual_latent": visual[:, self.num_classes:], "action_latent": action[:, self.num_classes:]}


def background_id_of(config: ml_collections.ConfigDict, label_names: tuple[str, ...]) -> int | None:
  """Id of `config.background` among `label_names`, None when the config names no background."""
  if not config.background:
    return None
  if config.background not in label_names:
    raise errors.ConfigError("config.background", f"{config.background!r} is not a class of the data "
                             f"({len(label_names)} classes, e.g. {list(label_names[:3])})")
  return label_names.index(config.background)


def check_schedule(config: ml_collections.ConfigDict) -> None:
  """ConfigError for an impossible learning-rate schedule (the keys of the module docstring)."""
  for key in ("warmup_epochs", "stage_epoch"):
    if config[key] < 0:
      raise errors.ConfigError(f"config.{key}", f"must be >= 0, got {config[key]}")
  if not (math.isfinite(config.final_lr_factor) and config.final_lr_factor >= 0):
    raise errors.ConfigError("config.final_lr_factor", f"must be finite and >= 0, got {config.final_lr_factor}")


def make_method(config: ml_collections.ConfigDict, label_names: tuple[str, ...]) -> Atba:
  """ATBA for data with classes `label_names`."""
  precision.compute_dtype(config)  # A bad value fails here, before training.
  check_schedule(config)
  return Atba(config=config, num_classes=len(label_names), background_id=background_id_of(config, label_names))
