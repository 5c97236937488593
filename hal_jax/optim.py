"""The optimizer: Adam with an injectable learning rate and weight decay on every parameter.

The learning rate is the method's (`Method.learning_rate(epoch)`, set once per epoch inside the jitted step through
`optax.inject_hyperparams`); `constant_learning_rate` serves methods whose rate never changes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def constant_learning_rate(base_lr: float) -> jax.Array:
  """`base_lr` as the float32 scalar the train step sets."""
  return jnp.asarray(base_lr, jnp.float32)


def _adam_with_l2(learning_rate, b1, b2, eps, weight_decay) -> optax.GradientTransformation:
  """Adam with weight decay added to the gradient (PyTorch's ``Adam(weight_decay=...)``, "L2" decay)."""
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam (β = 0.9, 0.999; ε = 1e-8) with an injectable learning rate and decay on every parameter.

  Decoupled decay (AdamW) by default; ``config.coupled_weight_decay = True`` adds the decay to the gradient instead
  (PyTorch's Adam with weight_decay).
  """
  optimizer = _adam_with_l2 if config.get("coupled_weight_decay", False) else optax.adamw
  return optax.inject_hyperparams(optimizer)(
      learning_rate=config.learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=config.weight_decay)
