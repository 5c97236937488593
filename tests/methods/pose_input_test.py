"""Hosts that read the step's pose as input (pose paper Tables 5-6): pose vectors, features, inference needs poses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pose as pose_config
from hal_jax import errors
from hal_jax.methods import base
from hal_jax.methods import pose
from hal_jax.methods import pose_input
from tests.methods.atba_test import LABELS
from tests.methods.pose_test import _batch, _config


def test_pose_vectors_are_normalised_keypoints_and_joint_flags():
  rng = np.random.default_rng(0)
  keypoints = rng.uniform(0, 400, (2, 3, 17, 2)).astype(np.float32)
  scores = rng.uniform(0.5, 1, (2, 3, 17)).astype(np.float32)
  scores[0, 1] = 0.0  # a step without a pose
  scores[1, 2, :5] = 0.1  # five joints below the confidence threshold
  vectors = np.asarray(pose_input.pose_vectors(jnp.asarray(keypoints), jnp.asarray(scores)))
  assert vectors.shape == (2, 3, 51)
  assert not vectors[0, 1].any()
  np.testing.assert_array_equal(vectors[1, 2, 34:], [0] * 5 + [1] * 12)
  assert not vectors[1, 2, :10].any() and np.abs(vectors[1, 2, 10:34]).max() <= 1 + 1e-6  # scaled into the disc
  # Normalised: translating and scaling the image pose changes nothing.
  moved = np.asarray(pose_input.pose_vectors(jnp.asarray(3 * keypoints + 50), jnp.asarray(scores)))
  np.testing.assert_allclose(moved, vectors, atol=1e-5)


@pytest.mark.parametrize("mode", ["concat", "pose"])
def test_the_host_reads_poses_in_training_and_at_inference(mode):
  method = base.make_method(_config(f"test,loss=none,input={mode}"), LABELS)
  assert isinstance(method, pose_input.PoseInput)
  batch = _batch(method.config)
  features = method.inputs(batch)["features"]
  width = method.config.feature_dim
  assert features.shape[-1] == (width + 51 if mode == "concat" else 51)
  params = jax.jit(method.init)(jax.random.key(0), batch)
  assert params["input_projection"]["kernel"].shape[0] == features.shape[-1]
  loss, _ = jax.jit(method.loss, static_argnums=3)(params, batch, jax.random.key(1), 0)
  assert np.isfinite(float(loss))
  predict = jax.jit(method.predict)
  logits = np.asarray(predict(params, batch)["frame_logits"])
  moved = dict(batch, pose_keypoints=batch["pose_keypoints"][:, ::-1])  # other poses at the same steps
  assert np.abs(np.asarray(predict(params, moved)["frame_logits"]) - logits).max() > 1e-4
  other_rgb = dict(batch, features=batch["features"] + 1.0)
  changed = np.abs(np.asarray(predict(params, other_rgb)["frame_logits"]) - logits).max() > 1e-4
  assert changed == (mode == "concat")  # input=pose never reads the RGB features


def test_pose_loss_on_a_pose_input_host_and_config_errors():
  method = pose.make_method(_config("test,input=concat"), LABELS)
  assert isinstance(method.host, pose_input.PoseInput)
  batch = _batch(method.config)
  params = jax.jit(method.init)(jax.random.key(0), batch)
  _, aux = jax.jit(method.loss, static_argnums=3)(params, batch, jax.random.key(1), 0)
  assert float(aux["pose_i2p"][1]) > 0
  config = pose_config.get_config("test,loss=none,input=pose")
  assert config.use_poses and config.method == "hal_jax.methods.pose_input"
  assert pose_config.get_config("test").pose_input == "rgb"
  with pytest.raises(errors.ConfigError, match="pose_input"):
    pose_input.make_host(_config("test", pose_input="depth"), LABELS)
  with pytest.raises(ValueError, match="input=rgb"):
    pose_config.get_config("test,input=depth")
