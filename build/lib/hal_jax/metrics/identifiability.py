"""Identifiability of learned latents: mean correlation coefficient (MCC) after the best one-to-one matching.

Used on synthetic data, where the true latents are known (`latents/<video>.npz`). A latent model is identifiable up
to permutation and element-wise (here: affine) transformation, so each learned dimension is matched to the true
dimension it correlates with most, one-to-one, and the absolute Pearson correlations of the matched pairs are
averaged (the MCC of iVAE / TCL / LEAP-style papers, which solve the same assignment problem).
"""

from __future__ import annotations

import numpy as np
from scipy import optimize


def _flatten(latents: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
  """[..., d] latents and a [...] bool mask -> [n, d] float64 of the valid frames."""
  latents = np.asarray(latents, np.float64)
  if latents.ndim < 2:
    raise ValueError(f"latents must be [..., dims], got shape {latents.shape}")
  if mask is None:
    return latents.reshape(-1, latents.shape[-1])
  mask = np.asarray(mask, bool)
  if mask.shape != latents.shape[:-1]:
    raise ValueError(f"mask shape {mask.shape} does not match latents {latents.shape[:-1]}")
  return latents[mask]


def correlation_matrix(learned: np.ndarray, true: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  """Absolute Pearson correlation of every (learned, true) pair of dimensions over the valid frames.

  Args:
    learned: [..., d1] learned latents (e.g. [batch, frames, d1] or [frames, d1]).
    true: [..., d2] true latents with the same leading shape.
    mask: [...] bool, True on valid frames (padding excluded); None: all frames.
  Returns:
    [d1, d2] in [0, 1]; 0 for a constant dimension (its correlation is undefined).
  """
  x, y = _flatten(learned, mask), _flatten(true, mask)
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"learned has {x.shape[0]} valid frames, true has {y.shape[0]}")
  if x.shape[0] < 2:
    raise ValueError("need at least 2 valid frames to correlate")
  # A column is constant when its spread is float noise relative to its magnitude; its correlation is undefined.
  x_constant = np.ptp(x, axis=0) <= 1e-12 * np.max(np.abs(x), axis=0)
  y_constant = np.ptp(y, axis=0) <= 1e-12 * np.max(np.abs(y), axis=0)
  x = x - x.mean(axis=0)
  y = y - y.mean(axis=0)
  denominator = np.outer(np.linalg.norm(x, axis=0), np.linalg.norm(y, axis=0))
  defined = ~x_constant[:, None] & ~y_constant[None, :]
  correlation = np.divide(x.T @ y, denominator, out=np.zeros(denominator.shape), where=defined)
  # Rounding can push |r| a hair above 1.
  return np.minimum(np.abs(correlation), 1.0)


def match_latents(learned: np.ndarray, true: np.ndarray,
                  mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Best one-to-one matching of dimensions (Hungarian algorithm on the absolute correlations).

  Args: as `correlation_matrix`.
  Returns:
    learned_dims: [m] int, true_dims: [m] int (m = min(d1, d2)), correlations: [m] their absolute correlations.
  """
  correlation = correlation_matrix(learned, true, mask)
  rows, columns = optimize.linear_sum_assignment(correlation, maximize=True)
  return rows, columns, correlation[rows, columns]


def mean_correlation_coefficient(learned: np.ndarray, true: np.ndarray, mask: np.ndarray | None = None) -> float:
  """MCC in [0, 1]: mean absolute correlation over the min(d1, d2) matched pairs of dimensions.

  Args: as `correlation_matrix`.
  """
  _, _, correlations = match_latents(learned, true, mask)
  return float(np.mean(correlations))
