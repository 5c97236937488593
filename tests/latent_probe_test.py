"""The identifiability probe on representations whose scores are known in advance."""

import dataclasses

import numpy as np
import pytest
from scipy import optimize

from hal_jax import latent_probe
from hal_jax.data import synthetic_process as process_lib


def _scores(train_features, train_latents, test_features, test_latents):
  return latent_probe.probe_scores({"mcc": (train_features, train_latents)}, {"mcc": (test_features, test_latents)})


def _hungarian_mean(matrix: np.ndarray) -> float:
  rows, columns = optimize.linear_sum_assignment(np.abs(matrix), maximize=True)
  return float(np.abs(matrix[rows, columns]).mean())


def test_a_permuted_scaled_shifted_copy_of_the_true_latents_scores_100_both_ways():
  rng = np.random.default_rng(0)
  train, test = rng.standard_normal([2000, 6]), rng.standard_normal([1000, 6])
  permutation, scale, shift = rng.permutation(6), rng.uniform(0.1, 10.0, 6) * rng.choice([-1, 1], 6), rng.normal(
      size=6)
  copy = lambda z: z[:, permutation] * scale + shift  # pylint: disable=unnecessary-lambda-assignment
  scores = _scores(copy(train), train, copy(test), test)
  assert scores["mcc"] == pytest.approx(100.0, abs=1e-6)
  assert scores["mcc_direct"] == pytest.approx(100.0, abs=1e-9)


def test_a_mixed_copy_scores_100_through_the_read_out_but_not_directly():
  """An invertible linear mixture is linearly identifiable (read-out 100) but its axes are not the true ones.

  The mixture is well conditioned on purpose: the probe's ridge (1e-3 of the mean feature variance) shrinks
  directions of smaller variance, so an ill-conditioned exact mixture reads out below 100 (a Gaussian 6 x 6 matrix
  with seed 1 gives 95.3).
  """
  rng = np.random.default_rng(1)
  train, test = rng.standard_normal([4000, 6]), rng.standard_normal([2000, 6])
  mixing = process_lib.random_orthogonal(rng, 6) * rng.uniform(0.5, 2.0, 6)
  scores = _scores(train @ mixing, train, test @ mixing, test)
  assert scores["mcc"] == pytest.approx(100.0, abs=0.05)
  # Directly: corr(r_a, v_j) = M_ja / ‖M_:a‖ for isotropic v; the matched mean of that matrix.
  expected = 100.0 * _hungarian_mean(mixing / np.linalg.norm(mixing, axis=0))
  assert scores["mcc_direct"] == pytest.approx(expected, abs=2.0)
  assert scores["mcc_direct"] < 95.0


@pytest.mark.parametrize("k", [3, 8])
def test_a_random_projection_of_linear_observations_scores_what_theory_says(k):
  """v ~ N(0, I_d), x = v A (D = 32), r = x R (k dims): r = v P with P = A R.

  The population read-out of v from r is v Π, Π the projection onto P's column space, so corr(v̂_i, v_j) =
  Π_ij / sqrt(Π_ii): 100 when k >= d (Π = I), and the matched mean of that matrix (trace k/d) when k < d.
  """
  d, dim, n = 8, 32, 40000
  rng = np.random.default_rng(2)
  mixing, projection = rng.standard_normal([d, dim]), rng.standard_normal([dim, k])
  p = mixing @ projection  # [d, k]
  pi = p @ np.linalg.pinv(p)  # [d, d]
  expected = 100.0 * _hungarian_mean(pi / np.sqrt(np.diag(pi))[:, None])
  train, test = rng.standard_normal([n, d]), rng.standard_normal([n, d])
  scores = _scores(train @ mixing @ projection, train, test @ mixing @ projection, test)
  if k >= d:
    assert expected == pytest.approx(100.0)
  else:
    assert np.trace(pi) == pytest.approx(k)
    assert expected < 90.0
  assert scores["mcc"] == pytest.approx(expected, abs=1.0)
  expected_direct = 100.0 * _hungarian_mean((p / np.linalg.norm(p, axis=0)).T)
  assert scores["mcc_direct"] == pytest.approx(expected_direct, abs=1.5)


def test_a_random_projection_of_the_generators_linear_noise_free_features_reads_out_the_visual_latent():
  """With linear mixing and no observation noise, x = g(v) is an invertible linear map of v: any random projection
  of x with at least dv dimensions reads v out exactly (MCC 100, less what the probe's ridge shrinks: the VAR's
  latent is anisotropic), whatever the dynamics made of v."""
  config = process_lib.ProcessConfig(action_dim=3, visual_dim=6, feature_dim=12, mixing_depth=0,
                                     observation_noise=0.0, burst_rate=0.02, burst_length=(3, 6))
  prototypes = process_lib.sample_prototypes(config, 4, seed=0)
  process = process_lib.make_process(config, prototypes, seed=0)
  segments = [(0, 0, 60), (1, 60, 150), (2, 150, 200), (3, 200, 320)]
  train, test = process_lib.sample_videos(process, [(segments, np.random.default_rng(s)) for s in (1, 2)])
  projection = np.random.default_rng(3).standard_normal([12, 6])
  scores = _scores(train.features @ projection, train.visual, test.features @ projection, test.visual)
  assert 99.0 < scores["mcc"] <= 100.0
  # The same projection of the noisy, strongly mixed default observations reads out less.
  noisy = process_lib.make_process(dataclasses.replace(config, mixing_depth=2, observation_noise=0.5), prototypes, 0)
  train, test = process_lib.sample_videos(noisy, [(segments, np.random.default_rng(s)) for s in (1, 2)])
  assert _scores(train.features @ projection, train.visual, test.features @ projection, test.visual)["mcc"] < 99.0
