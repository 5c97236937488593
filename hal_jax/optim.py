"""Optimizer and learning-rate schedule (ATBA's epoch-level schedule, spec hal_atba.md §8).

The learning rate is a function of the epoch, set once per epoch as in ATBA's code:

  epochs [0, W)               base · (0.01 + 0.99 · e / (W − 1))      warm-up from 1% of base
  epochs [W, E1)              base
  epochs [E1, E1 + W)         base · (0.1 + 0.9 · (e − E1) / (W − 1)) warm-up again after the stage switch
  epochs [E1 + W, E)          cosine from base to final_factor · base over K = E − W − E1 epochs

with W = `warmup_epochs`, E1 = `stage_epoch` (ATBA's `warm_epc`), E = `num_epochs`. The optimizer is AdamW with
decay on all parameters (PyTorch's decoupled decay), wrapped in `optax.inject_hyperparams` so the jitted step sets
the epoch's rate from the global step; the loop resets the optimizer state at the stage switch.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax


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


def _adam_with_l2(learning_rate, b1, b2, eps, weight_decay) -> optax.GradientTransformation:
  """Adam with weight decay added to the gradient (PyTorch's ``Adam(weight_decay=...)``, "L2" decay)."""
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam (β = 0.9, 0.999; ε = 1e-8) with an injectable learning rate and decay on every parameter.

  Decoupled decay (AdamW, ATBA/HAL) by default; ``config.coupled_weight_decay = True`` adds the decay to the gradient
  instead (PyTorch's Adam with weight_decay, as AHLM's paper uses).
  """
  optimizer = _adam_with_l2 if config.get("coupled_weight_decay", False) else optax.adamw
  return optax.inject_hyperparams(optimizer)(
      learning_rate=config.learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=config.weight_decay)


def learning_rate_for_config(config: ml_collections.ConfigDict, epoch: jnp.ndarray | int) -> jnp.ndarray:
  """`epoch_learning_rate` with the config's settings."""
  return epoch_learning_rate(
      epoch, base_lr=config.learning_rate, warmup_epochs=config.warmup_epochs, stage_epoch=config.stage_epoch,
      num_epochs=config.num_epochs, final_factor=config.final_lr_factor)
