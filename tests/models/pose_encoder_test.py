"""Pose normalisation, the point-set pose encoder and the pose distance (spec pose.md §2.2, §2.3, §3, §9)."""

import jax
import jax.numpy as jnp
import numpy as np

from hal_jax.models import pose_encoder


def _poses(rng, n=6, k=17):
  keypoints = rng.normal(size=(n, k, 2)).astype(np.float32) * 30 + 200
  keypoints[:, 0, 1] -= 80  # a head above the body
  scores = rng.uniform(0.5, 1.0, size=(n, k)).astype(np.float32)
  scores[:, 7] = 0.1  # a joint the estimator is unsure of
  return keypoints, scores


def _similarity(keypoints, angle, scale, shift):
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
  return (keypoints @ rotation.T * scale + shift).astype(np.float32)


def test_normalisation_is_invariant_to_translation_scale_rotation():
  keypoints, scores = _poses(np.random.default_rng(0))
  reference, mask, has_pose = map(np.asarray, pose_encoder.normalise(keypoints, scores))
  assert has_pose.all() and not mask[:, 7].any()
  moved = _similarity(keypoints, 1.1, 2.5, np.array([-40.0, 90.0], np.float32))
  normalised, moved_mask, _ = map(np.asarray, pose_encoder.normalise(moved, scores))
  np.testing.assert_allclose(normalised, reference, atol=1e-5)
  np.testing.assert_array_equal(moved_mask, mask)
  # Confident joints in the unit disc; the head (mean of joints 0-4) straight up on the negative y axis.
  assert np.max(np.linalg.norm(reference, axis=-1)) <= 1 + 1e-6
  head = reference[:, :5].mean(axis=1)
  np.testing.assert_allclose(head[:, 0], 0.0, atol=1e-5)
  assert np.all(head[:, 1] < 0)


def test_frames_with_fewer_than_three_confident_joints_have_no_pose():
  keypoints, scores = _poses(np.random.default_rng(1), n=2)
  scores[1] = 0.0
  scores[1, :2] = 0.9
  normalised, mask, has_pose = map(np.asarray, pose_encoder.normalise(keypoints, scores))
  assert has_pose.tolist() == [True, False]
  assert not mask[1].any() and np.all(normalised[1] == 0)
  # Without a confident head joint the topmost confident joint is the head.
  scores[0, :5] = 0.0
  normalised, mask, _ = map(np.asarray, pose_encoder.normalise(keypoints, scores))
  top = np.argmin(np.where(mask[0], normalised[0, :, 1], np.inf))
  np.testing.assert_allclose(normalised[0, top, 0], 0.0, atol=1e-5)


def test_encoder_is_permutation_invariant_and_ignores_masked_joints():
  keypoints, scores = _poses(np.random.default_rng(2))
  poses, mask, _ = pose_encoder.normalise(keypoints, scores)
  encoder = pose_encoder.PoseEncoder(output_dim=8, width=16)
  params = encoder.init(jax.random.key(0), poses, mask)["params"]
  out = np.asarray(encoder.apply({"params": params}, poses, mask))
  assert out.shape == (6, 8)
  order = np.random.default_rng(3).permutation(17)
  permuted = np.asarray(encoder.apply({"params": params}, poses[:, order], mask[:, order]))
  np.testing.assert_allclose(permuted, out, atol=1e-6)
  garbage = np.asarray(poses).copy()
  garbage[:, 7] = 1e3  # joint 7 is masked
  np.testing.assert_array_equal(np.asarray(encoder.apply({"params": params}, garbage, mask)), out)


def test_pose_distance_and_negative_mask():
  rng = np.random.default_rng(4)
  a = rng.normal(size=(3, 17, 2)).astype(np.float32)
  mask = np.ones((3, 17), bool)
  mask[2, 3:] = False  # only 3 joints
  b = a.copy()
  b[1] += np.array([0.3, 0.4], np.float32)  # every joint moved by 0.5
  d = np.asarray(pose_encoder.pose_distance(a, mask, b, mask))
  np.testing.assert_allclose(np.diag(d), [0.0, 0.5, 0.0], atol=1e-6)
  fewer = mask.copy()
  fewer[2, 2] = False
  assert np.isinf(np.asarray(pose_encoder.pose_distance(a, fewer, a, fewer))[2, 2])
  poses = rng.normal(size=(2, 70, 17, 2)).astype(np.float32)
  joint_mask = rng.uniform(size=(2, 70, 17)) > 0.2
  dense = np.asarray(pose_encoder.pose_distance(poses, joint_mask, poses, joint_mask))
  for delta in (0.0, 1.0, 1.3):
    blocked = np.asarray(pose_encoder.negative_mask(jnp.asarray(poses), jnp.asarray(joint_mask), delta, block=16))
    np.testing.assert_array_equal(blocked, dense >= delta)
