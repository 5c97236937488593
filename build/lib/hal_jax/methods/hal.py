"""HAL (Huang et al., CVPR 2026): hierarchical action latents and a smooth transition constraint on top of ATBA.

Spec: ../shared/specs/hal_atba.md §7 (and §13 for the project's choices where HAL's code is unknown). HAL is ATBA
(`hal_jax.methods.atba`: encoder, pseudo-labels, ATBA losses, inference, all reused, not copied) plus a variational
branch at encoder layers ``z_layer`` (fast visual latent v) and ``z_layer + 1`` (slow action latent c), see
`hal_jax.models.latent.VariationalTap`. Losses (spec §8.1):

  stage 0:  L_vid + w_rec L_rec + w_kl L_KL
  stage 1:  L_vid + L_fr + 0.1 L_glc + w_rec L_rec + w_kl L_KL + w_s L_s

* L_rec = Σ_taps mean over valid frames and dims of (x̂ − H⁽ℓ⁾)²;
* L_KL  = Σ_taps mean over valid frames of KL(q ‖ N(0, I)) summed over latent dims;
* L_s   = mean over videos of  hinge · ReLU(S_c − S_v) + δ S_c, where S_x = Σ_t softmax_t(Δx̄)_t Δx̄_t is a soft maximum
  of the frame-to-frame change Δx̄_t = ‖x̄_{t+1} − x̄_t‖₂ of the L2-normalised latent: the action latent must not
  change faster than the visual latent (hinge) and should change little overall (δ).

Inference skips the branch: predictions depend only on the main stream, exactly like ATBA's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from hal_jax import errors
from hal_jax import precision
from hal_jax.methods import atba
from hal_jax.methods import base
from hal_jax.models import latent
from hal_jax.models import pyramid_transformer as pt

TASK = base.Task.SEGMENTATION

_NORM_EPS = 1e-12


class HalNetwork(nn.Module):
  """ATBA's encoder (submodule ``encoder``) plus HAL's two variational taps (``tap_visual``, ``tap_action``)."""

  encoder: pt.PyramidTransformer
  z_layer: int
  stop_gradient_target: bool = False

  @nn.compact
  def __call__(self, features: jax.Array, frame_mask: jax.Array, *, deterministic: bool = True,
               latent_rng: jax.Array | None = None) -> tuple[pt.EncoderOutput, tuple[latent.TapOutput, ...]]:
    """Encodes; with `latent_rng` also runs both taps (training), otherwise only the main stream.

    Args:
      features: [batch, T, D_in]; frame_mask: [batch, T] bool.
      deterministic: no dropout when True.
      latent_rng: key of the reparameterisation noise; None skips the variational branch.
    """
    outputs = self.encoder(features, frame_mask, deterministic=deterministic, return_layer_states=True)
    if latent_rng is None:
      return outputs, ()
    taps = []
    for i, (name, layer) in enumerate((("tap_visual", self.z_layer), ("tap_action", self.z_layer + 1))):
      tap = latent.VariationalTap(
          radius=pt.layer_radius(layer), num_classes=self.encoder.num_classes, num_heads=self.encoder.num_heads,
          dropout_rate=self.encoder.dropout_rate, min_block_size=self.encoder.min_block_size,
          stop_gradient_target=self.stop_gradient_target, name=name)
      taps.append(tap(outputs.layer_inputs[layer], outputs.layer_outputs[layer], frame_mask,
                      jax.random.fold_in(latent_rng, i), deterministic))
    return outputs, tuple(taps)


def _unit(x: jax.Array) -> jax.Array:
  """x / max(‖x‖, eps) along the last axis, with a finite gradient at x = 0."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), _NORM_EPS**2))


def _safe_norm(x: jax.Array) -> jax.Array:
  """‖x‖₂ along the last axis with gradient 0 (not NaN) at x = 0."""
  squared = jnp.sum(x * x, axis=-1)
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def soft_max_change(latents: jax.Array, frame_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """S = Σ_t softmax_t(Δ)_t Δ_t over the valid steps of each video, and which videos have a step.

  Args:
    latents: [B, T, d].
    frame_mask: [B, T] bool (valid frames are a prefix).

  Returns:
    S: [B]; has_step: [B] bool (at least two valid frames).
  """
  unit = _unit(latents)
  change = _safe_norm(unit[:, 1:] - unit[:, :-1])  # [B, T-1]
  step_mask = frame_mask[:, 1:] & frame_mask[:, :-1]
  has_step = jnp.any(step_mask, axis=1)
  shift = jax.lax.stop_gradient(jnp.max(jnp.where(step_mask, change, 0.0), axis=1, keepdims=True))
  weights = jnp.where(step_mask, jnp.exp(change - shift), 0.0)  # Softmax over the valid steps only.
  weights = weights / jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1e-30)
  return jnp.sum(weights * change, axis=1), has_step


