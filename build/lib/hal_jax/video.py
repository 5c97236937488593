"""Decoding video files with PyAV (FFmpeg) into frames at a fixed rate, resized and centre-cropped.

Every problem with a file (not a video, no video stream, corrupt or truncated data, no decodable frame) is one
`DataError` naming the file.
"""

from __future__ import annotations

import os

import numpy as np

from hal_jax.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


def list_videos(directory: str) -> list[str]:
  """The video files directly in `directory` (by suffix), sorted by name."""
  if not os.path.isdir(directory):
    raise DataError(directory, "video directory does not exist")
  names = sorted(n for n in os.listdir(directory) if n.lower().endswith(VIDEO_SUFFIXES))
  if not names:
    raise DataError(directory, f"no video files ({', '.join(VIDEO_SUFFIXES)})")
  return [os.path.join(directory, n) for n in names]


def _square(frame: np.ndarray, size: int) -> np.ndarray:
  """Centre crop of an [H, W, 3] frame whose shorter side is already `size`."""
  height, width = frame.shape[:2]
  top, left = (height - size) // 2, (width - size) // 2
  return frame[top:top + size, left:left + size]


def read_frames(path: str, fps: float, size: int) -> tuple[np.ndarray, float]:
  """Frames of `path` sampled at `fps`, shorter side resized to `size`, centre-cropped: ([N, size, size, 3] uint8,
  the source frame rate).

  Sampling keeps, for each instant k / fps, the source frame shown at that instant (no interpolation), so a source
  slower than `fps` repeats frames and a faster one skips them.

  Raises:
    DataError: the file cannot be opened or decoded, has no video stream or no frame.
  """
  import av  # pylint: disable=g-import-not-at-top  (optional: the "extract" extra)
  try:
    container = av.open(path)
  except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
    raise DataError(path, f"cannot open as a video ({type(error).__name__}: {error})") from None
  frames: list[np.ndarray] = []
  with container:
    if not container.streams.video:
      raise DataError(path, "no video stream")
    stream = container.streams.video[0]
    source_fps = float(stream.average_rate or stream.guessed_rate or fps)
    next_time = 0.0
    decoded = 0
    try:
      for frame in container.decode(stream):
        time = frame.time if frame.time is not None else decoded / source_fps
        decoded += 1
        shown_until = time + 1.0 / source_fps
        if shown_until <= next_time:
          continue  # no sampling instant falls while this frame is shown
        height, width = frame.height, frame.width
        scale = size / min(height, width)
        image = _square(frame.to_ndarray(format="rgb24", width=max(size, round(width * scale)),
                                         height=max(size, round(height * scale))), size)
        while next_time < shown_until - 1e-9:  # (float sums: 1.1 + 0.1 > 1.2)
          frames.append(image)
          next_time = len(frames) / fps
    except av.error.FFmpegError as error:
      raise DataError(path, f"decoding failed after {decoded} frames ({type(error).__name__}: {error})") from None
  if not frames:
    raise DataError(path, "no decodable video frames")
  return np.stack(frames), source_fps
