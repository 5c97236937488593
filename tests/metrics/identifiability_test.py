"""Tests for hal_jax.metrics.identifiability (MCC after Hungarian matching)."""

import numpy as np
import pytest

from hal_jax.metrics import identifiability


def test_permuted_scaled_sign_flipped_copy_gives_one():
  rng = np.random.default_rng(0)
  true = rng.normal(size=(300, 5))
  learned = true[:, [3, 0, 4, 1, 2]] * np.array([2.0, -0.5, 3.0, -1.0, 0.1]) + 7.0
  assert identifiability.mean_correlation_coefficient(learned, true) == pytest.approx(1.0, abs=1e-12)
  rows, columns, correlations = identifiability.match_latents(learned, true)
  assert dict(zip(rows.tolist(), columns.tolist())) == {0: 3, 1: 0, 2: 4, 3: 1, 4: 2}
  np.testing.assert_allclose(correlations, 1.0)


def test_independent_noise_gives_near_zero():
  rng = np.random.default_rng(1)
  mcc = identifiability.mean_correlation_coefficient(rng.normal(size=(5000, 4)), rng.normal(size=(5000, 4)))
  assert mcc < 0.05


def test_matching_maximises_the_total_not_greedily():
  rng = np.random.default_rng(2)
  z0, z1, n0, n1 = rng.normal(size=(4, 20000))
  # |corr| ~ [[0.70, 0.60], [0.65, 0.05]]: greedy takes 0.70 then 0.05 (sum 0.75); the optimum is 0.60 + 0.65.
  learned = np.stack([0.7 * z0 + 0.6 * z1 + np.sqrt(0.15) * n0, 0.65 * z0 + 0.05 * z1 + np.sqrt(0.575) * n1], axis=1)
  rows, columns, correlations = identifiability.match_latents(learned, np.stack([z0, z1], axis=1))
  assert dict(zip(rows.tolist(), columns.tolist())) == {0: 1, 1: 0}
  assert correlations.sum() == pytest.approx(1.25, abs=0.03)


def test_different_dims_match_min_of_both():
  rng = np.random.default_rng(3)
  true = rng.normal(size=(500, 3))
  learned = np.concatenate([true[:, [2, 0]] * -2.0, rng.normal(size=(500, 4))], axis=1)  # 6 dims, 2 informative
  rows, columns, correlations = identifiability.match_latents(learned, true)
  assert len(rows) == len(columns) == 3
  assert sorted(correlations)[1:] == pytest.approx([1.0, 1.0])
  # Fewer learned than true dims: both informative dims found, the MCC averages over 2 pairs.
  assert identifiability.mean_correlation_coefficient(learned[:, :2], true) == pytest.approx(1.0)


def test_mask_excludes_padded_frames_and_accepts_batches():
  rng = np.random.default_rng(4)
  true = rng.normal(size=(3, 50, 2))
  learned = true[..., ::-1].copy()
  mask = np.ones((3, 50), bool)
  mask[:, 40:] = False
  learned[~mask] = 1e6 * rng.normal(size=(int((~mask).sum()), 2))  # garbage in the padding
  assert identifiability.mean_correlation_coefficient(learned, true, mask) == pytest.approx(1.0)
  assert identifiability.mean_correlation_coefficient(learned, true) < 0.5


def test_constant_dimension_has_zero_correlation():
  rng = np.random.default_rng(5)
  true = rng.normal(size=(100, 2))
  learned = np.stack([np.full(100, 3.0), true[:, 1]], axis=1)
  np.testing.assert_allclose(identifiability.correlation_matrix(learned, true)[0], [0.0, 0.0])
  assert identifiability.mean_correlation_coefficient(learned, true) == pytest.approx(0.5)


def test_shape_errors():
  with pytest.raises(ValueError, match="mask shape"):
    identifiability.mean_correlation_coefficient(np.zeros((4, 2)), np.zeros((4, 2)), np.ones(3, bool))
  with pytest.raises(ValueError, match="valid frames"):
    identifiability.mean_correlation_coefficient(np.zeros((4, 2)), np.zeros((5, 2)))
