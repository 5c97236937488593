"""Tests for the ATBA learning-rate schedule (spec hal_atba.md §8.3 check values)."""

import numpy as np
import pytest

from hal_jax import optim


@pytest.mark.parametrize("epoch,expected", [
    (0, 0.01), (9, 1.0), (39, 1.0), (40, 0.1), (45, 0.6), (49, 1.0), (50, 1.0), (225, 0.505), (399, 0.0100),
])
def test_spec_check_values_for_400_epochs(epoch, expected):
  lr = optim.epoch_learning_rate(epoch, base_lr=1.0, warmup_epochs=10, stage_epoch=40, num_epochs=400)
  np.testing.assert_allclose(float(lr), expected, atol=2e-4)


def test_scales_with_base_rate():
  lr = optim.epoch_learning_rate(45, base_lr=5e-4, warmup_epochs=10, stage_epoch=40, num_epochs=400)
  np.testing.assert_allclose(float(lr), 0.6 * 5e-4, rtol=1e-5)
