"""Pose files: strict reading, COCO-keypoints conversion with the single-person rule, alignment to feature steps."""

import json

import numpy as np
import pytest

from hal_jax.data import poses
from hal_jax.errors import DataError


def _track(frames=(0, 5, 10), k=17):
  rng = np.random.default_rng(0)
  f = len(frames)
  return poses.PoseTrack(np.array(frames), rng.uniform(0, 100, (f, k, 2)).astype(np.float32),
                         rng.uniform(0, 1, (f, k)).astype(np.float32), "coco17" if k == 17 else "coco_wholebody133")


def _write_raw(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def test_round_trip(tmp_path):
  track = _track()
  path = str(tmp_path / "poses" / "v.npz")
  poses.write_pose_file(path, track)
  read = poses.read_pose_file(path, num_frames=11, layout="coco17")
  np.testing.assert_array_equal(read.frame_index, track.frame_index)
  np.testing.assert_array_equal(read.keypoints, track.keypoints)
  assert read.layout == "coco17" and read.keypoints.dtype == np.float32


@pytest.mark.parametrize("change,message", [
    (dict(keypoints=np.zeros((3, 17, 3), np.float32)), "keypoints must be"),
    (dict(scores=np.zeros((3, 16), np.float32)), "scores must be"),
    (dict(frame_index=np.array([0.0, 5.0, 10.0])), "integer"),
    (dict(keypoints=np.full((3, 17, 2), np.nan, np.float32)), "NaN or inf"),
    (dict(scores=np.full((3, 17), np.inf, np.float32)), "NaN or inf"),
    (dict(frame_index=np.array([0, 10, 5])), "strictly increasing"),
    (dict(frame_index=np.array([0, 5, 11])), r"\[0, 11\)"),
    (dict(frame_index=np.array([-1, 5, 10])), r"\[0, 11\)"),
    (dict(layout=np.array("coco_wholebody133")), "17 keypoints per pose, but layout"),
    (dict(layout=np.array("openpose")), "unknown keypoint layout"),
    (dict(layout=None), "lacks"),
])
def test_bad_files_are_one_error_naming_the_file(tmp_path, change, message):
  track = _track()
  arrays = dict(frame_index=track.frame_index, keypoints=track.keypoints, scores=track.scores,
                layout=np.array(track.layout))
  arrays.update(change)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  path = _write_raw(tmp_path / "v.npz", **arrays)
  with pytest.raises(DataError, match=message) as info:
    poses.read_pose_file(path, num_frames=11)
  assert info.value.where == path


def test_missing_and_unreadable_files(tmp_path):
  with pytest.raises(DataError, match="no pose file"):
    poses.read_pose_file(str(tmp_path / "absent.npz"))
  (tmp_path / "bad.npz").write_text("not a zip")
  with pytest.raises(DataError, match="not a readable"):
    poses.read_pose_file(str(tmp_path / "bad.npz"))
  path = str(tmp_path / "v.npz")
  poses.write_pose_file(path, _track())
  with pytest.raises(DataError, match="config expects"):
    poses.read_pose_file(path, layout="coco_wholebody133")


def _person(x0, y0, size, score):
  grid = np.stack([np.linspace(x0, x0 + size, 17), np.linspace(y0, y0 + size, 17), np.full(17, score)], 1)
  return grid.reshape(-1).tolist()


def test_coco_single_person_rule(tmp_path):
  detections = [
      {"image_id": 5, "category_id": 1, "keypoints": _person(0, 0, 50, 0.9)},
      {"image_id": 5, "category_id": 1, "keypoints": _person(100, 100, 80, 0.8)},  # largest confident: kept
      {"image_id": 5, "category_id": 1, "keypoints": _person(0, 0, 300, 0.2)},  # largest, not confident
      {"image_id": 0, "category_id": 1, "keypoints": _person(10, 10, 40, 0.5)},
      {"image_id": 9, "category_id": 1, "keypoints": _person(10, 10, 40, 0.1)},  # nobody confident: no pose
  ]
  path = tmp_path / "coco.json"
  path.write_text(json.dumps(detections))
  track = poses.read_coco_keypoints(str(path))
  assert track.frame_index.tolist() == [0, 5]
  np.testing.assert_allclose(track.keypoints[1, 0], [100, 100])
  np.testing.assert_allclose(track.scores[1], 0.8, rtol=1e-6)
  path.write_text(json.dumps([{"image_id": 0, "keypoints": [1.0] * 50}]))
  with pytest.raises(DataError, match="51 numbers"):
    poses.read_coco_keypoints(str(path))


def test_coco_command_line(tmp_path, capsys):
  path = tmp_path / "coco.json"
  path.write_text(json.dumps([{"image_id": 3, "keypoints": _person(0, 0, 50, 0.9)}]))
  out = str(tmp_path / "poses" / "v.npz")
  poses.main(["--coco", str(path), "--out", out])
  assert poses.read_pose_file(out).frame_index.tolist() == [3]
  assert "1 poses" in capsys.readouterr().out


def test_alignment_to_feature_steps():
  track = _track(frames=(0, 5, 10, 15))
  track.scores[:] = 0.9
  # Steps of 4 raw frames: a step has a pose only when a pose frame is within 2 frames of its frame.
  keypoints, scores = poses.align_to_steps(track, np.array([1, 6, 8, 13, 17]), sample_rate=4)
  assert (scores[:, 0] > 0).tolist() == [True, True, True, True, True]
  np.testing.assert_array_equal(keypoints[2], track.keypoints[2])  # frame 8 -> pose frame 10
  keypoints, scores = poses.align_to_steps(track, np.array([4, 6, 7, 11]), sample_rate=2)
  assert (scores[:, 0] > 0).tolist() == [True, True, False, True]  # 7 is 2 frames from pose frame 5
  np.testing.assert_array_equal(keypoints[3], track.keypoints[2])
  assert not keypoints[2].any()
  empty = poses.PoseTrack(np.zeros(0, np.int64), np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32),
                          "coco17")
  keypoints, scores = poses.align_to_steps(empty, np.array([0, 1]), sample_rate=1)
  assert keypoints.shape == (2, 17, 2) and not scores.any()
