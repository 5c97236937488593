"""Gaussian latent pieces: the HAL variational tap, reparameterisation, KL to N(0, I), MLP decoders.

HAL (spec hal_atba.md §7.3, the project's concrete design) attaches a variational branch to two consecutive encoder
layers ℓ (the fast visual latent at ``z_layer``, the slow action latent at ``z_layer + 1``). At tap layer ℓ with input
tokens H⁽ℓ⁾ and output H⁽ℓ⁺¹⁾ (frame tokens only):

  μ_ℓ        = H⁽ℓ⁺¹⁾                          the main encoder layer is the mean; the main stream goes on with μ
  log σ²_ℓ   = U_ℓ(Var_ℓ(H⁽ℓ⁾))                 Var_ℓ: an extra encoder layer (same architecture and mask, own weights);
                                               U_ℓ: d × d linear initialised to zero, so σ = 1 at the start
  z_ℓ        = μ_ℓ + exp(½ log σ²_ℓ) ⊙ ε        ε ~ N(0, I), fresh every step
  x̂_ℓ        = Dec_ℓ(z_ℓ)                      Linear → LeakyReLU(0.2) → Linear, reconstructing H⁽ℓ⁾

The branch feeds only auxiliary losses; inference never runs it.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from hal_jax.models import banded_attention as banded
from hal_jax.models import pyramid_transformer as pt


def reparameterize(rng: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """z = μ + exp(½ log σ²) ε with ε ~ N(0, I); same shape as `mean`."""
  noise = jax.random.normal(rng, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * log_var) * noise


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(μ, σ²) ‖ N(0, I)) summed over the last axis: ½ Σ (μ² + σ² − log σ² − 1).

  Args:
    mean, log_var: [..., d].

  Returns:
    [...] non-negative.
  """
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_var) - log_var - 1.0, axis=-1)


class MlpDecoder(nn.Module):
  """Linear(d → d) → LeakyReLU(0.2) → Linear(d → out_dim), PyTorch-default initialisation."""

  out_dim: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """Decodes [..., d] latents to [..., out_dim]."""
    hidden = z.shape[-1]
    h = nn.Dense(hidden, kernel_init=pt.pytorch_default_kernel_init, bias_init=pt.pytorch_default_bias_init(hidden),
                 name="hidden")(z)
    h = nn.leaky_relu(h, negative_slope=0.2)
    return nn.Dense(self.out_dim, kernel_init=pt.pytorch_default_kernel_init,
                    bias_init=pt.pytorch_default_bias_init(hidden), name="output")(h)


class TapOutput(NamedTuple):
  """One variational tap's tensors, frame tokens only.

  Attributes:
    mean: [batch, T, d] μ (the main layer's output).
    log_var: [batch, T, d] log σ².
    sample: [batch, T, d] z.
    reconstruction: [batch, T, d] x̂ = Dec(z).
    target: [batch, T, d] the tap layer's input H⁽ℓ⁾ that x̂ reconstructs.
  """
  mean: jax.Array
  log_var: jax.Array
  sample: jax.Array
  reconstruction: jax.Array
  target: jax.Array


class VariationalTap(nn.Module):
  """HAL's variational branch at one encoder layer (see the module docstring).

  Attributes:
    radius: the tap layer's attention radius (the variance layer uses the same mask).
    num_classes: C, the number of class tokens in front of the frames.
    num_heads, dropout_rate, min_block_size: as in the tap layer.
    stop_gradient_target: reconstruct a detached H⁽ℓ⁾ (spec: not detached; a config switch).
  """

  radius: int
  num_classes: int
  num_heads: int = 1
  dropout_rate: float = 0.1
  min_block_size: int = banded.DEFAULT_MIN_BLOCK_SIZE
  stop_gradient_target: bool = False

  @nn.compact
  def __call__(self, layer_input: jax.Array, layer_output: jax.Array, frame_mask: jax.Array, rng: jax.Array,
               deterministic: bool = True) -> TapOutput:
    """Runs the branch.

    Args:
      layer_input: [batch, C + T, d] tokens entering the tap layer (class tokens first).
      layer_output: [batch, C + T, d] tokens the tap layer produced.
      frame_mask: [batch, T] bool.
      rng: key for the reparameterisation noise.
      deterministic: no dropout in the variance layer when True.
    """
    hidden = layer_input.shape[-1]
    variance_tokens = pt.EncoderLayer(self.radius, self.num_heads, dropout_rate=self.dropout_rate,
                                      min_block_size=self.min_block_size, name="variance_layer")(
                                          layer_input, frame_mask, deterministic)
    log_var = nn.Dense(hidden, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                       name="log_var")(variance_tokens[:, self.num_classes:])
    mean = layer_output[:, self.num_classes:]
    sample = reparameterize(rng, mean, log_var)
    target = layer_input[:, self.num_classes:]
    if self.stop_gradient_target:
      target = jax.lax.stop_gradient(target)
    reconstruction = MlpDecoder(hidden, name="decoder")(sample)
    return TapOutput(mean=mean, log_var=log_var, sample=sample, reconstruction=reconstruction, target=target)
