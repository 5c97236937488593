"""Raw video -> I3D features: videos encoded by PyAV here decode and extract deterministically into the MS-TCN
layout, and corrupt, truncated and zero-frame files each give one clear line while the others are extracted."""

import os
import subprocess
import sys

import numpy as np
import pytest

from hal_jax import errors
from hal_jax import extract
from hal_jax import video

av = pytest.importorskip("av") if not os.environ.get("CI") else __import__("av")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def encode(path, num_frames, width=64, height=48, rate=10):
  """An MPEG-4 video of moving stripes (deterministic content)."""
  container = av.open(str(path), "w")
  stream = container.add_stream("mpeg4", rate=rate)
  stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
  container.start_encoding()  # writes the header even when no frame follows (a zero-frame file)
  for i in range(num_frames):
    image = np.zeros((height, width, 3), np.uint8)
    image[:, (i * 5) % width:] = (200, 40 + 10 * i, 90)
    image[::6] = 255
    for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
      container.mux(packet)
  for packet in stream.encode():
    container.mux(packet)
  container.close()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  directory = tmp_path_factory.mktemp("videos")
  encode(directory / "a.mp4", 12)
  encode(directory / "b.avi", 7, width=40, height=56, rate=25)
  encode(directory / "zero.avi", 0)
  data = (directory / "a.mp4").read_bytes()
  (directory / "truncated.mp4").write_bytes(data[:len(data) // 2])
  (directory / "corrupt.mkv").write_bytes(np.random.default_rng(1).bytes(3000))
  (directory / "notes.txt").write_text("not a video")
  return directory


def test_decoding_samples_at_the_requested_rate(videos):
  frames, source_fps = video.read_frames(str(videos / "a.mp4"), fps=15, size=32)
  assert source_fps == 10 and frames.shape == (18, 32, 32, 3) and frames.dtype == np.uint8  # 1.2 s at 15 fps
  frames, _ = video.read_frames(str(videos / "b.avi"), fps=10, size=24)
  assert frames.shape == (3, 24, 24, 3)  # 7 frames at 25 fps = 0.28 s -> instants 0, 0.1, 0.2
  assert len(np.unique(frames.reshape(3, -1), axis=0)) == 3  # different source frames


@pytest.mark.parametrize("name, problem", [("zero.avi", "no decodable video frames"),
                                           ("truncated.mp4", "cannot open as a video"),
                                           ("corrupt.mkv", "cannot open as a video")])
def test_bad_videos_are_one_clear_error(videos, name, problem):
  with pytest.raises(errors.DataError) as raised:
    video.read_frames(str(videos / name), fps=15, size=32)
  assert str(raised.value).startswith(f"{videos / name}: {problem}") and "\n" not in str(raised.value)


def test_window_indices_repeat_the_edges():
  np.testing.assert_array_equal(extract.window_indices(5, 4, 2), [[0, 0, 0, 1], [0, 1, 2, 3], [2, 3, 4, 4]])


@pytest.mark.slow
def test_extraction_is_deterministic_and_reports_each_bad_video(videos, tmp_path, capfd):
  kwargs = dict(fps=15, window=4, stride=3, size=32, batch_size=4, progress=False)
  first = extract.extract_directory(str(videos), str(tmp_path / "one"), **kwargs)
  assert first["videos"] == 2 and sorted(os.path.basename(p) for p, _ in first["failed"]) == [
      "corrupt.mkv", "truncated.mp4", "zero.avi"]
  error_lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error: ")]
  assert len(error_lines) == 3
  second = extract.extract_directory(str(videos), str(tmp_path / "two"), **kwargs)
  assert second["videos"] == 2
  for name, steps in (("a", 6), ("b", 2)):  # 18 frames / stride 3; 0.28 s at 15 fps = 5 frames / stride 3
    one = np.load(tmp_path / "one" / "features" / f"{name}.npy")
    two = np.load(tmp_path / "two" / "features" / f"{name}.npy")
    assert one.shape == (1024, steps) and one.dtype == np.float32
    np.testing.assert_array_equal(one, two)
    assert np.all(np.isfinite(one)) and float(one.std()) > 0


@pytest.mark.slow
def test_extract_command_line(videos, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "hal_jax.extract", f"--videos={videos}", f"--out={tmp_path}", "--size=32",
       "--window=4", "--stride=6"], capture_output=True, text=True, cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT), timeout=600, check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  errors_printed = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors_printed) == 3 and all(str(videos) in line for line in errors_printed)
  assert '"videos": 2' in result.stdout and '"failed": 3' in result.stdout
  assert sorted(os.listdir(tmp_path / "features")) == ["a.npy", "b.npy"]
