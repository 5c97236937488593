"""Per-video 2-D poses: the pose file, its strict reader, COCO-keypoints conversion, and alignment to feature steps.

Spec: ../shared/specs/pose.md §6 (file), §2.2 (confidence) and §4 (alignment). A pose file holds the poses of the
frames an estimator was run on (every `pose_stride`-th raw frame in the paper), one per video,
``<data_dir>/poses/<video>.npz``:

```
frame_index  [F]       int      raw frame of each pose, strictly increasing, in [0, raw length)
keypoints    [F, K, 2] float    (x, y) in pixels, image y growing downward
scores       [F, K]    float    the estimator's confidence per keypoint
layout       []        str      keypoint layout, a key of LAYOUTS ("coco17": K = 17, "coco_wholebody133": K = 133)
```

`read_pose_file` refuses anything else with one `DataError` naming the file (shape or dtype, NaN/inf, frame indices
outside the video or unsorted, K different from the layout). `read_coco_keypoints` reads the COCO keypoint results
format that common estimators write (a JSON list of detections ``{"image_id": frame, "keypoints": [x, y, s] * K}``)
and keeps one person per frame (spec §6: the largest keypoint bounding box among the people whose mean confidence
is at least `PERSON_MIN_CONFIDENCE`).

`align_to_steps` turns a pose track into per-step arrays for the feature frames a pipeline took after temporal
downsampling: step k (raw frame r_k) gets the pose of the nearest pose frame f if ``|f - r_k| <= sample_rate / 2``,
else none (scores 0, so the step has no confident joint and takes no part in the pose loss).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import zipfile
from collections.abc import Sequence

import numpy as np

from hal_jax.data import formats
from hal_jax.data import segmentation_formats
from hal_jax.data import strict_files
from hal_jax.errors import DataError, exit_on_bad_input

# Keypoint layouts and their K. Both start with nose, eyes and ears (indices 0-4), which the normalisation uses.
LAYOUTS = {"coco17": 17, "coco_wholebody133": 133}
# The single-person rule of spec §6: people below this mean keypoint confidence are not candidates.
PERSON_MIN_CONFIDENCE = 0.3
POSE_DIRECTORY = "poses"


@dataclasses.dataclass(frozen=True)
class PoseTrack:
  """The poses of one video (see the module docstring for the arrays)."""
  frame_index: np.ndarray  # [F] int64
  keypoints: np.ndarray  # [F, K, 2] float32
  scores: np.ndarray  # [F, K] float32
  layout: str

  @property
  def num_keypoints(self) -> int:
    return LAYOUTS[self.layout]


def pose_path(pose_dir: str, video: str) -> str:
  """<pose_dir>/<video>.npz."""
  return os.path.join(pose_dir, f"{video}.npz")


def write_pose_file(path: str, track: PoseTrack) -> None:
  """Writes `track` to `path` atomically (temporary name, then rename)."""
  buffer = io.BytesIO()
  np.savez(buffer, frame_index=np.asarray(track.frame_index, np.int64),
           keypoints=np.asarray(track.keypoints, np.float32), scores=np.asarray(track.scores, np.float32),
           layout=np.array(track.layout))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with formats.atomic_output(path, binary=True) as f:
    f.write(buffer.getvalue())


def validate_track(path: str, track: PoseTrack, num_frames: int | None) -> PoseTrack:
  """`track` with canonical dtypes, or a DataError naming `path` (see the module docstring for the rules).

  Args:
    path: the file the track came from (for the message).
    track: the arrays as read.
    num_frames: the video's raw length; None skips the range check of the frame indices.
  """
  if track.layout not in LAYOUTS:
    raise DataError(path, f"unknown keypoint layout {track.layout!r}; expected one of {sorted(LAYOUTS)}")
  frame_index, keypoints, scores = (np.asarray(a) for a in (track.frame_index, track.keypoints, track.scores))
  if frame_index.ndim != 1 or not np.issubdtype(frame_index.dtype, np.integer):
    raise DataError(path, f"frame_index must be a 1-D integer array, got {frame_index.dtype} {frame_index.shape}")
  num_poses = frame_index.shape[0]
  if keypoints.ndim != 3 or keypoints.shape[0] != num_poses or keypoints.shape[2] != 2:
    raise DataError(path, f"keypoints must be [F, K, 2] with F = {num_poses} (frame_index), got {keypoints.shape}")
  k = keypoints.shape[1]
  if k != LAYOUTS[track.layout]:
    raise DataError(path, f"{k} keypoints per pose, but layout {track.layout!r} has {LAYOUTS[track.layout]}")
  if scores.shape != (num_poses, k):
    raise DataError(path, f"scores must be [F, K] = {[num_poses, k]}, got {list(scores.shape)}")
  for name, array in (("keypoints", keypoints), ("scores", scores)):
    if not np.issubdtype(array.dtype, np.floating):
      raise DataError(path, f"{name} must be floating point, got {array.dtype}")
    if not np.all(np.isfinite(array)):
      bad = int(np.argwhere(~np.isfinite(array.reshape(num_poses, -1)))[0, 0])
      raise DataError(path, f"{name} has NaN or inf (first at pose {bad}, frame {int(frame_index[bad])})")
  if num_poses:
    if np.any(np.diff(frame_index) <= 0):
      bad = int(np.flatnonzero(np.diff(frame_index) <= 0)[0])
      raise DataError(path, f"frame_index must be strictly increasing; pose {bad + 1} (frame "
                      f"{int(frame_index[bad + 1])}) follows frame {int(frame_index[bad])}")
    if frame_index[0] < 0 or (num_frames is not None and frame_index[-1] >= num_frames):
      raise DataError(path, f"frame_index must lie in [0, {num_frames}) (the video's frames), got "
                      f"[{int(frame_index[0])}, {int(frame_index[-1])}]")
  return PoseTrack(frame_index.astype(np.int64), keypoints.astype(np.float32), scores.astype(np.float32),
                   track.layout)


def read_pose_file(path: str, num_frames: int | None = None, layout: str | None = None) -> PoseTrack:
  """Reads and validates one pose file.

  Args:
    path: the .npz file.
    num_frames: the video's raw length (frame indices must be below it); None skips that check.
    layout: the layout the experiment expects (config.pose_layout); None accepts any known layout.

  Raises:
    DataError: naming `path`, for a missing or malformed file.
  """
  if not os.path.isfile(path):
    raise DataError(path, "no pose file (the config trains with poses: every video needs one)")
  try:
    with np.load(path, allow_pickle=False) as data:
      missing = [key for key in ("frame_index", "keypoints", "scores", "layout") if key not in data.files]
      if missing:
        raise DataError(path, f"pose file lacks {missing} (needs frame_index, keypoints, scores, layout)")
      arrays = {key: data[key] for key in ("frame_index", "keypoints", "scores", "layout")}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
    raise DataError(path, f"not a readable .npz pose file ({error})") from None
  stored = arrays["layout"]
  if stored.ndim != 0 or stored.dtype.kind != "U":
    raise DataError(path, f"layout must be a string, got {stored.dtype} {stored.shape}")
  track = validate_track(path, PoseTrack(arrays["frame_index"], arrays["keypoints"], arrays["scores"], str(stored)),
                         num_frames)
  if layout is not None and track.layout != layout:
    raise DataError(path, f"keypoint layout {track.layout!r} ({track.num_keypoints} keypoints), but the config "
                    f"expects {layout!r} (config.pose_layout)")
  return track


def load_split_poses(pose_dir: str, dataset: segmentation_formats.SegmentationDataset,
                     layout: str) -> tuple[PoseTrack, ...]:
  """The validated pose track of every video of `dataset`, in order (``<pose_dir>/<video>.npz`` each).

  Raises:
    DataError: naming the first missing or malformed pose file.
  """
  return tuple(read_pose_file(pose_path(pose_dir, video.name), len(video.features), layout)
               for video in dataset.videos)


def _choose_person(people: Sequence[np.ndarray]) -> np.ndarray | None:
  """The person [K, 3] kept by the single-person rule, or None when nobody is confident enough."""
  best, best_area = None, -1.0
  for person in people:
    if person[:, 2].mean() < PERSON_MIN_CONFIDENCE:
      continue
    extent = person[:, :2].max(axis=0) - person[:, :2].min(axis=0)
    area = float(extent[0] * extent[1])
    if area > best_area:
      best, best_area = person, area
  return best


def read_coco_keypoints(path: str, layout: str = "coco17") -> PoseTrack:
  """Reads COCO keypoint results (module docstring) into a track, one person per frame.

  Frames where nobody passes the single-person rule have no pose. `image_id` is the raw frame index.
  """
  if layout not in LAYOUTS:
    raise DataError(path, f"unknown keypoint layout {layout!r}; expected one of {sorted(LAYOUTS)}")
  k = LAYOUTS[layout]
  detections = strict_files.load_json(path)
  if not isinstance(detections, list):
    raise DataError(path, "expected a JSON list of detections (COCO keypoint results format)")
  people: dict[int, list[np.ndarray]] = {}
  for i, detection in enumerate(detections):
    where = f"detection {i}"
    detection = strict_files.json_object(detection, path, where)
    frame = strict_files.json_key(detection, "image_id", path, where)
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
      raise DataError(path, f"{where}: image_id (the frame index) must be an integer >= 0, got {frame!r}")
    values = strict_files.json_key(detection, "keypoints", path, where)
    if not isinstance(values, list) or len(values) != 3 * k:
      raise DataError(path, f"{where}: keypoints must be a list of {3 * k} numbers (x, y, score per keypoint of "
                      f"{layout}), got {len(values) if isinstance(values, list) else type(values).__name__}")
    person = np.array([strict_files.json_number(v, path, f"{where} keypoints[{j}]") for j, v in enumerate(values)],
                      np.float64).reshape(k, 3)
    people.setdefault(frame, []).append(person)
  kept = [(frame, _choose_person(people[frame])) for frame in sorted(people)]
  kept = [(frame, person) for frame, person in kept if person is not None]
  frames = np.array([frame for frame, _ in kept], np.int64)
  stacked = np.stack([person for _, person in kept]) if kept else np.zeros((0, k, 3))
  return validate_track(path, PoseTrack(frames, stacked[..., :2].astype(np.float32),
                                        stacked[..., 2].astype(np.float32), layout), None)


def align_to_steps(track: PoseTrack, frames: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  """The pose of each feature step (module docstring).

  Args:
    track: the video's poses.
    frames: [T] int raw frame taken for each downsampled step.
    sample_rate: the temporal downsampling factor s (a step spans s raw frames).

  Returns:
    keypoints [T, K, 2] float32 (0 where the step has no pose) and scores [T, K] float32 (0 likewise).
  """
  frames = np.asarray(frames, np.int64)
  k = track.num_keypoints
  keypoints = np.zeros((len(frames), k, 2), np.float32)
  scores = np.zeros((len(frames), k), np.float32)
  if len(track.frame_index) == 0 or len(frames) == 0:
    return keypoints, scores
  right = np.clip(np.searchsorted(track.frame_index, frames), 0, len(track.frame_index) - 1)
  left = np.clip(right - 1, 0, len(track.frame_index) - 1)
  nearest = np.where(np.abs(track.frame_index[left] - frames) <= np.abs(track.frame_index[right] - frames),
                     left, right)
  has_pose = 2 * np.abs(track.frame_index[nearest] - frames) <= sample_rate
  keypoints[has_pose] = track.keypoints[nearest[has_pose]]
  scores[has_pose] = track.scores[nearest[has_pose]]
  return keypoints, scores


def main(argv: Sequence[str] | None = None) -> None:
  """Command line: converts COCO keypoint results of one video into its pose file."""
  parser = argparse.ArgumentParser(prog="python -m hal_jax.data.poses",
                                   description="Convert COCO keypoint results (one video) into a hal_jax pose file.")
  parser.add_argument("--coco", required=True, help="COCO keypoint results JSON; image_id is the raw frame index")
  parser.add_argument("--out", required=True, help="the pose file to write, e.g. DATA/poses/<video>.npz")
  parser.add_argument("--layout", default="coco17", choices=sorted(LAYOUTS))
  parser.add_argument("--verbose", action="store_true", help="print the traceback of input errors")
  args = parser.parse_args(argv)
  with exit_on_bad_input(args.verbose):
    track = read_coco_keypoints(args.coco, args.layout)
    write_pose_file(args.out, track)
    print(f"wrote {args.out}: {len(track.frame_index)} poses, layout {track.layout}")


if __name__ == "__main__":
  main(sys.argv[1:])
