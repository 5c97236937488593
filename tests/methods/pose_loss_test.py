"""The pose-filtered InfoNCE of spec pose.md §3 and §9."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hal_jax.methods import pose


def _inputs(seed=0, batch=2, frames=9, dim=5):
  rng = np.random.default_rng(seed)
  frame_emb = rng.normal(size=(batch, frames, dim)).astype(np.float32)
  pose_emb = rng.normal(size=(batch, frames, dim)).astype(np.float32)
  valid = np.ones((batch, frames), bool)
  distance = rng.uniform(size=(batch, frames, frames))
  distance = (distance + distance.swapaxes(1, 2)) / 2
  return frame_emb, pose_emb, valid, distance


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_delta_zero_is_plain_symmetric_infonce():
  frame_emb, pose_emb, valid, distance = _inputs()
  terms = pose.contrastive_loss(frame_emb, pose_emb, valid, distance >= 0.0, 0.1)
  logits = np.einsum("btd,bsd->bts", _unit(frame_emb), _unit(pose_emb)) / 0.1
  labels = np.broadcast_to(np.arange(9), (2, 9))
  i2p = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  p2i = optax.softmax_cross_entropy_with_integer_labels(logits.swapaxes(1, 2), labels)
  np.testing.assert_allclose(float(terms["pose_i2p"][0]), float(np.sum(i2p)), rtol=1e-5)
  np.testing.assert_allclose(float(terms["pose_p2i"][0]), float(np.sum(p2i)), rtol=1e-5)
  assert float(terms["pose_i2p"][1]) == 18


def test_delta_above_every_distance_gives_exactly_zero():
  frame_emb, pose_emb, valid, distance = _inputs()
  terms = pose.contrastive_loss(frame_emb, pose_emb, valid, distance >= 2.0, 0.1)
  assert float(terms["pose_i2p"][0]) == 0.0 and float(terms["pose_p2i"][0]) == 0.0
  assert float(terms["pose_i2p"][1]) == 18  # anchors without negatives still count


def test_excluded_frames_do_not_change_the_anchor_term():
  frame_emb, pose_emb, valid, distance = _inputs(1)
  negatives = distance >= 0.5
  t = 3
  excluded = [j for j in range(9) if j != t and not negatives[0, t, j]]
  assert excluded
  i2p, p2i = pose.contrastive_terms(frame_emb, pose_emb, valid, negatives, 0.1)
  changed_pose, changed_frame = pose_emb.copy(), frame_emb.copy()
  changed_pose[0, excluded] = 7.0
  changed_frame[0, excluded] = -7.0
  i2p_after, _ = pose.contrastive_terms(frame_emb, changed_pose, valid, negatives, 0.1)
  _, p2i_after = pose.contrastive_terms(changed_frame, pose_emb, valid, negatives, 0.1)
  assert float(i2p_after[0, t]) == float(i2p[0, t])
  assert float(p2i_after[0, t]) == float(p2i[0, t])
  assert float(i2p_after[0, excluded[0]]) != float(i2p[0, excluded[0]])


def test_padding_and_poseless_frames_do_not_change_the_loss():
  frame_emb, pose_emb, valid, distance = _inputs(2)
  negatives = distance >= 0.3
  valid[0, 6:] = False
  valid[1, 2] = False
  reference = pose.contrastive_loss(frame_emb, pose_emb, valid, negatives, 0.1)
  noisy_frame, noisy_pose = frame_emb.copy(), pose_emb.copy()
  noisy_frame[~valid] = 1e3
  noisy_pose[~valid] = -1e3
  changed = pose.contrastive_loss(noisy_frame, noisy_pose, valid, negatives, 0.1)
  for key in reference:
    np.testing.assert_allclose(float(changed[key][0]), float(reference[key][0]), rtol=1e-6)
  assert float(reference["pose_i2p"][1]) == 14


def test_no_pose_gives_zero_loss_and_finite_gradients():
  frame_emb, pose_emb, valid, distance = _inputs(3)
  valid[:] = False

  def loss(f, p):
    terms = pose.contrastive_loss(f, p, valid, distance >= 0.3, 0.1)
    return sum(total / jnp.maximum(count, 1.0) for total, count in terms.values())

  value, grads = jax.value_and_grad(loss, argnums=(0, 1))(frame_emb, pose_emb)
  assert float(value) == 0.0
  assert all(np.all(np.asarray(g) == 0) for g in grads)
