"""Tests for hal_jax.alignment.segments: half-pixel linear upsampling to the raw frame rate (spec §9)."""

import numpy as np
import pytest

from hal_jax.alignment import segments


def _direct_loop(logits, raw_length):
  """The §9 formula frame by frame in float64: u = max(0, (x + 0.5) T_v / T_raw - 0.5)."""
  num_frames = logits.shape[0]
  out = np.zeros((raw_length, logits.shape[1]))
  for x in range(raw_length):
    u = max(0.0, (x + 0.5) * num_frames / raw_length - 0.5)
    lower = min(int(np.floor(u)), num_frames - 1)
    upper = min(lower + 1, num_frames - 1)
    weight = u - lower
    out[x] = (1 - weight) * logits[lower] + weight * logits[upper]
  return out


@pytest.mark.parametrize("raw_length, expected", [
    (4, [0.0, 0.25, 0.75, 1.0]),  # torch.nn.functional.interpolate(tensor([[[0., 1.]]]), 4, mode="linear")
    (5, [0.0, 0.1, 0.5, 0.9, 1.0]),
    (2, [0.0, 1.0]),  # same length: a copy
])
def test_known_values_of_pytorch_linear_interpolation(raw_length, expected):
  upsampled = segments.upsample_logits(np.array([[0.0], [1.0]], np.float32), 2, raw_length)
  assert upsampled.dtype == np.float32 and upsampled.shape == (raw_length, 1)
  np.testing.assert_allclose(upsampled[:, 0], expected, atol=1e-6)


def test_three_steps_to_seven_frames():
  # u = 3/7 (x + 0.5) - 0.5 = -2/7, 1/7, 4/7, 1, 10/7, 13/7, 16/7 (clamped to the last step).
  upsampled = segments.upsample_logits(np.array([[0.0], [7.0], [14.0]], np.float32), 3, 7)
  np.testing.assert_allclose(upsampled[:, 0], [0.0, 1.0, 4.0, 7.0, 10.0, 13.0, 14.0], atol=1e-5)


def test_matches_a_direct_loop_on_random_lengths_and_ignores_padding():
  rng = np.random.default_rng(0)
  lengths = [(1, 9), (5, 50), (17, 170), (30, 301), (12, 12), (40, 33)]  # last: downsampling also follows §9
  logits = rng.normal(size=(len(lengths), 40, 4)).astype(np.float32)
  num_frames = np.array([n for n, _ in lengths])
  raw_length = np.array([r for _, r in lengths])
  upsampled = segments.upsample_logits(logits, num_frames, raw_length)
  assert len(upsampled) == len(lengths)
  for video, (n, raw), out in zip(logits, lengths, upsampled):
    assert out.shape == (raw, 4)
    # float32 positions (as in PyTorch) vs float64 ones: up to ~1e-5 where the logits change fast.
    np.testing.assert_allclose(out, _direct_loop(video[:n].astype(np.float64), raw), atol=1e-4)
    padded = video.copy()
    padded[n:] = 1e6  # padding must not leak into the result
    np.testing.assert_array_equal(segments.upsample_logits(padded, n, raw), out)


def test_bad_lengths_raise():
  logits = np.zeros((4, 2), np.float32)
  with pytest.raises(ValueError, match="num_frames"):
    segments.upsample_logits(logits, 5, 10)
  with pytest.raises(ValueError, match="raw_length"):
    segments.upsample_logits(logits, 4, 0)
  with pytest.raises(ValueError, match="logits"):
    segments.upsample_logits(np.zeros((2, 4, 2, 1)), 4, 10)
