"""Mixed precision: the `compute_dtype` policy every method follows.

`config.compute_dtype` is "float32" (the default) or "bfloat16". With bfloat16:

* parameters and the optimizer state stay float32 (the loop never sees another dtype);
* a method casts its parameters and input features to the compute dtype *inside* its loss / predict
  (`cast(params, dtype)`), so matmuls and activations run in bfloat16 while the gradients, being the transpose of
  that cast, arrive in float32;
* numerically sensitive parts run in float32: attention softmaxes (`softmax_float32`), the model outputs that feed
  losses, the alignment's dynamic programme, k-means distances and every metric (`float32(outputs)` right after the
  model), so log-sum-exps, cross-entropies, KLs and the losses' sums are float32.

With float32, `cast` and `float32` return their input unchanged (the same objects), so the default computation is the
one from before this module existed, bit for bit.

A new method follows the same convention: `dtype = precision.compute_dtype(config)` once, then
`precision.float32(model.apply({"params": precision.cast(params, dtype)}, precision.cast(features, dtype), ...))`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from hal_jax import errors

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
  """The dtype of `config.compute_dtype` (float32 when the config has no such key).

  Raises:
    errors.ConfigError: for any other value.
  """
  name = config.get("compute_dtype", "float32")
  if name not in COMPUTE_DTYPES:
    raise errors.ConfigError("config.compute_dtype", f"{name!r} is not one of {sorted(COMPUTE_DTYPES)}")
  return jnp.dtype(COMPUTE_DTYPES[name])


def _is_float(x: Any) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def cast(tree: Any, dtype: jnp.dtype) -> Any:
  """Floating-point leaves of `tree` in `dtype` (integer and bool leaves as they are).

  With float32 the tree is returned as it is, not copied: the float32 policy adds no operation at all.
  """
  if jnp.dtype(dtype) == jnp.float32:
    return tree
  return jax.tree.map(lambda x: x.astype(dtype) if _is_float(x) and x.dtype != dtype else x, tree)


def float32(tree: Any) -> Any:
  """Floating-point leaves of `tree` in float32 (for losses, the alignment, k-means and metrics); leaves that are
  float32 already are returned as they are."""
  return jax.tree.map(lambda x: x.astype(jnp.float32) if _is_float(x) and x.dtype != jnp.float32 else x, tree)


def softmax_float32(logits: jax.Array, axis: int = -1) -> jax.Array:
  """Softmax computed in float32 (max, exp, sum), returned in the logits' dtype."""
  if logits.dtype == jnp.float32:
    return jax.nn.softmax(logits, axis=axis)
  return jax.nn.softmax(logits.astype(jnp.float32), axis=axis).astype(logits.dtype)


def apply(module: Any, params: Any, *args: Any, dtype: jnp.dtype, **kwargs: Any) -> Any:
  """`module.apply({"params": params}, *args, **kwargs)` under the policy: parameters and floating-point positional
  inputs in `dtype`, floating-point outputs in float32."""
  return float32(module.apply({"params": cast(params, dtype)}, *cast(args, dtype), **kwargs))
