"""AHLM (Wang et al.): weakly-supervised action localization with hierarchically-structured latent attention.

Spec: ../shared/specs/ahlm.md. Two branches on the same frozen snippet features, sharing no parameters:

* DFC (`hal_jax.models.hierarchical_vae`): a two-level VAE trained with L_DFC = -ELBO (spec section 3: mean over
  valid snippets of ½||x_t - x̂_t||² + KL¹_t + KL²_t, then over videos); it emits class-agnostic change points.
* EFC (`hal_jax.models.attention_mil`): foreground / context / background attention with a CAS of C + 1 classes,
  trained with the video-level MIL losses of paper Eqs. 10-12 (cross-entropy of each branch's pooled softmax against
  ℓ1-normalised targets: [y, 0] for foreground, [0, ..., 0, 1] for background, [y, 1] for context).

  L = L_fg + L_bg + L_ct + L_DFC          (weights 1, spec section 3; the ablation switches drop terms)

One training stage; the decisions are taken inside the jitted step under stop-gradient. `predict` runs both branches
on device (dropout off, latent means); `postprocess` turns its outputs into detections on the host (spec section 5):
LCS pruning of the change points, foreground change points, attention proposals snapped to them, change-point
intervals, outer-inner scoring and class-wise NMS (`hal_jax.methods.ahlm_inference`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hal_jax import optim
from hal_jax import precision
from hal_jax.methods import ahlm_inference
from hal_jax.methods import base
from hal_jax.models import attention_mil
from hal_jax.models import changepoint
from hal_jax.models import hierarchical_vae

# The training loop picks the data family (localization) and metrics (mAP) from this before building the method.
TASK = base.Task.LOCALIZATION


def mil_losses(video_logits: jax.Array, video_labels: jax.Array,
               batch_mask: jax.Array) -> dict[str, tuple[jax.Array, jax.Array]]:
  """(sum, count) over videos of the three branch losses (paper Eqs. 10-12, spec section 3).

  Args:
    video_logits: [B, 3, C + 1] pooled logits z^b, branches (foreground, context, background).
    video_labels: [B, C] multi-hot video labels y.
    batch_mask: [B] bool, False on padding videos.
  Returns:
    {"foreground", "context", "background"}: (sum of per-video cross-entropies, number of videos). The foreground
    loss counts only videos with at least one label (its target [y, 0] / ||y||_1 is undefined otherwise).
  """
  log_probs = jax.nn.log_softmax(video_logits, axis=-1)
  labels = video_labels.astype(log_probs.dtype)
  count = jnp.sum(labels, axis=-1, keepdims=True)
  zeros, ones = jnp.zeros_like(count), jnp.ones_like(count)
  targets = {
      "foreground": jnp.concatenate([labels, zeros], axis=-1) / jnp.maximum(count, 1.0),
      "context": jnp.concatenate([labels, ones], axis=-1) / (count + 1.0),
      "background": jnp.concatenate([jnp.zeros_like(labels), ones], axis=-1),
  }
  branches = {"foreground": attention_mil.FOREGROUND, "context": attention_mil.CONTEXT,
              "background": attention_mil.BACKGROUND}
  counted = {"foreground": batch_mask & (count[:, 0] > 0), "context": batch_mask, "background": batch_mask}
  losses = {}
  for name, branch in branches.items():
    per_video = -jnp.sum(targets[name] * log_probs[:, branch], axis=-1)
    losses[name] = (jnp.sum(jnp.where(counted[name], per_video, 0.0)),
                    jnp.sum(counted[name]).astype(per_video.dtype))
  return losses


def dfc_losses(features: jax.Array, mask: jax.Array, batch_mask: jax.Array,
               outputs: hierarchical_vae.DFCOutputs) -> dict[str, tuple[jax.Array, jax.Array]]:
  """(sum, count) over videos of L_DFC and its three terms, each a per-video mean over valid snippets.

  Args:
    features: [B, T, D] the snippet features x.
    mask: [B, T] bool valid snippets.
    batch_mask: [B] bool real videos.
    outputs: the DFC outputs of `features`.
  Returns:
    {"dfc", "dfc_reconstruction", "dfc_kl1", "dfc_kl2"}: (sum over real videos, number of real videos).
  """
  squared = jnp.sum(jnp.square(features - outputs.reconstruction), axis=-1)
  terms = {"dfc_reconstruction": 0.5 * jnp.where(mask, squared, 0.0), "dfc_kl1": outputs.kl1,
           "dfc_kl2": outputs.kl2}
  length = jnp.maximum(jnp.sum(mask, axis=1), 1).astype(squared.dtype)
  videos = jnp.sum(batch_mask).astype(squared.dtype)
  per_video = {name: jnp.sum(term, axis=1) / length for name, term in terms.items()}
  per_video["dfc"] = sum(per_video.values())
  return {name: (jnp.sum(jnp.where(batch_mask, value, 0.0)), videos) for name, value in per_video.items()}


def snippet_noise(key: jax.Array, batch: int, length: int, latent_dim: int) -> tuple[jax.Array, jax.Array]:
  """Reparameterisation noise (eps2, eps1), each [batch, length, latent_dim].

  The noise of row b, snippet t comes from ``fold_in(fold_in(key, b), t)``: it does not depend on the padded length
  or on padding videos, so padding leaves the sampled loss unchanged.
  """
  def at(row: jax.Array, t: jax.Array) -> jax.Array:
    return jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, row), t), (2, latent_dim))

  noise = jax.vmap(jax.vmap(at, (None, 0)), (0, None))(jnp.arange(batch), jnp.arange(length))  # [B, T, 2, L]
  return noise[:, :, 0], noise[:, :, 1]


@dataclasses.dataclass(frozen=True)
class Ahlm:
  """The AHLM method (module docstring). Build it with `make_method(config, label_names)`."""
  config: ml_collections.ConfigDict
  num_classes: int
  name: str = "ahlm"

  @property
  def rule(self) -> changepoint.ChangeRule:
    c = self.config
    return changepoint.ChangeRule(alpha=c.change_alpha, beta_min=c.beta_min, beta_max=c.beta_max,
                                  beta_init=c.beta_init)

  @property
  def dfc(self) -> hierarchical_vae.HierarchicalVAE:
    c = self.config
    return hierarchical_vae.HierarchicalVAE(encoder_dim=c.encoder_dim, gru_dim=c.gru_dim, latent_dim=c.latent_dim,
                                            head_dim=c.head_dim, rule=self.rule)

  @property
  def efc(self) -> attention_mil.AttentionMIL:
    c = self.config
    return attention_mil.AttentionMIL(num_classes=self.num_classes, embed_dim=c.embed_dim,
                                      attention_dim=c.attention_dim, dropout_rate=c.dropout)

  @property
  def inference(self) -> ahlm_inference.InferenceSettings:
    c = self.config
    return ahlm_inference.InferenceSettings(
        class_threshold=c.class_threshold, attention_thresholds=tuple(c.attention_thresholds),
        foreground_threshold=c.foreground_threshold, snap_window=c.snap_window,
        video_score_weight=c.video_score_weight, nms_tiou=c.nms_tiou, lcs_cosine=c.lcs_cosine,
        lcs_ratio=c.lcs_ratio, use_change_points=c.use_dfc)

  @property
  def compute_dtype(self):
    return precision.compute_dtype(self.config)

  @property
  def change_point_tolerance(self) -> int:
    """What the boundary F1 of the predicted change points allows, in snippets (spec section 9): read by the
    localization task's scoring for methods that predict change points."""
    return self.config.change_point_tolerance

  def stage_for_epoch(self, epoch: int) -> int:
    del epoch  # One stage: both branches train together from the first step.
    return 0

  def learning_rate(self, epoch: jax.Array) -> jax.Array:
    del epoch  # Constant (spec section 4).
    return optim.constant_learning_rate(self.config.learning_rate)

  def init(self, rng: jax.Array, batch: base.Batch) -> Any:
    efc_key, dfc_key = jax.random.split(rng)
    features, mask = batch["features"], batch["frame_mask"]
    params = {"efc": self.efc.init({"params": efc_key}, features, mask, deterministic=True)["params"]}
    if self.config.use_dfc:  # The EFC-only ablations have no DFC at all (no parameters, no compute).
      params["dfc"] = self.dfc.init({"params": dfc_key}, features, mask)["params"]
    return params

  def loss(self, params: Any, batch: base.Batch, rng: jax.Array, stage: int) -> tuple[jax.Array, base.Aux]:
    del stage
    c = self.config
    dropout_key, noise_key = jax.random.split(rng)
    features, mask, batch_mask = batch["features"], batch["frame_mask"], batch["batch_mask"]
    efc = precision.apply(self.efc, params["efc"], features, mask, dtype=self.compute_dtype, deterministic=False,
                          rngs={"dropout": dropout_key})
    video_logits = attention_mil.branch_video_logits(efc, mask, batch["num_frames"])
    aux = mil_losses(video_logits, batch["video_labels"], batch_mask)

    def mean(name: str) -> jax.Array:
      total, count = aux[name]
      return total / jnp.maximum(count, 1.0)

    loss = mean("foreground")
    if c.use_background_loss:
      loss += mean("background")
    if c.use_context_loss:
      loss += mean("context")
    if c.use_dfc:
      noise = snippet_noise(noise_key, mask.shape[0], mask.shape[1], c.latent_dim)
      dfc = precision.apply(self.dfc, params["dfc"], features, mask, noise, dtype=self.compute_dtype)
      aux.update(dfc_losses(features, mask, batch_mask, dfc))
      loss += c.dfc_weight * mean("dfc")
      valid = mask & batch_mask[:, None]
      # Change points per 100 snippets (spec section 2.2 asks to log it: DFC over-segments by design).
      aux["change_point_rate"] = (100.0 * jnp.sum(dfc.change_points & valid).astype(jnp.float32),
                                  jnp.sum(valid).astype(jnp.float32))
    return loss, aux

  def predict(self, params: Any, batch: base.Batch) -> dict[str, jax.Array]:
    """Device outputs for `postprocess`.

    Returns:
      cas_logits [B, T, C + 1], attention [B, T, 3] (fg, ct, bg), video_probs [B, C + 1] (softmax of the
      foreground branch's video logits, p^fg), and with the DFC change_points [B, T] bool and the latent means
      action_latent = v² and visual_latent = v¹, [B, T, L].
    """
    features, mask = batch["features"], batch["frame_mask"]
    efc = precision.apply(self.efc, params["efc"], features, mask, dtype=self.compute_dtype, deterministic=True)
    video_logits = attention_mil.branch_video_logits(efc, mask, batch["num_frames"])
    outputs = {"cas_logits": efc.cas_logits, "attention": efc.attention,
               "video_probs": jax.nn.softmax(video_logits[:, attention_mil.FOREGROUND], axis=-1)}
    if self.config.use_dfc:
      dfc = precision.apply(self.dfc, params["dfc"], features, mask, dtype=self.compute_dtype)
      # The slow level-2 latent and the fast level-1 latent are the candidates for the synthetic data's action and
      # visual latents (hal_jax.latent_probe).
      outputs.update(change_points=dfc.change_points, action_latent=dfc.v2, visual_latent=dfc.v1)
    return outputs

  def postprocess(self, batch: dict[str, np.ndarray],
                  outputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray] | None]:
    """Host-side localization of every real video of a predicted batch (spec section 5).

    Args:
      batch: the host batch (features [B, T, D], num_frames [B], batch_mask [B], ...).
      outputs: `predict`'s outputs fetched to the host.
    Returns:
      Per batch row, None for a padding video, else {"detections": [N, 4] float64 rows (class id, score, start,
      end) with start / end in snippets (end exclusive), and with the DFC "change_points": [K] int64 after LCS
      pruning and "raw_change_points": [K'] int64}.
    """
    settings = self.inference
    results: list[dict[str, np.ndarray] | None] = []
    for row in range(len(batch["batch_mask"])):
      if not batch["batch_mask"][row]:
        results.append(None)
        continue
      n = int(batch["num_frames"][row])
      change_points = outputs.get("change_points")
      raw = (np.flatnonzero(change_points[row, :n]) if change_points is not None else np.zeros([0], np.int64))
      detections, pruned = ahlm_inference.localize(
          np.asarray(batch["features"][row, :n]), np.asarray(outputs["cas_logits"][row, :n]),
          np.asarray(outputs["attention"][row, :n]), np.asarray(outputs["video_probs"][row]), raw, settings)
      result = {"detections": detections}
      if change_points is not None:
        result.update(change_points=pruned, raw_change_points=raw)
      results.append(result)
    return results


def make_method(config: ml_collections.ConfigDict, label_names: tuple[str, ...]) -> Ahlm:
  """AHLM for data with action classes `label_names` (the background class is added by the model)."""
  precision.compute_dtype(config)  # A bad value fails here, before training.
  return Ahlm(config=config, num_classes=len(label_names))
