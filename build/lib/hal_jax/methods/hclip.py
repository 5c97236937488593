"""H-CLIP (Zhang et al.): hierarchical video recognition by contrast of clips with class texts, level by level.

Only the paper's abstract is available; this is the project's own design, spec ../shared/specs/hclip.md §3-§6
(network: `hal_jax.models.hclip`). Losses over the valid clips of a batch (masked means):

  L = Σ_l CE(p^l, y^l) + w_hc Σ_{l>=2} L_hc^l,     L_hc^l = -log Σ_{j: parent(j) = y^{l-1}} p^l_j

with L_hc in log space, ``-logsumexp(log p^l over the children of the true parent)``. Inference (`predict`, all on
device, no Python loop over clips):

* ``filtered`` (the default): top-down: ĉ^1 = argmax p^1, then ĉ^l = the arg-max of p^l among the children of ĉ^{l-1};
* ``flat``: the arg-max of every level on its own (may break the taxonomy);
* ``joint``: the path maximising Σ_l log p^l over all consistent paths (one per leaf).

The taxonomy (levels, parent maps, class texts) comes with the data (``label_names.taxonomy``, see
`hal_jax.data.recognition_formats.TaxonomyNames`). With class texts every parameter is class-agnostic, so a trained
model predicts on a taxonomy with new classes (zero-shot); without them it learns one embedding per class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hal_jax import errors
from hal_jax.data import recognition_formats
from hal_jax.methods import atba
from hal_jax.methods import base
from hal_jax.models import hclip as hclip_model

TASK = base.Task.RECOGNITION


def log_softmax_levels(logits: Sequence[jax.Array]) -> list[jax.Array]:
  return [jax.nn.log_softmax(l, axis=-1) for l in logits]


def children_mask(parents: np.ndarray, parent_class: jax.Array) -> jax.Array:
  """[B, N_l] bool: which classes of a level have the parent `parent_class` [B] (parents: [N_l])."""
  return jnp.asarray(parents)[None, :] == parent_class[:, None]


def consistency_loss(log_probs: jax.Array, parents: np.ndarray, true_parent: jax.Array) -> jax.Array:
  """[B] L_hc = -log Σ_{j: parent(j) = y} p_j, in log space.

  Args:
    log_probs: [B, N_l] log p^l. parents: [N_l] parent ids. true_parent: [B] y^{l-1}.
  """
  return -jax.nn.logsumexp(jnp.where(children_mask(parents, true_parent), log_probs, -jnp.inf), axis=-1)


def top_down(log_probs: Sequence[jax.Array], parents: Sequence[np.ndarray]) -> jax.Array:
  """[B, L] int32 filtered paths: the arg-max of each level among the children of the level above's choice."""
  chosen = [jnp.argmax(log_probs[0], axis=-1)]
  for level in range(1, len(log_probs)):
    candidates = children_mask(parents[level], chosen[-1])
    chosen.append(jnp.argmax(jnp.where(candidates, log_probs[level], -jnp.inf), axis=-1))
  return jnp.stack(chosen, axis=1).astype(jnp.int32)


def joint_path(log_probs: Sequence[jax.Array], ancestors: np.ndarray) -> jax.Array:
  """[B, L] int32: the consistent path with the largest Σ_l log p^l (ancestors: [N_L, L], each leaf's path)."""
  ancestors = jnp.asarray(ancestors)
  scores = sum(jnp.take(lp, ancestors[:, level], axis=1) for level, lp in enumerate(log_probs))  # [B, N_L]
  return jnp.take(ancestors, jnp.argmax(scores, axis=-1), axis=0).astype(jnp.int32)


