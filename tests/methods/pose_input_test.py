"""Hosts that read the step's pose as input (pose paper Tables 5-6): pose vectors, features, inference needs poses."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import pose as pose_config
from hal_jax import errors
from hal_jax.methods import base
from hal_jax.methods import pose
from hal_jax.methods import pose_input
from tests.methods.atba_test import LABELS
from tests.methods.pose_test import _batch, _config


def test_pose_embeddings_are_normalised_and_a_step_without_pose_gets_the_empty_embedding():
  method = base.make_method(_config("test,loss=none,input=pose"), LABELS)
  batch = _batch(method.config)
  scores = np.asarray(batch["pose_scores"]).copy()
  scores[0, 1] = 0.0  # a step without a pose
  batch = dict(batch, pose_scores=jnp.asarray(scores))
  params = jax.jit(method.init)(jax.random.key(0), batch)
  inputs = jax.jit(method.inputs)(params["pose_input"], batch, None)["features"]
  assert inputs.shape == batch["frame_mask"].shape + (method.config.hidden_dim,)
  empty = pose_input.make_encoder(method.config).apply({"params": params["pose_input"]}, jnp.zeros((1, 17, 2)),
                                                       jnp.zeros((1, 17), bool))
  np.testing.assert_allclose(np.asarray(inputs[0, 1]), np.asarray(empty[0]), rtol=1e-6)
  # Normalised: translating and scaling the image poses changes nothing.
  moved = dict(batch, pose_keypoints=3 * batch["pose_keypoints"] + 50)
  np.testing.assert_allclose(np.asarray(jax.jit(method.inputs)(params["pose_input"], moved, None)["features"]),
                             np.asarray(inputs), atol=1e-4)


@pytest.mark.parametrize("mode", ["concat", "pose"])
def test_the_host_reads_poses_in_training_and_at_inference(mode):
  method = base.make_method(_config(f"test,loss=none,input={mode}"), LABELS)
  assert isinstance(method, pose_input.PoseInput)
  batch = _batch(method.config)
  params = jax.jit(method.init)(jax.random.key(0), batch)
  width, embedding = method.config.feature_dim, method.config.hidden_dim
  assert params["host"]["input_projection"]["kernel"].shape[0] == embedding + (width if mode == "concat" else 0)
  (loss, _), grads = jax.jit(jax.value_and_grad(method.loss, has_aux=True), static_argnums=3)(
      params, batch, jax.random.key(1), 0)
  assert np.isfinite(float(loss))
  assert np.any(np.asarray(grads["pose_input"]["dense_1"]["kernel"]))  # the host's loss trains the pose encoder
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
    pose_input.make_method(_config("test", pose_input="depth"), LABELS)
  with pytest.raises(errors.ConfigError, match="use_poses"):
    pose_input.make_method(_config("test,loss=none", pose_input="pose"), LABELS)
  with pytest.raises(ValueError, match="input=rgb"):
    pose_config.get_config("test,input=depth")


def _fit(method, batch, steps=60):
  """Frame accuracy on `batch` after `steps` Adam steps on it (the pseudo-label stage)."""
  params = jax.jit(method.init)(jax.random.key(0), batch)
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, key):
    grads, _ = jax.grad(method.loss, has_aux=True)(params, batch, key, 1)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  for i in range(steps):
    params, opt_state = step(params, opt_state, jax.random.key(i))
  predicted = np.asarray(jax.jit(method.predict)(params, batch)["frame_logits"]).argmax(-1)
  real = np.asarray(batch["frame_mask"] & batch["batch_mask"][:, None])
  return np.mean(predicted[real] == np.asarray(batch["frame_labels"])[real])


def test_a_host_on_pose_embeddings_alone_learns_from_the_poses():
  """Learning through the pose input: with the RGB features zeroed, a host on pose embeddings alone fits a batch
  whose poses carry the frame labels (one random template per class, plus noise) far better than the same batch
  with one pose everywhere (where only positions and transcripts are left to fit). The frame labels are an even
  split of the transcript, not the alignment's pseudo-labels the host trains on, so neither reaches 100 %."""
  method = base.make_method(_config("test,loss=none,input=pose", dropout=0.0, pose_dropout=0.0), LABELS)
  batch = {k: np.asarray(v) for k, v in _batch(method.config, pose_fraction=1.0).items()}
  rng = np.random.default_rng(5)
  templates = rng.uniform(100, 300, (len(LABELS), 17, 2)).astype(np.float32)
  labels = np.maximum(batch["frame_labels"], 0)
  noise = rng.normal(0, 3, labels.shape + (17, 2)).astype(np.float32)
  accuracy = {}
  for name, keypoints in (("label poses", templates[labels] + noise), ("one pose", templates[0] + noise)):
    inputs = dict(batch, pose_keypoints=keypoints, features=0 * batch["features"])
    accuracy[name] = _fit(method, {k: jnp.asarray(v) for k, v in inputs.items()})
  assert accuracy["label poses"] > max(0.5, accuracy["one pose"] + 0.2), accuracy  # measured: 0.62 vs 0.29
