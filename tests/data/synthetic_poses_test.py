"""Synthetic poses: same bytes for everything else, valid pose files, and poses that carry the action."""

import filecmp
import os

import numpy as np

from hal_jax.data import segmentation_formats
from hal_jax.data import poses
from hal_jax.data import synthetic
from hal_jax.models import pose_encoder


def test_pose_preset_adds_poses_and_changes_nothing_else(tmp_path):
  plain = synthetic.generate(tmp_path / "plain", synthetic.PRESETS["test"])
  with_poses = synthetic.generate(tmp_path / "poses", synthetic.PRESETS["pose_test"])
  for folder in ("features", "groundTruth", "transcripts", "latents", "splits"):
    names = sorted(os.listdir(os.path.join(plain, folder)))
    assert names == sorted(os.listdir(os.path.join(with_poses, folder)))
    match, mismatch, errors = filecmp.cmpfiles(os.path.join(plain, folder), os.path.join(with_poses, folder), names,
                                               shallow=False)
    assert not mismatch and not errors, (folder, mismatch, errors)
  assert not os.path.exists(os.path.join(plain, "poses"))

  test = segmentation_formats.load_mstcn_split(with_poses, "test")
  gathered, labels = [], []
  for video in test.videos:
    track = poses.read_pose_file(os.path.join(with_poses, "poses", f"{video.name}.npz"), len(video.labels), "coco17")
    assert track.frame_index.tolist() == list(range(0, len(video.labels), 5))
    gathered.append((track.keypoints, track.scores))
    labels.append(video.labels[track.frame_index])
  keypoints = np.concatenate([k for k, _ in gathered])
  scores = np.concatenate([s for _, s in gathered])
  labels = np.concatenate(labels)
  normalised, mask, has_pose = map(np.asarray, pose_encoder.normalise(keypoints, scores))
  assert has_pose.mean() > 0.95
  distance = np.asarray(pose_encoder.pose_distance(normalised, mask, normalised, mask))
  same = labels[:, None] == labels[None, :]
  finite = np.isfinite(distance)
  # Normalised poses carry the action: same-class pairs are much closer than pairs of different classes.
  assert np.median(distance[same & finite]) < 0.5 * np.median(distance[~same & finite])
  print("median normalised distance, same / other class:", np.median(distance[same & finite]),
        np.median(distance[~same & finite]))
