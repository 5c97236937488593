"""AHLM's change-point test: KL to the static prior vs. KL to the changed prior, with a dynamic threshold.

Spec: ../shared/specs/ahlm.md section 2.1-2.2 (paper Eqs. 4-8). At step t the level-2 posterior q of the next
snippet is compared with two priors: the static prior p_st (the level-2 state is kept) and the change prior p_ch
(the level-2 transition has run once). A change is declared when

  D_KL(q || p_st) > β_t · D_KL(q || p_ch),

and the threshold moves by α after every decision: up after a change, down otherwise (paper Eq. 8), clipped to
[β_min, β_max] = [0.15, 0.9] (the paper's range; clipping and β_0 = 0.9 are project choices, spec section 10 #6).

Conventions shared with `hal_jax.models.hierarchical_vae`: position t of a [T] sequence holds the test "is snippet t
the first snippet of a new part"; position 0 is never a change (nothing precedes it) and leaves β unchanged, and so
do masked (padding) positions. Everything here is pure jnp, so it jits and vmaps over videos.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hal_jax import precision


@dataclasses.dataclass(frozen=True)
class ChangeRule:
  """The dynamic-threshold rule of paper Eqs. 7-8.

  Attributes:
    alpha: α, the threshold step (0.15 in the paper).
    beta_min: lower bound of β (0.15).
    beta_max: upper bound of β (0.9).
    beta_init: β at the first snippet of every video (0.9).
  """
  alpha: float = 0.15
  beta_min: float = 0.15
  beta_max: float = 0.9
  beta_init: float = 0.9

  def __post_init__(self):
    if not 0.0 <= self.beta_min <= self.beta_init <= self.beta_max:
      raise ValueError(f"need 0 <= beta_min <= beta_init <= beta_max, got {self}")
    if self.alpha < 0.0:
      raise ValueError(f"alpha must be >= 0, got {self.alpha}")


def diagonal_gaussian_kl(mu_q: jax.Array, sigma_q: jax.Array, mu_p: jax.Array, sigma_p: jax.Array) -> jax.Array:
  """D_KL(N(mu_q, sigma_q²) || N(mu_p, sigma_p²)) of diagonal Gaussians, summed over the last axis.

  Closed form (spec section 3): sum_i log(σ_p/σ_q) + (σ_q² + (μ_q - μ_p)²) / (2 σ_p²) - 1/2.

  Args:
    mu_q, sigma_q, mu_p, sigma_p: [..., L] broadcastable; sigmas > 0.
  Returns:
    [...] KL in nats, float32 whatever the inputs' dtype (the change decision compares two of them).
  """
  mu_q, sigma_q, mu_p, sigma_p = precision.float32((mu_q, sigma_q, mu_p, sigma_p))
  variance_ratio = jnp.square(sigma_q / sigma_p)
  mean_term = jnp.square((mu_q - mu_p) / sigma_p)
  return 0.5 * jnp.sum(variance_ratio + mean_term - 1.0 - jnp.log(variance_ratio), axis=-1)


def standard_normal_kl(mu_q: jax.Array, sigma_q: jax.Array) -> jax.Array:
  """D_KL(N(mu_q, sigma_q²) || N(0, I)) summed over the last axis: [..., L] -> [...]."""
  return diagonal_gaussian_kl(mu_q, sigma_q, jnp.zeros_like(mu_q), jnp.ones_like(sigma_q))


def decide(rule: ChangeRule, beta: jax.Array, kl_static: jax.Array, kl_change: jax.Array,
           valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One step of the rule, elementwise (no gradient flows through the decision).

  Args:
    rule: α and the bounds of β.
    beta: [...] the current threshold β_t.
    kl_static: [...] D_KL(q || p_st).
    kl_change: [...] D_KL(q || p_ch).
    valid: [...] bool; where False nothing is decided (no change, β kept).
  Returns:
    change: [...] bool, D_st > β_t D_ch on valid entries.
    next_beta: [...] β_{t+1} = clip(β_t ± α, β_min, β_max), or β_t where not valid.
  """
  kl_static, kl_change = jax.lax.stop_gradient(kl_static), jax.lax.stop_gradient(kl_change)
  change = valid & (kl_static > beta * kl_change)
  moved = jnp.clip(beta + jnp.where(change, rule.alpha, -rule.alpha), rule.beta_min, rule.beta_max)
  return change, jnp.where(valid, moved, beta).astype(beta.dtype)


def detect(rule: ChangeRule, kl_static: jax.Array, kl_change: jax.Array,
           mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Runs the rule over given KL sequences, one `lax.scan` per video, vmapped over the batch.

  Used where the KLs do not depend on earlier decisions (tests, analysis of stored KLs); inside the hierarchical VAE
  they do, so the VAE calls `decide` from its own scan.

  Args:
    rule: the rule.
    kl_static: [B, T] D_KL(q || p_st) of the test at each snippet (position 0 is ignored).
    kl_change: [B, T] D_KL(q || p_ch).
    mask: [B, T] bool, False on padding.
  Returns:
    changes: [B, T] bool, True where a new part starts (never at position 0 or on padding).
    betas: [B, T] float32, the threshold each test used (β_0 at position 0).
  """
  def one_video(kl_st: jax.Array, kl_ch: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    def step(beta, inputs):
      st, ch, ok = inputs
      change, next_beta = decide(rule, beta, st, ch, ok)
      return next_beta, (change, beta)

    decidable = valid & (jnp.arange(valid.shape[0]) > 0)
    beta0 = jnp.asarray(rule.beta_init, jnp.float32)
    _, (changes, betas) = jax.lax.scan(step, beta0, (kl_st.astype(jnp.float32), kl_ch.astype(jnp.float32),
                                                     decidable))
    return changes, betas

  return jax.vmap(one_video)(kl_static, kl_change, mask)
