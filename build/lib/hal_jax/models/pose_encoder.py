"""The pose branch: keypoint normalisation, the point-set pose encoder and the pairwise pose distance.

Spec: ../shared/specs/pose.md §2.2 (normalisation), §2.3 (encoder, paper Eqs. 2-4) and §3 (distance). Every function
works on any leading axes (`...` = e.g. [batch, frames]) and uses masks, never Python branches, so it jits once per
keypoint count K.

Normalisation of one pose p [K, 2] (pixels, image y down) with scores [K]:
  1. confident joints J = {k: score_k >= 0.3}; fewer than 3 -> the frame has no pose;
  2. centre c = mean of the confident joints; q = p - c;
  3. scale: q / max_k∈J |q_k| (confident joints in the unit disc);
  4. head h = mean of the confident nose/eyes/ears (indices 0-4), else the topmost confident joint;
  5. rotate by φ = -π/2 - atan2(h_y, h_x), so the head points straight up (negative y).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hal_jax.models import dropout as dropout_lib

CONFIDENCE_THRESHOLD = 0.3
MIN_JOINTS = 3
HEAD_JOINTS = 5  # nose, left/right eye, left/right ear: the first five of COCO-17 and of COCO-WholeBody-133.
LAYER_NORM_EPSILON = 1e-5


def normalise(keypoints: jax.Array, scores: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Centres, scales and rotates poses (module docstring).

  Args:
    keypoints: [..., K, 2] pixel coordinates.
    scores: [..., K] confidences (0 where a step has no pose).

  Returns:
    normalised [..., K, 2] (0 on masked joints), joint_mask [..., K] bool (confident joints of frames that have a
    pose), has_pose [...] bool.
  """
  confident = scores >= CONFIDENCE_THRESHOLD
  count = jnp.sum(confident, axis=-1)
  has_pose = count >= MIN_JOINTS
  weight = confident.astype(keypoints.dtype)[..., None]
  centre = jnp.sum(keypoints * weight, axis=-2, keepdims=True) / jnp.maximum(count, 1)[..., None, None]
  centred = (keypoints - centre) * weight
  radius = jnp.sqrt(jnp.max(jnp.sum(centred * centred, axis=-1), axis=-1))
  centred = centred / jnp.where(radius > 0, radius, 1.0)[..., None, None]
  head_weight = weight[..., :HEAD_JOINTS, :]
  head_count = jnp.sum(head_weight, axis=(-2, -1))
  head = jnp.sum(centred[..., :HEAD_JOINTS, :] * head_weight, axis=-2) / jnp.maximum(head_count, 1.0)[..., None]
  topmost_index = jnp.argmin(jnp.where(confident, centred[..., 1], jnp.inf), axis=-1)
  topmost = jnp.take_along_axis(centred, topmost_index[..., None, None], axis=-2)[..., 0, :]
  head = jnp.where((head_count > 0)[..., None], head, topmost)
  angle = -jnp.pi / 2 - jnp.arctan2(head[..., 1], head[..., 0])
  cos, sin = jnp.cos(angle)[..., None], jnp.sin(angle)[..., None]
  x, y = centred[..., 0], centred[..., 1]
  rotated = jnp.stack([cos * x - sin * y, sin * x + cos * y], axis=-1)
  joint_mask = confident & has_pose[..., None]
  return jnp.where(joint_mask[..., None], rotated, 0.0), joint_mask, has_pose


def pose_distance(poses_a: jax.Array, mask_a: jax.Array, poses_b: jax.Array, mask_b: jax.Array) -> jax.Array:
  """Mean per-joint Euclidean distance over the joints confident in both poses; +inf with fewer than 3 shared.

  Args:
    poses_a: [..., A, K, 2] normalised poses; mask_a: [..., A, K] bool.
    poses_b: [..., B, K, 2]; mask_b: [..., B, K] bool.

  Returns:
    [..., A, B] distances.
  """
  difference = poses_a[..., :, None, :, :] - poses_b[..., None, :, :, :]
  squared = jnp.sum(difference * difference, axis=-1)
  shared = mask_a[..., :, None, :] & mask_b[..., None, :, :]
  norm = jnp.sqrt(jnp.where(shared, squared, 0.0))
  count = jnp.sum(shared, axis=-1)
  mean = jnp.sum(jnp.where(shared, norm, 0.0), axis=-1) / jnp.maximum(count, 1)
  return jnp.where(count >= MIN_JOINTS, mean, jnp.inf)


def negative_mask(poses: jax.Array, joint_mask: jax.Array, delta: float, block: int = 64) -> jax.Array:
  """Which frame pairs are negatives of each other: d(t, j) >= δ, per video, computed in anchor blocks.

  Parameter-free and without gradient. Blocks of `block` anchors bound the [B, block, T, K] working set.

  Args:
    poses: [B, T, K, 2] normalised poses; joint_mask: [B, T, K] bool.
    delta: the threshold δ (0 keeps every pair: the vanilla loss).
    block: anchors per block.

  Returns:
    [B, T, T] bool.
  """
  poses, joint_mask = jax.lax.stop_gradient(poses), jax.lax.stop_gradient(joint_mask)
  batch, frames = joint_mask.shape[:2]
  if delta <= 0.0:
    return jnp.ones((batch, frames, frames), bool)
  block = min(block, frames)
  num_blocks = -(-frames // block)
  pad = num_blocks * block - frames
  padded_poses = jnp.pad(poses, ((0, 0), (0, pad), (0, 0), (0, 0)))
  padded_mask = jnp.pad(joint_mask, ((0, 0), (0, pad), (0, 0)))
  anchors = padded_poses.reshape(batch, num_blocks, block, *poses.shape[2:]).swapaxes(0, 1)
  anchor_masks = padded_mask.reshape(batch, num_blocks, block, joint_mask.shape[2]).swapaxes(0, 1)
  rows = jax.lax.map(lambda a: pose_distance(a[0], a[1], poses, joint_mask) >= delta, (anchors, anchor_masks))
  return rows.swapaxes(0, 1).reshape(batch, num_blocks * block, frames)[:, :frames]


class PoseEncoder(nn.Module):
  """Paper Eqs. 2-4 as a point-set encoder (spec §2.3): a shared per-keypoint MLP, residual, masked max over K, Γ.

  Attributes:
    output_dim: D_e, the host's embedding size.
    width: the per-keypoint width (256).
    dropout_rate: after each ReLU (0.1).
  """
  output_dim: int
  width: int = 256
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, poses: jax.Array, joint_mask: jax.Array, deterministic: bool = True) -> jax.Array:
    """Embeds normalised poses.

    Args:
      poses: [..., K, 2] normalised keypoints.
      joint_mask: [..., K] bool; masked joints have no effect on the output.
      deterministic: no dropout when True; otherwise draws from the 'dropout' rng stream.

    Returns:
      [..., output_dim]; frames without any joint get Γ(0).
    """
    drop = lambda x: dropout_lib.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    z1 = drop(nn.relu(nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name="norm_1")(nn.Dense(self.width, name="dense_1")(
        poses))))
    z2 = drop(nn.relu(nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name="norm_2")(nn.Dense(self.width, name="dense_2")(
        z1))))
    pooled = jnp.max(jnp.where(joint_mask[..., None], z1 + z2, -jnp.inf), axis=-2)
    pooled = jnp.where(jnp.any(joint_mask, axis=-1)[..., None], pooled, 0.0)
    return nn.Dense(self.output_dim, name="gamma")(pooled)
