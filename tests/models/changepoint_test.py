"""Tests for hal_jax.models.changepoint: Gaussian KL, the dynamic-threshold rule, detection on known sequences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax.models import changepoint

RULE = changepoint.ChangeRule()  # α = 0.15, β in [0.15, 0.9], β_0 = 0.9


def test_kl_matches_a_monte_carlo_estimate():
  rng = np.random.default_rng(0)
  mu_q, mu_p = rng.normal(size=3), rng.normal(size=3)
  sigma_q, sigma_p = rng.uniform(0.5, 1.5, 3), rng.uniform(0.5, 1.5, 3)
  closed = float(changepoint.diagonal_gaussian_kl(mu_q, sigma_q, mu_p, sigma_p))
  samples = mu_q + sigma_q * rng.normal(size=(400_000, 3))

  def log_density(x, mu, sigma):
    return np.sum(-0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi), axis=-1)

  estimate = np.mean(log_density(samples, mu_q, sigma_q) - log_density(samples, mu_p, sigma_p))
  assert closed > 0.1
  assert closed == pytest.approx(estimate, rel=0.02)


def test_kl_of_a_distribution_with_itself_is_zero_and_standard_normal_kl_is_the_special_case():
  mu = jnp.array([[0.3, -1.0], [2.0, 0.0]])
  sigma = jnp.array([[0.5, 2.0], [1.0, 0.1]])
  np.testing.assert_allclose(changepoint.diagonal_gaussian_kl(mu, sigma, mu, sigma), [0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(changepoint.standard_normal_kl(mu, sigma),
                             changepoint.diagonal_gaussian_kl(mu, sigma, jnp.zeros(2), jnp.ones(2)), rtol=1e-6)
  # N(1, 1) against N(0, 1): (μ_q - μ_p)² / 2 per dimension.
  assert float(changepoint.standard_normal_kl(jnp.ones(4), jnp.ones(4))) == pytest.approx(2.0)


def test_decide_moves_beta_by_alpha_within_its_bounds():
  beta = jnp.array([0.9, 0.9, 0.15, 0.5, 0.5])
  kl_static = jnp.array([2.0, 0.1, 0.1, 2.0, 2.0])
  kl_change = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0])
  valid = jnp.array([True, True, True, True, False])
  change, next_beta = changepoint.decide(RULE, beta, kl_static, kl_change, valid)
  np.testing.assert_array_equal(change, [True, False, False, True, False])
  # Up after a change (clipped at 0.9), down otherwise (clipped at 0.15); an invalid step keeps β.
  np.testing.assert_allclose(next_beta, [0.9, 0.75, 0.15, 0.65, 0.5], atol=1e-6)


def test_decide_passes_no_gradient():
  def changes(kl_static):
    change, _ = changepoint.decide(RULE, jnp.array(0.5), kl_static, jnp.array(1.0), jnp.array(True))
    return change.astype(jnp.float32) * kl_static  # the decision is a constant: d/dx = change only
  assert float(jax.grad(changes)(jnp.array(2.0))) == 1.0


def test_detect_finds_constructed_change_points_and_tracks_beta():
  # A change wherever D_st >> D_ch, none where D_ch >> D_st, in three videos of different valid lengths.
  length = 12
  truth = np.zeros([3, length], bool)
  truth[0, [3, 7]] = True
  truth[1, [1, 2, 9]] = True
  truth[2, [4]] = True
  lengths = np.array([12, 10, 5])
  mask = np.arange(length)[None] < lengths[:, None]
  kl_static = np.where(truth, 10.0, 0.1)
  kl_change = np.where(truth, 0.1, 10.0)
  changes, betas = jax.jit(lambda s, c, m: changepoint.detect(RULE, s, c, m))(kl_static, kl_change, mask)
  np.testing.assert_array_equal(changes, truth & mask)
  assert changes.shape == betas.shape == (3, length)
  # Video 0: β_0 = 0.9 at t = 0 (no test), then down by 0.15 per quiet step to the floor, up at each change.
  np.testing.assert_allclose(betas[0], [0.9, 0.9, 0.75, 0.6, 0.75, 0.6, 0.45, 0.3, 0.45, 0.3, 0.15, 0.15],
                             atol=1e-6)
  # Padding freezes β.
  np.testing.assert_allclose(betas[2, 5:], betas[2, 5], atol=1e-6)
  assert np.all((betas >= RULE.beta_min - 1e-6) & (betas <= RULE.beta_max + 1e-6))


def test_identical_priors_make_every_step_a_change_below_beta_one():
  # p_st = p_ch gives D_st = D_ch > 0; with β_max < 1 every valid step after the first is a change (spec §9).
  kl = np.random.default_rng(1).uniform(0.01, 5.0, (2, 9))
  mask = np.ones([2, 9], bool)
  mask[1, 6:] = False
  changes, betas = changepoint.detect(RULE, kl, kl, mask)
  expected = mask.copy()
  expected[:, 0] = False
  np.testing.assert_array_equal(changes, expected)
  np.testing.assert_allclose(betas[0], 0.9, atol=1e-6)  # Pinned at β_max by the changes.


def test_rule_rejects_inconsistent_bounds():
  with pytest.raises(ValueError):
    changepoint.ChangeRule(beta_min=0.5, beta_init=0.3)
  with pytest.raises(ValueError):
    changepoint.ChangeRule(alpha=-0.1)