def warmup_cosine(epoch: jax.Array, *, base_lr: float, warmup_epochs: float, num_epochs: int,
                  final_factor: float) -> jax.Array:
  """float32 rate at fractional `epoch`: linear from 0 to `base_lr` over `warmup_epochs`, then a cosine down to
  `final_factor * base_lr` at `num_epochs`."""
  epoch = jnp.asarray(epoch, jnp.float32)
  warmup = base_lr * epoch / max(warmup_epochs, 1e-9)
  progress = jnp.clip((epoch - warmup_epochs) / max(num_epochs - warmup_epochs, 1e-9), 0.0, 1.0)
  final = final_factor * base_lr
  cosine = final + 0.5 * (base_lr - final) * (1.0 + jnp.cos(jnp.pi * progress))
  return jnp.where(epoch < warmup_epochs, warmup, cosine).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class HClip:
  """H-CLIP for one taxonomy (module docstring). Build it with `make_method`."""
  config: ml_collections.ConfigDict
  taxonomy: recognition_formats.Taxonomy
  name: str = "hclip"

  @property
  def network(self) -> hclip_model.HClipNetwork:
    c, taxonomy = self.config, self.taxonomy
    text_free = taxonomy.text is None
    return hclip_model.HClipNetwork(
        num_levels=taxonomy.num_levels, embed_dim=c.embed_dim if text_free else taxonomy.text[0].shape[1],
        width=c.hidden_dim, num_layers=c.num_layers, num_heads=c.num_heads, mlp_dim=c.mlp_dim,
        dropout_rate=c.dropout, use_units=c.use_units, use_text_conditioning=c.use_text_conditioning,
        learned_sizes=taxonomy.sizes if text_free else None, logit_scale_init=c.logit_scale_init,
        logit_scale_max=c.logit_scale_max)

  def _texts(self):
    return None if self.taxonomy.text is None else [jnp.asarray(t) for t in self.taxonomy.text]

  def stage_for_epoch(self, epoch: int) -> int:
    del epoch
    return 0

  @property
  def per_step_schedule(self) -> bool:
    return self.config.warmup_per_step

  def learning_rate(self, epoch: jax.Array) -> jax.Array:
    """Warm-up then cosine to ``final_lr_factor`` of the rate.

    ``warmup_per_step`` (spec §5): `epoch` is fractional (step / steps per epoch, hal_jax.methods.base); the rate
    rises linearly from 0 over `warmup_epochs`, then follows a cosine over the remaining epochs. Otherwise: ATBA's
    epoch-level schedule with no second stage (`stage_epoch = 0`): the warm-up epochs at 1% of the rate.
    """
    c = self.config
    if not c.warmup_per_step:
      return atba.epoch_learning_rate(epoch, base_lr=c.learning_rate, warmup_epochs=c.warmup_epochs,
                                      stage_epoch=c.stage_epoch, num_epochs=c.num_epochs,
                                      final_factor=c.final_lr_factor)
    return warmup_cosine(epoch, base_lr=c.learning_rate, warmup_epochs=c.warmup_epochs, num_epochs=c.num_epochs,
                         final_factor=c.final_lr_factor)

  def init(self, rng: jax.Array, batch: base.Batch) -> Any:
    return self.network.init({"params": rng}, batch["features"], batch["frame_mask"], self.taxonomy.parents,
                             self._texts())["params"]

  def logits(self, params: Any, batch: base.Batch, rng: jax.Array | None = None) -> list[jax.Array]:
    """[B, N_l] per level; `rng` enables dropout."""
    rngs = None if rng is None else {"dropout": rng}
    return self.network.apply({"params": params}, batch["features"], batch["frame_mask"], self.taxonomy.parents,
                              self._texts(), deterministic=rng is None, rngs=rngs)

  def loss(self, params: Any, batch: base.Batch, rng: jax.Array, stage: int) -> tuple[jax.Array, base.Aux]:
    del stage
    log_probs = log_softmax_levels(self.logits(params, batch, rng))
    labels = batch["labels"]
    weight = batch["batch_mask"].astype(jnp.float32)
    count = jnp.sum(weight)
    denominator = jnp.maximum(count, 1.0)
    # Padding clips carry label -1: clip it to a valid index; their weight is 0.
    safe = jnp.maximum(labels, 0)
    aux, total = {}, 0.0
    for level, lp in enumerate(log_probs):
      ce = -jnp.take_along_axis(lp, safe[:, level:level + 1], axis=1)[:, 0]
      ce_sum = jnp.sum(jnp.where(weight > 0, ce, 0.0))
      total = total + ce_sum / denominator
      aux[f"ce_l{level + 1}"] = (ce_sum, count)
      if level:
        hc = consistency_loss(lp, self.taxonomy.parents[level], safe[:, level - 1])
        hc_sum = jnp.sum(jnp.where(weight > 0, hc, 0.0))
        total = total + self.config.hc_weight * hc_sum / denominator
        aux[f"hc_l{level + 1}"] = (hc_sum, count)
    return total, aux

  def predict(self, params: Any, batch: base.Batch) -> dict[str, jax.Array]:
    """``filtered`` / ``flat`` / ``joint`` [B, L] int32 paths and ``log_probs_l<l>`` [B, N_l] per level."""
    log_probs = log_softmax_levels(self.logits(params, batch))
    outputs = {"filtered": top_down(log_probs, self.taxonomy.parents),
               "flat": jnp.stack([jnp.argmax(lp, axis=-1) for lp in log_probs], axis=1).astype(jnp.int32),
               "joint": joint_path(log_probs, self.taxonomy.ancestors())}
    outputs.update({f"log_probs_l{level + 1}": lp for level, lp in enumerate(log_probs)})
    return outputs


def make_method(config: ml_collections.ConfigDict, label_names: tuple[str, ...]) -> HClip:
  """H-CLIP for recognition data whose leaf names `label_names` carry their taxonomy."""
  taxonomy = getattr(label_names, "taxonomy", None)
  if taxonomy is None:
    raise errors.ConfigError("config.method", "hal_jax.methods.hclip needs recognition data (a class taxonomy)")
  if config.hidden_dim % config.num_heads:
    raise errors.ConfigError("config.num_heads", f"{config.num_heads} does not divide hidden_dim "
                             f"{config.hidden_dim}")
  return HClip(config=config, taxonomy=taxonomy)
