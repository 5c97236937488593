"""Identifiability of learned latents on synthetic data: linear probe + mean correlation coefficient (MCC).

The synthetic generator stores the true latents per video (``latents/<video>.npz``: ``action`` [T_raw, da],
``visual`` [T_raw, dv]). A method's `predict` returns its candidate latents per downsampled frame
(``visual_latent``, ``action_latent``: [B, T, d]; for HAL the means μ of its two variational taps, for ATBA the
outputs of the same encoder layers). For each pair we fit a ridge regression from the learned features to the true
latent on the *train* split (so every method is compared through the same linear read-out, which is what linear
identifiability asks for), apply it to the test split, and report the MCC between prediction and truth after the
best one-to-one matching of dimensions (`hal_jax.metrics.identifiability`), on a 0-100 scale. A linear probe is
generous (even random features of the observations read out much of a latent), so the direct MCC between the
learned dimensions and the true ones, without any fitted read-out, is reported beside it as ``<metric>_direct``.

Known answers (tests/latent_probe_test.py): a permuted, scaled, shifted copy of the true latents scores 100 both ways;
a random k-dimensional projection of linearly mixed isotropic latents scores the matched mean of Π_ij / sqrt(Π_ii)
(Π the projection onto the projection's span: 100 when k >= d). The ridge (1e-3 of the mean feature variance)
shrinks low-variance directions, so an exact but ill-conditioned linear mixture reads out a few points below 100.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import numpy as np

from hal_jax.metrics import identifiability

# (name of the predict output, key in latents/<video>.npz, reported metric)
LATENT_PAIRS = (("visual_latent", "visual", "mcc_visual"), ("action_latent", "action", "mcc_action"))
# The predict outputs a method must return to be probed (methods without latents are skipped).
OUTPUT_KEYS = tuple(output_key for output_key, _, _ in LATENT_PAIRS)
_RIDGE = 1e-3


def has_true_latents(data_dir: str) -> bool:
  return os.path.isdir(os.path.join(data_dir, "latents"))


def collect(predictions: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]], pipeline,
            data_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Stacks learned and true latents over every valid frame of every video of `pipeline` (eval mode).

  Returns:
    {metric: (learned [N, d], true [N, dt])} with N the number of valid downsampled frames.
  """
  learned = {metric: [] for _, _, metric in LATENT_PAIRS}
  true = {metric: [] for _, _, metric in LATENT_PAIRS}
  for batch, outputs in predictions:
    for row in np.flatnonzero(batch["batch_mask"]):
      index = int(batch["video_index"][row])
      num_frames = int(batch["num_frames"][row])
      video = pipeline.dataset.videos[index]
      with np.load(os.path.join(data_dir, "latents", f"{video.name}.npz")) as stored:
        frames = pipeline.feature_rows(0, index)
        for output_key, latent_key, metric in LATENT_PAIRS:
          learned[metric].append(np.asarray(outputs[output_key][row, :num_frames], np.float64))
          true[metric].append(np.asarray(stored[latent_key], np.float64)[frames])
  return {metric: (np.concatenate(learned[metric]), np.concatenate(true[metric])) for metric in learned}


def fit_linear_probe(features: np.ndarray, targets: np.ndarray, ridge: float = _RIDGE) -> tuple[np.ndarray, ...]:
  """Ridge regression targets ≈ (features − mean) W + target mean; features [N, d], targets [N, dt]."""
  x_mean, y_mean = features.mean(0), targets.mean(0)
  x = features - x_mean
  scale = max(float(np.mean(x * x)), 1e-12)
  gram = x.T @ x + ridge * scale * len(x) * np.eye(x.shape[1])
  weights = np.linalg.solve(gram, x.T @ (targets - y_mean))
  return x_mean, weights, y_mean


def probe_scores(train: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 test: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
  """MCC (0-100) on test of a linear probe fitted on train, per latent pair."""
  scores = {}
  for metric, (features, targets) in train.items():
    x_mean, weights, y_mean = fit_linear_probe(features, targets)
    test_features, test_targets = test[metric]
    predicted = (test_features - x_mean) @ weights + y_mean
    scores[metric] = 100.0 * identifiability.mean_correlation_coefficient(predicted, test_targets)
    scores[f"{metric}_direct"] = 100.0 * identifiability.mean_correlation_coefficient(test_features, test_targets)
  return scores
