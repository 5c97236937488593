"""Synthetic 2-D poses for the synthetic segmentation data sets (spec pose.md §6, "project choice for testing").

Every class (action or background) has a 17-joint COCO template: a canonical standing skeleton whose joints, the
arms most, are moved by a per-class random offset, plus a per-class drift direction. In a segment of class c the
pose moves linearly from template_c to template_c + drift_c (a held action changes a little over time), with
independent per-frame joint noise. A random similarity transform per video (translation, scale, rotation) places the
skeleton in a 640x480 image, so that pose normalisation matters. A few joints per frame get a low confidence score.

Poses are written every `pose_stride` raw frames to ``poses/<video>.npz`` in the format of `hal_jax.data.poses`.
They come from random streams of their own: the features, labels and latents of a data set with poses are the same
bytes as those of the data set without them.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from hal_jax.data import poses as poses_lib
from hal_jax.data import synthetic_process as process_lib
from hal_jax.data import synthetic_segmentation
from hal_jax.errors import ConfigError

# Random-stream keys beside synthetic_process's (WORLD_* 0-3; per video, parts 0-1): the pose templates of the world
# and the poses of each video.
WORLD_POSES = 4
PART_POSES = 2

# A standing COCO-17 skeleton, body height 1, image axes (y grows downward), origin between the hips.
CANONICAL_SKELETON = np.array([
    (0.0, -0.85), (-0.03, -0.88), (0.03, -0.88), (-0.07, -0.86), (0.07, -0.86),  # nose, eyes, ears
    (-0.17, -0.68), (0.17, -0.68), (-0.24, -0.42), (0.24, -0.42), (-0.26, -0.18), (0.26, -0.18),  # arms
    (-0.1, -0.2), (0.1, -0.2), (-0.11, 0.15), (0.11, 0.15), (-0.12, 0.5), (0.12, 0.5),  # hips, knees, ankles
], np.float64)
_ARM_JOINTS = np.arange(5, 11)


@dataclasses.dataclass(frozen=True)
class PoseConfig:
  """How the synthetic poses are drawn.

  Attributes:
    pose_stride: a pose every this many raw frames (the paper: 5).
    arm_spread: std of the per-class offset of shoulder, elbow and wrist joints (body heights).
    body_spread: std of the per-class offset of the other joints.
    drift: std of the per-class drift over a segment.
    noise: std of the per-frame joint noise.
    low_confidence: probability that a joint's score falls below the confidence threshold.
    scale_range: (min, max) body height in pixels.
    max_rotation: the per-video rotation is uniform in [-max_rotation, max_rotation] radians.
  """
  pose_stride: int = 5
  arm_spread: float = 0.25
  body_spread: float = 0.06
  drift: float = 0.08
  noise: float = 0.015
  low_confidence: float = 0.05
  scale_range: tuple[float, float] = (120.0, 360.0)
  max_rotation: float = 0.6

  def validate(self) -> None:
    if self.pose_stride < 1:
      raise ConfigError("poses.pose_stride", f"must be >= 1, got {self.pose_stride}")
    if not 0 < self.scale_range[0] <= self.scale_range[1]:
      raise ConfigError("poses.scale_range", f"must be (min, max) with 0 < min <= max, got {self.scale_range}")
    for name in ("arm_spread", "body_spread", "drift", "noise", "max_rotation"):
      if getattr(self, name) < 0:
        raise ConfigError(f"poses.{name}", f"must be >= 0, got {getattr(self, name)}")
    if not 0 <= self.low_confidence <= 1:
      raise ConfigError("poses.low_confidence", f"must be a probability, got {self.low_confidence}")


@dataclasses.dataclass(frozen=True)
class PoseSegmentationConfig(synthetic_segmentation.SegmentationConfig):
  """A synthetic segmentation data set with poses (the `poses` settings); everything else as SegmentationConfig."""
  poses: PoseConfig = PoseConfig()

  def validate(self) -> None:
    super().validate()
    self.poses.validate()


def class_templates(config: PoseConfig, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-class start poses and drifts: two [C, 17, 2] arrays in body units."""
  rng = process_lib.rng_for(seed, WORLD_POSES)
  spread = np.full(len(CANONICAL_SKELETON), config.body_spread)
  spread[_ARM_JOINTS] = config.arm_spread
  offsets = rng.normal(size=(num_classes, len(CANONICAL_SKELETON), 2)) * spread[None, :, None]
  drifts = rng.normal(size=(num_classes, len(CANONICAL_SKELETON), 2)) * config.drift
  return CANONICAL_SKELETON[None] + offsets, drifts


def video_track(config: PoseConfig, templates: tuple[np.ndarray, np.ndarray], segments, rng: np.random.Generator
                ) -> poses_lib.PoseTrack:
  """The pose track of one video of (label, start, end_exclusive) raw-frame segments."""
  starts, drifts = templates
  length = segments[-1][2]
  frames = np.arange(0, length, config.pose_stride)
  labels = np.empty(length, np.int64)
  progress = np.empty(length)
  for label, start, end in segments:
    labels[start:end] = label
    progress[start:end] = (np.arange(end - start) + 0.5) / (end - start)
  body = starts[labels[frames]] + progress[frames, None, None] * drifts[labels[frames]]
  body = body + rng.normal(size=body.shape) * config.noise
  angle = rng.uniform(-config.max_rotation, config.max_rotation)
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  scale = rng.uniform(*config.scale_range)
  centre = rng.uniform([0.3 * 640, 0.35 * 480], [0.7 * 640, 0.65 * 480])
  pixels = body @ rotation.T * scale + centre
  scores = rng.uniform(0.6, 1.0, size=body.shape[:2])
  unsure = rng.random(size=scores.shape) < config.low_confidence
  scores[unsure] = rng.uniform(0.0, 0.3, size=int(unsure.sum()))
  return poses_lib.PoseTrack(frames.astype(np.int64), pixels.astype(np.float32), scores.astype(np.float32), "coco17")


def write_poses(root: str, world: synthetic_segmentation.SegmentationWorld) -> None:
  """Writes ``<root>/poses/<video>.npz`` for every video of a data set whose config is a PoseSegmentationConfig."""
  config = world.config
  templates = class_templates(config.poses, world.label_map.num_classes, config.seed)
  for split in synthetic_segmentation.SPLITS:
    for index in range(synthetic_segmentation.num_videos(world, split)):
      name, segments = synthetic_segmentation.video_structure(world, split, index)
      rng = process_lib.rng_for(config.seed, process_lib.VIDEO_STREAMS[split], index, PART_POSES)
      track = video_track(config.poses, templates, [(label, start, end) for label, start, end in segments], rng)
      poses_lib.write_pose_file(poses_lib.pose_path(os.path.join(root, poses_lib.POSE_DIRECTORY), name), track)