def smooth_transition_loss(visual: jax.Array, action: jax.Array, frame_mask: jax.Array, batch_mask: jax.Array, *,
                           delta: float, hinge: bool = True) -> tuple[jax.Array, jax.Array]:
  """(sum over videos, number of videos) of HAL's L_s (module docstring).

  Args:
    visual: [B, T, d] fast latents v; action: [B, T, d] slow latents c.
    frame_mask: [B, T] bool; batch_mask: [B] bool.
    delta: weight δ of the global action-change term.
    hinge: include ReLU(S_c − S_v) (the ablation "+δ term only" drops it).
  """
  s_visual, has_step = soft_max_change(visual, frame_mask)
  s_action, _ = soft_max_change(action, frame_mask)
  per_video = delta * s_action
  if hinge:
    per_video = per_video + jax.nn.relu(s_action - s_visual)
  counted = batch_mask & has_step
  return jnp.sum(jnp.where(counted, per_video, 0.0)), jnp.sum(counted).astype(per_video.dtype)


def tap_losses(taps: tuple[latent.TapOutput, ...], frame_weight: jax.Array) -> dict[str, tuple[jax.Array, jax.Array]]:
  """(sum, count) of L_rec and L_KL summed over the taps, each tap a mean over the weighted frames.

  Args:
    taps: the tap outputs, [B, T, d] each.
    frame_weight: [B, T] float, 1 on valid frames of real videos.
  """
  count = jnp.maximum(jnp.sum(frame_weight), 1.0)
  rec = sum(jnp.sum(jnp.mean(jnp.square(t.reconstruction - t.target), axis=-1) * frame_weight) / count for t in taps)
  kl = sum(jnp.sum(latent.gaussian_kl(t.mean, t.log_var) * frame_weight) / count for t in taps)
  one = jnp.ones((), jnp.float32)
  return {"reconstruction": (rec, one), "kl": (kl, one)}


@dataclasses.dataclass(frozen=True)
class Hal(atba.Atba):
  """HAL: `atba.Atba` plus the variational branch (module docstring). Build it with `make_method`."""
  name: str = "hal"

  @property
  def network(self) -> HalNetwork:
    return HalNetwork(encoder=self.model, z_layer=self.config.z_layer,
                      stop_gradient_target=self.config.stop_gradient_target)

  def init(self, rng: jax.Array, batch: base.Batch) -> Any:
    params_rng, latent_rng = jax.random.split(rng)
    return self.network.init({"params": params_rng}, batch["features"], batch["frame_mask"], deterministic=True,
                             latent_rng=latent_rng)["params"]

  def forward(self, params: Any, batch: base.Batch, rng: jax.Array | None):
    """The main stream only (as in inference); `rng` enables dropout."""
    rngs = None if rng is None else {"dropout": rng}
    outputs, _ = precision.apply(self.network, params, batch["features"], batch["frame_mask"],
                                 dtype=self.compute_dtype, deterministic=rng is None, rngs=rngs)
    return outputs

  def loss_with_outputs(self, params: Any, batch: base.Batch, rng: jax.Array,
                        stage: int) -> tuple[jax.Array, base.Aux, pt.EncoderOutput]:
    c = self.config
    dropout_rng, latent_rng = jax.random.split(rng)
    outputs, taps = precision.apply(self.network, params, batch["features"], batch["frame_mask"],
                                    dtype=self.compute_dtype, deterministic=False, latent_rng=latent_rng,
                                    rngs={"dropout": dropout_rng})
    loss, aux = self.atba_losses(outputs, batch, stage)
    frame_weight = (batch["frame_mask"] & batch["batch_mask"][:, None]).astype(jnp.float32)
    latent_terms = tap_losses(taps, frame_weight)
    loss += c.rec_weight * latent_terms["reconstruction"][0] + c.kl_weight * latent_terms["kl"][0]
    aux.update(latent_terms)
    if stage >= 1:
      visual, action = (t.mean if c.smooth_on_mean else t.sample for t in taps)
      s_sum, s_count = smooth_transition_loss(visual, action, batch["frame_mask"], batch["batch_mask"],
                                              delta=c.smooth_delta, hinge=c.smooth_hinge)
      loss += c.smooth_weight * s_sum / jnp.maximum(s_count, 1.0)
      aux["smooth"] = (s_sum, s_count)
    return loss, aux, outputs


def make_method(config: ml_collections.ConfigDict, label_names: tuple[str, ...]) -> Hal:
  """HAL for data with classes `label_names`."""
  if not 0 <= config.z_layer < config.num_layers - 1:
    raise errors.ConfigError("config.z_layer", f"{config.z_layer} needs layers z_layer and z_layer + 1 among "
                                  f"the {config.num_layers} encoder layers")
  precision.compute_dtype(config)  # A bad value fails here, before training.
  atba.check_schedule(config)
  return Hal(config=config, num_classes=len(label_names), background_id=atba.background_id_of(config, label_names))
