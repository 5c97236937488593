"""The pose method: composition with the host, gradients, masking and training-only pose parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pose as pose_config
from hal_jax import errors
from hal_jax.methods import pose
from tests.methods.atba_test import LABELS, device_batch, make_batch


def _config(arg="test", **overrides):
  config = pose_config.get_config(arg)
  with config.unlocked():
    config.update(overrides)
  return config


def _batch(config, seed=0, pose_fraction=0.8):
  batch = make_batch(config.feature_dim, seed)
  rng = np.random.default_rng(seed)
  shape = batch["frame_mask"].shape
  keypoints = rng.uniform(0, 400, size=shape + (17, 2)).astype(np.float32)
  scores = rng.uniform(0.5, 1, size=shape + (17,)).astype(np.float32)
  scores[rng.uniform(size=shape) > pose_fraction] = 0.0  # steps without a pose
  scores[~batch["frame_mask"]] = 0.0
  return device_batch(dict(batch, pose_keypoints=keypoints, pose_scores=scores))


@pytest.fixture(scope="module")
def setup():
  method = pose.make_method(_config(), LABELS)
  batch = _batch(method.config)
  params = jax.jit(method.init)(jax.random.key(0), batch)
  loss = jax.jit(method.loss, static_argnums=3)
  host_loss = jax.jit(method.host.loss, static_argnums=3)
  return method, batch, params, loss, host_loss


def test_loss_is_the_host_loss_plus_both_directions(setup):
  method, batch, params, loss, host_loss = setup
  rng = jax.random.key(3)
  total, aux = loss(params, batch, rng, 0)
  host_total, host_aux = host_loss(params["host"], batch, rng, 0)
  pose_terms = sum(float(aux[k][0]) / float(aux[k][1]) for k in ("pose_i2p", "pose_p2i"))
  assert float(aux["pose_i2p"][1]) == float(np.sum(np.asarray(batch["pose_scores"])[..., 0] > 0))
  np.testing.assert_allclose(float(total), float(host_total) + pose_terms, rtol=1e-5)
  assert float(aux["video_bce"][0]) == float(host_aux["video_bce"][0])  # the host is untouched


def test_pose_gradient_reaches_the_rgb_encoder_and_the_pose_encoder(setup):
  method, batch, params, _, _ = setup

  def pose_only(p):
    outputs = method.host.forward(p["host"], batch, None)
    terms = method.pose_losses(p["pose"], outputs.frame_tokens, batch, None)
    return sum(total / count for total, count in terms.values())

  grads = jax.jit(jax.grad(pose_only))(params)
  for path in (("host", "input_projection", "kernel"), ("host", "layer_0", "attention", "qkv", "kernel"),
               ("pose", "dense_1", "kernel"), ("pose", "gamma", "kernel")):
    leaf = grads
    for key in path:
      leaf = leaf[key]
    assert np.all(np.isfinite(np.asarray(leaf))) and np.any(np.asarray(leaf) != 0), path
  assert not np.any(np.asarray(grads["host"]["classifier"]["kernel"]))  # I_t is taken before the classifier


def test_batch_without_poses_gives_zero_pose_loss_and_finite_gradients(setup):
  method, batch, params, loss, host_loss = setup
  empty = dict(batch, pose_scores=jnp.zeros_like(batch["pose_scores"]))
  step = jax.jit(jax.value_and_grad(method.loss, has_aux=True), static_argnums=3)
  (total, aux), grads = step(params, empty, jax.random.key(1), 0)
  assert float(aux["pose_i2p"][0]) == 0.0 and float(aux["pose_i2p"][1]) == 0.0
  assert float(total) == float(host_loss(params["host"], empty, jax.random.key(1), 0)[0])
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
  assert not any(np.any(np.asarray(g)) for g in jax.tree.leaves(grads["pose"]))


def test_padding_and_poseless_steps_do_not_change_the_pose_loss(setup):
  method, batch, params, loss, _ = setup
  scores = np.asarray(batch["pose_scores"])
  keypoints = np.asarray(batch["pose_keypoints"]).copy()
  keypoints[scores[..., 0] == 0] = 1e4  # garbage where no pose counts
  _, aux = loss(params, batch, jax.random.key(2), 0)
  _, aux_changed = loss(params, dict(batch, pose_keypoints=jnp.asarray(keypoints)), jax.random.key(2), 0)
  for key in ("pose_i2p", "pose_p2i"):
    assert float(aux[key][0]) == pytest.approx(float(aux_changed[key][0]), rel=1e-6)


def test_inference_is_the_host_and_ignores_pose_parameters(setup):
  method, batch, params, _, _ = setup
  predict = jax.jit(method.predict)
  out = predict(params, batch)
  zeroed = dict(params, pose=jax.tree.map(jnp.zeros_like, params["pose"]))
  other = predict(zeroed, batch)
  host = jax.jit(method.host.predict)(params["host"], batch)
  for key in out:
    np.testing.assert_array_equal(np.asarray(out[key]), np.asarray(other[key]))
    np.testing.assert_array_equal(np.asarray(out[key]), np.asarray(host[key]))
  no_pose_keys = {k: v for k, v in batch.items() if not k.startswith("pose_")}
  np.testing.assert_array_equal(np.asarray(predict(params, no_pose_keys)["frame_logits"]),
                                np.asarray(out["frame_logits"]))


def test_config_variants_and_errors():
  assert pose_config.get_config("test,loss=vanilla").pose_delta == 0.0
  assert pose_config.get_config("ata,mode=online").pose_delta == 0.05
  assert pose_config.get_config("ata").pose_delta == 0.2
  baseline = pose_config.get_config("synthetic,loss=none,mode=online")
  assert baseline.method == "hal_jax.methods.atba" and not baseline.use_poses and baseline.causal
  assert pose.make_method(_config("test,host=hal"), LABELS).host.name == "hal"
  with pytest.raises(ValueError, match="takes"):
    pose_config.get_config("test,loss=other")
  with pytest.raises(errors.ConfigError, match="config.host"):
    pose.make_method(_config(host="hal_jax.methods.no_such_host"), LABELS)
  with pytest.raises(errors.ConfigError, match="config.pose_layout"):
    pose.make_method(_config(pose_layout="openpose"), LABELS)
  with pytest.raises(errors.ConfigError, match="expected_classes"):
    pose.make_method(_config(expected_classes=23), LABELS)


def test_pose_capacity_and_gather_slots():
  assert pose.pose_capacity(512, 1, 5) == 104  # ceil(512 / 5) + 1 = 104
  assert pose.pose_capacity(512, 5, 5) == 512 and pose.pose_capacity(100, 2, 5) == 48  # 41 -> 48
  valid = jnp.array([[False, True, False, True, True, False], [False] * 6])
  slots, slot_valid = pose.gather_slots(valid, 4)
  np.testing.assert_array_equal(np.asarray(slots[0, :3]), [1, 3, 4])
  np.testing.assert_array_equal(np.asarray(slot_valid), [[True, True, True, False], [False] * 4])


def _sparse_batch(config, every, seed=4):
  """Poses on every `every`-th real step only (the paper's stride at full frame rate)."""
  batch = {k: np.asarray(v) for k, v in _batch(config, seed, pose_fraction=1.0).items()}
  scores = batch["pose_scores"].copy()
  scores[:, np.arange(scores.shape[1]) % every != 0] = 0.0
  return device_batch(dict(batch, pose_scores=scores))


@pytest.mark.parametrize("every", [5, 1])  # 5: the gathered branch; 1: more poses than slots, the full branch
def test_gathered_pose_steps_give_the_loss_and_gradients_of_all_steps(every):
  gathered = pose.make_method(_config(sample_rate=1, pose_stride=5), LABELS)
  full = pose.make_method(_config(sample_rate=1, pose_stride=1), LABELS)  # capacity = T: no gather
  batch = _sparse_batch(gathered.config, every)
  frames = batch["frame_mask"].shape[1]
  counts = np.sum(np.asarray(batch["pose_scores"])[..., 0] > 0, axis=1)
  assert (np.max(counts) <= pose.pose_capacity(frames, 1, 5) < frames) == (every == 5)  # which branch runs
  params = jax.jit(gathered.init)(jax.random.key(0), batch)
  tokens = jax.random.normal(jax.random.key(1), batch["features"].shape[:2] + (gathered.config.hidden_dim,))

  def value(method):
    def pose_terms(pose_params, tokens):
      terms = method.pose_losses(pose_params, tokens, batch, None)
      return sum(total / count for total, count in terms.values()), terms
    return jax.jit(jax.value_and_grad(pose_terms, argnums=(0, 1), has_aux=True))(params["pose"], tokens)

  (loss, terms), grads = value(gathered)
  (full_loss, full_terms), full_grads = value(full)
  assert float(terms["pose_i2p"][1]) == float(full_terms["pose_i2p"][1]) > 0
  np.testing.assert_allclose(float(loss), float(full_loss), rtol=1e-6)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(full_grads)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
  assert np.any(np.asarray(grads[1]))
