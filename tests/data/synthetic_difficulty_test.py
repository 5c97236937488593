"""The one-parameter difficulty family of the synthetic segmentation presets."""

import dataclasses
import itertools

import numpy as np
import pytest

from hal_jax.data import formats
from hal_jax.data import segmentation_formats
from hal_jax.data import synthetic
from hal_jax.data import synthetic_difficulty as sd
from hal_jax.errors import ConfigError

DEFAULT = synthetic.PRESETS["default"]


def test_end_points_and_every_knob_moves_towards_harder_monotonically():
  assert dataclasses.astuple(sd.knobs_at(0.0)) == pytest.approx(dataclasses.astuple(sd.EASY), rel=1e-12)
  assert dataclasses.astuple(sd.knobs_at(1.0)) == pytest.approx(dataclasses.astuple(sd.HARD), rel=1e-12)
  levels = np.linspace(0.0, 1.0, 9)
  configs = [sd.at_difficulty(DEFAULT, d) for d in levels]
  harder_when_larger = {
      "burst_rate": lambda c: c.process.burst_rate, "burst_length": lambda c: sum(c.process.burst_length),
      "observation_noise": lambda c: c.process.observation_noise, "bent": lambda c: -c.process.mixing_slope,
      "duration_jitter": lambda c: c.duration_jitter, "transcript": lambda c: sum(c.actions_per_activity),
      "sharing": sd.sharing}
  for name, value in harder_when_larger.items():
    values = [value(c) for c in configs]
    assert all(a <= b for a, b in itertools.pairwise(values)), name
    assert values[0] < values[-1], name


def test_the_family_changes_only_its_knobs_and_the_durations_that_keep_the_video_length():
  easy, hard = sd.at_difficulty(DEFAULT, 0.0), sd.at_difficulty(DEFAULT, 1.0)
  assert easy.actions_per_activity == DEFAULT.actions_per_activity and easy.duration_range == DEFAULT.duration_range
  assert hard.actions_per_activity == (6, 12) and hard.num_activities == 20 and hard.process.burst_length == (16, 64)
  assert hard.duration_range == (30, 150)  # Templates twice as long: mean durations halved.
  moved = {"duration_jitter", "actions_per_activity", "num_activities", "duration_range", "background_duration",
           "min_segment", "process"}
  for field in dataclasses.fields(DEFAULT):
    if field.name not in moved:
      assert getattr(hard, field.name) == getattr(DEFAULT, field.name), field.name
  process_moved = {"burst_rate", "burst_length", "observation_noise", "mixing_slope"}
  for field in dataclasses.fields(DEFAULT.process):
    if field.name not in process_moved:
      assert getattr(hard.process, field.name) == getattr(DEFAULT.process, field.name), field.name


def test_source_presets_move_only_the_process_and_bad_levels_are_refused():
  breakfast = synthetic.PRESETS["breakfast"]
  hard = sd.at_difficulty(breakfast, 1.0)
  assert dataclasses.replace(hard, process=breakfast.process) == breakfast
  assert hard.process.observation_noise == pytest.approx(sd.HARD.observation_noise)
  for bad in (-0.1, 1.5):
    with pytest.raises(ConfigError, match="difficulty"):
      sd.at_difficulty(DEFAULT, bad)
  # A small vocabulary caps the template length instead of failing.
  assert sd.at_difficulty(synthetic.PRESETS["test"], 1.0).actions_per_activity == (4, 6)


def test_harder_data_is_harder_for_the_supervised_probe_and_videos_keep_their_length(tmp_path):
  base = dataclasses.replace(synthetic.PRESETS["test"], num_train=24, num_test=8)
  probe, frames = {}, {}
  for d in (0.0, 1.0):
    root = synthetic.generate(tmp_path / f"d{d}", sd.at_difficulty(base, d))
    probe[d] = synthetic.calibrate(root).probe_accuracy
    frames[d] = np.mean([len(v.labels) for v in segmentation_formats.load_mstcn_split(root, "train").videos])
  assert probe[1.0] < probe[0.0] - 0.15
  assert 0.6 < frames[1.0] / frames[0.0] < 1.5


def test_the_command_line_takes_a_difficulty(tmp_path, capsys):
  synthetic.main(["--out", str(tmp_path / "hard"), "--preset=test", "--difficulty=0.5"])
  assert "wrote" in capsys.readouterr().out
  settings = formats.read_text(tmp_path / "hard" / "synthetic.json")
  noise = sd.at_difficulty(synthetic.PRESETS["test"], 0.5).process.observation_noise
  assert f'"observation_noise": {noise}' in settings
