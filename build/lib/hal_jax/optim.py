"""The optimizer: Adam with an injectable learning rate and weight decay on every parameter but the exempt ones.

The learning rate is the method's (`Method.learning_rate(epoch)`, set inside the jitted step through
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


def decay_mask(exempt: str):
  """params -> bool pytree: True where weight decay applies, i.e. on every parameter whose own name (the last key of
  its path) is not one of the comma-separated `exempt` names (e.g. "bias,scale": biases and LayerNorm scales)."""
  names = {name for name in exempt.split(",") if name}

  def mask(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) not in names, params)

  return mask


def _adam_with_l2(learning_rate, b1, b2, eps, weight_decay, mask=None) -> optax.GradientTransformation:
  """Adam with weight decay added to the gradient (PyTorch's ``Adam(weight_decay=...)``, "L2" decay)."""
  return optax.chain(optax.add_decayed_weights(weight_decay, mask),
                     optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam (β = 0.9, 0.999; ε = 1e-8) with an injectable learning rate and weight decay.

  Decoupled decay (AdamW) by default; ``config.coupled_weight_decay = True`` adds the decay to the gradient instead
  (PyTorch's Adam with weight_decay). ``config.weight_decay_exempt`` (comma-separated parameter names, default none)
  takes parameters out of the decay (`decay_mask`).
  """
  optimizer = _adam_with_l2 if config.get("coupled_weight_decay", False) else optax.adamw
  exempt = config.get("weight_decay_exempt", "")
  return optax.inject_hyperparams(optimizer, static_args="mask")(
      learning_rate=config.learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=config.weight_decay,
      mask=decay_mask(exempt) if exempt else None)
