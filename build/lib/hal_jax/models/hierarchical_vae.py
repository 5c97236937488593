"""AHLM's DFC branch: a two-level hierarchical VAE with GRU transitions and change-point resets.

Spec: ../shared/specs/ahlm.md section 2.1 (the paper) and 2.2 (the concrete network, project choices). Per snippet
x_t (all snippet-wise MLPs run for all t at once, outside the time loop):

  f_t = H-Enc(x_t)                 two FC layers of `encoder_dim` with ReLU
  u_t = H-Dec(f_t)                 two FC layers of `encoder_dim` with ReLU (decodes f_t, not a latent)
  x̂_t = g([v¹_t; v²_t])            FC, FC (ReLU), linear back to D: p(x_t | v¹_t, v²_t) = N(x̂_t, I)

and the sequential part, one `lax.scan` step per snippet (via `nn.scan`), for t >= 1 (t = 0 starts from h_0 = 0,
draws v²_0 from φ₂([f_0; 0; 0]) with KL to N(0, I), and resets level 1):

  d̃      = GRU₂(v²_{t-1}, d²_{t-1})
  p_st   = π₂([f_{t-1}; d²_{t-1}; u_{t-1}])      static prior (level 2 kept)
  p_ch   = π₂([f_{t-1}; d̃; u_{t-1}])              change prior (level 2 moved on)
  q      = φ₂([f_t; d̃; u_{t-1}])                  level-2 posterior of snippet t
  c_t    = D_KL(q || p_st) > β D_KL(q || p_ch)    (`hal_jax.models.changepoint`, stop-gradient)
  change:    d²_t = d̃, v²_t ~ q, KL²_t = D_KL(q || p_ch), d¹_t = h_0 (the level-1 GRU restarts)
  no change: d²_t = d²_{t-1}, v²_t = v²_{t-1}, KL²_t = 0, d¹_t = GRU₁(v¹_{t-1}, d¹_{t-1})
  p¹_t = π₁([d¹_t; v²_t]),  q¹_t = φ₁([f_t; d¹_t; v²_t]),  v¹_t ~ q¹_t,  KL¹_t = D_KL(q¹_t || p¹_t)

This is the spec's recurrence with its step t -> t+1 written as the step that produces snippet t. Every Gaussian
head is FC(256) + ReLU + FC(2L) with σ = softplus + 1e-4. The first layer of a head is linear in its concatenated
input, so the parts that depend only on f and u are computed for all t before the scan (one [B, T] matmul) and only
the state-dependent parts run inside it. Branches on c_t are `jnp.where` on the carry, so the batch stays one
program; padding steps decide nothing, add no KL and leave the carry unchanged. Samples use the reparameterisation
trick with the noise passed in (`noise=None`: the means, for inference).
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from hal_jax.models import changepoint

# σ = softplus(·) + this (spec section 2.2): keeps every KL finite.
SIGMA_FLOOR = 1e-4


@flax.struct.dataclass
class DFCOutputs:
  """What the DFC branch computes for a batch (zeros / False on padding).

  Attributes:
    reconstruction: [B, T, D] x̂_t, the mean of p(x_t | v¹_t, v²_t).
    kl1: [B, T] D_KL(q¹_t || p¹_t).
    kl2: [B, T] level-2 KL (to N(0, I) at t = 0, to p_ch at a change, 0 otherwise).
    change_points: [B, T] bool, True where snippet t starts a new part (never at t = 0).
    betas: [B, T] the threshold the test at t used.
    kl_static: [B, T] D_KL(q || p_st) of the test at t (stop-gradient; 0 at t = 0 and on padding).
    kl_change: [B, T] D_KL(q || p_ch) of the test at t (stop-gradient).
    v1: [B, T, L] level-1 latents.
    v2: [B, T, L] level-2 latents.
  """
  reconstruction: jax.Array
  kl1: jax.Array
  kl2: jax.Array
  change_points: jax.Array
  betas: jax.Array
  kl_static: jax.Array
  kl_change: jax.Array
  v1: jax.Array
  v2: jax.Array


class GaussianOut(nn.Module):
  """The output layer of a Gaussian head: hidden [..., H] -> (mu, sigma) [..., L], σ = softplus + 1e-4."""
  latent_dim: int

  @nn.compact
  def __call__(self, hidden: jax.Array) -> tuple[jax.Array, jax.Array]:
    out = nn.Dense(2 * self.latent_dim, name="dense")(hidden)
    mu, raw_sigma = jnp.split(out, 2, axis=-1)
    return mu, jax.nn.softplus(raw_sigma) + SIGMA_FLOOR


class Mlp(nn.Module):
  """Fully connected layers of the given widths; ReLU after each one except, if `linear_last`, the last."""
  widths: tuple[int, ...]
  linear_last: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.widths):
      x = nn.Dense(width, name=f"dense{i}")(x)
      if not (self.linear_last and i == len(self.widths) - 1):
        x = nn.relu(x)
    return x


class TransitionStep(nn.Module):
  """One snippet of the DFC recurrence (see the module docstring); scanned over time by `HierarchicalVAE`.

  Carry: (d¹ [B, G], d² [B, G], v¹ [B, L], v² [B, L], β [B]).
  Inputs at snippet t: first [B] bool (t = 0), valid [B] bool, and the f/u-dependent first-layer terms of the heads,
  prior2_context [B, H] (of [f_{t-1}; u_{t-1}]), posterior2_context [B, H] (of [f_t; u_{t-1}]),
  posterior1_context [B, H] (of f_t), and the noise eps2, eps1 [B, L].
  """
  gru_dim: int
  latent_dim: int
  head_dim: int
  rule: changepoint.ChangeRule

  @nn.compact
  def __call__(self, carry: tuple[jax.Array, ...], inputs: tuple[jax.Array, ...]):
    d1, d2, v1, v2, beta = carry
    first, valid, prior2_context, posterior2_context, posterior1_context, eps2, eps1 = inputs
    sg = jax.lax.stop_gradient

    # Level 2: the transition runs once; at t = 0 the state is h_0 instead.
    d_tilde, _ = nn.GRUCell(self.gru_dim, name="gru2")(d2, v2)
    d_tilde = jnp.where(first[:, None], 0.0, d_tilde)
    prior2_state = nn.Dense(self.head_dim, use_bias=False, name="prior2_state")
    prior2_out = GaussianOut(self.latent_dim, name="prior2_out")
    mu_st, sigma_st = prior2_out(nn.relu(prior2_context + prior2_state(d2)))
    mu_ch, sigma_ch = prior2_out(nn.relu(prior2_context + prior2_state(d_tilde)))
    posterior2_state = nn.Dense(self.head_dim, use_bias=False, name="posterior2_state")(d_tilde)
    mu_q2, sigma_q2 = GaussianOut(self.latent_dim, name="posterior2_out")(nn.relu(posterior2_context +
                                                                                 posterior2_state))
    # The decision sees no gradient (spec section 2.2: "both on stop-gradient parameters").
    kl_static = changepoint.diagonal_gaussian_kl(sg(mu_q2), sg(sigma_q2), sg(mu_st), sg(sigma_st))
    kl_change_sg = changepoint.diagonal_gaussian_kl(sg(mu_q2), sg(sigma_q2), sg(mu_ch), sg(sigma_ch))
    decided, next_beta = changepoint.decide(self.rule, beta, kl_static, kl_change_sg, valid & ~first)
    update = decided | first  # t = 0 draws the first level-2 latent, like a change from h_0.
    kl2 = jnp.where(first, changepoint.standard_normal_kl(mu_q2, sigma_q2),
                    jnp.where(update, changepoint.diagonal_gaussian_kl(mu_q2, sigma_q2, mu_ch, sigma_ch), 0.0))
    new_v2 = jnp.where(update[:, None], mu_q2 + sigma_q2 * eps2, v2)
    new_d2 = jnp.where(update[:, None], d_tilde, d2)

    # Level 1: the GRU restarts from h_0 after a change (spec section 2.1, "GRU reset"; weights are kept).
    d1_next, _ = nn.GRUCell(self.gru_dim, name="gru1")(d1, v1)
    new_d1 = jnp.where(update[:, None], 0.0, d1_next)
    state1 = jnp.concatenate([new_d1, new_v2], axis=-1)
    mu_p1, sigma_p1 = GaussianOut(self.latent_dim, name="prior1_out")(
        nn.relu(nn.Dense(self.head_dim, name="prior1_hidden")(state1)))
    posterior1_state = nn.Dense(self.head_dim, use_bias=False, name="posterior1_state")(state1)
    mu_q1, sigma_q1 = GaussianOut(self.latent_dim, name="posterior1_out")(nn.relu(posterior1_context +
                                                                                 posterior1_state))
    new_v1 = mu_q1 + sigma_q1 * eps1
    kl1 = changepoint.diagonal_gaussian_kl(mu_q1, sigma_q1, mu_p1, sigma_p1)

    # Padding: nothing is decided or counted and the carry passes through unchanged.
    keep = valid[:, None]
    new_carry = (jnp.where(keep, new_d1, d1), jnp.where(keep, new_d2, d2), jnp.where(keep, new_v1, v1),
                 jnp.where(keep, new_v2, v2), next_beta)
    zero = jnp.zeros_like(kl1)
    outputs = (jnp.where(keep, new_v1, 0.0), jnp.where(keep, new_v2, 0.0), jnp.where(valid, kl1, zero),
               jnp.where(valid, kl2, zero), decided, beta, jnp.where(valid, kl_static, zero),
               jnp.where(valid, kl_change_sg, zero))
    return new_carry, outputs


def _shift_right(x: jax.Array) -> jax.Array:
  """[B, T, ...] -> x_{t-1} with zeros at t = 0."""
  return jnp.pad(x, [(0, 0), (1, 0)] + [(0, 0)] * (x.ndim - 2))[:, :-1]


class HierarchicalVAE(nn.Module):
  """The DFC network (module docstring). Widths default to the paper's (spec section 2.2).

  Attributes:
    encoder_dim: width of H-Enc, H-Dec and the observation decoder's hidden layers (1024).
    gru_dim: width of both transition GRUs (256).
    latent_dim: L, size of v¹ and v² (64).
    head_dim: hidden width of the prior / posterior heads (256).
    rule: the change-point rule (α, β bounds, β_0).
  """
  encoder_dim: int = 1024
  gru_dim: int = 256
  latent_dim: int = 64
  head_dim: int = 256
  rule: changepoint.ChangeRule = changepoint.ChangeRule()

  @nn.compact
  def __call__(self, features: jax.Array, mask: jax.Array,
               noise: tuple[jax.Array, jax.Array] | None = None) -> DFCOutputs:
    """Runs the DFC over a batch of videos.

    Args:
      features: [B, T, D] snippet features (zero on padding).
      mask: [B, T] bool, True on valid snippets (a prefix of each row).
      noise: (eps2, eps1), each [B, T, L] standard normal, for the level-2 / level-1 samples; None: use the means.
    Returns:
      `DFCOutputs`.
    """
    batch, length, feature_dim = features.shape
    if noise is None:
      zeros = jnp.zeros((batch, length, self.latent_dim), features.dtype)
      noise = (zeros, zeros)
    f = Mlp((self.encoder_dim, self.encoder_dim), name="h_encoder")(features)
    u = Mlp((self.encoder_dim, self.encoder_dim), name="h_decoder")(f)
    f_prev, u_prev = _shift_right(f), _shift_right(u)
    prior2_context = nn.Dense(self.head_dim, name="prior2_context")(jnp.concatenate([f_prev, u_prev], axis=-1))
    posterior2_context = nn.Dense(self.head_dim, name="posterior2_context")(jnp.concatenate([f, u_prev], axis=-1))
    posterior1_context = nn.Dense(self.head_dim, name="posterior1_context")(f)
    first = jnp.broadcast_to(jnp.arange(length) == 0, (batch, length))

    scan = nn.scan(TransitionStep, variable_broadcast="params", split_rngs={"params": False}, in_axes=1,
                   out_axes=1)
    step = scan(gru_dim=self.gru_dim, latent_dim=self.latent_dim, head_dim=self.head_dim, rule=self.rule,
                name="transition")
    hidden = jnp.zeros((batch, self.gru_dim), features.dtype)
    latent = jnp.zeros((batch, self.latent_dim), features.dtype)
    beta = jnp.full((batch,), self.rule.beta_init, jnp.float32)
    _, (v1, v2, kl1, kl2, change_points, betas, kl_static, kl_change) = step(
        (hidden, hidden, latent, latent, beta),
        (first, mask, prior2_context, posterior2_context, posterior1_context, noise[0], noise[1]))

    decoder = Mlp((self.encoder_dim, self.encoder_dim, feature_dim), linear_last=True, name="observation_decoder")
    reconstruction = decoder(jnp.concatenate([v1, v2], axis=-1)) * mask[..., None]
    return DFCOutputs(reconstruction=reconstruction, kl1=kl1, kl2=kl2, change_points=change_points, betas=betas,
                      kl_static=kl_static, kl_change=kl_change, v1=v1, v2=v2)

