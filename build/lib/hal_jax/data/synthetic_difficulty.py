"""A one-parameter difficulty family of the synthetic segmentation data: `at_difficulty(config, d)`, d in [0, 1].

The generator's raw knobs stay where they are (`SegmentationConfig`, `ProcessConfig`); this module moves the ones
that make transcript supervision hard together, from an easy end (d = 0) to a hard end (d = 1):

  knob (field)                                        d = 0        d = 1        interpolation
  visual bursts per frame (process.burst_rate)        0.002        0.03         geometric
  burst length in frames (process.burst_length)       x 1          x 2          linear, rounded
  observation noise σ_x (process.observation_noise)   0.05         1.5          geometric
  mixing non-linearity (process.mixing_slope α)       0.5          0.05         geometric (smaller α = more bent)
  duration spread (duration_jitter)                   0.2          0.8          linear
  transcript length (actions_per_activity)            x 1          x 2          linear, rounded, <= num_actions
  activities sharing the vocabulary (num_activities)  x 0.6        x 2          linear, rounded

The "x" rows scale the base preset's own values; for `default`: bursts of (8, 32) -> (16, 64) frames, (3, 6) ->
(6, 12) actions per template, 6 -> 20 activities.

Everything else (vocabulary size, prototypes, dynamics, burst scale, the number and the mean length of videos) is
the base config's. Two couplings keep the family about one thing:

* Longer transcripts would make longer videos (more compute, and more frames per action is easier); the per-class
  mean durations (`duration_range`, `min_segment`) are divided by the growth of the mean transcript length, so a
  video keeps about the base config's length whatever d is.
* Sharing: each action occurs in about num_activities x mean template length / num_actions activities (2.3 for the
  `default` preset; `sharing(config)` computes it). Longer templates and more activities both raise it, so in
  which activity an action happens tells less about its neighbours.

Only grammar-mode presets have transcript knobs: in source mode (real transcripts, e.g. `breakfast`) only the process
knobs move. The calibration of the end points (what ATBA's MoF is at each d) is in RESULTS.md, "Difficulty axis".
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hal_jax.data.synthetic_process import ProcessConfig
from hal_jax.data.synthetic_segmentation import SegmentationConfig
from hal_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Knobs:
  """The family at one difficulty: raw values (named as in ProcessConfig / SegmentationConfig) and *_scale factors."""
  burst_rate: float
  burst_length_scale: float  # multiplies the base preset's process.burst_length
  observation_noise: float
  mixing_slope: float
  duration_jitter: float
  template_scale: float  # multiplies the base preset's actions_per_activity
  activities_scale: float  # multiplies the base preset's num_activities


EASY = Knobs(burst_rate=0.002, burst_length_scale=1.0, observation_noise=0.05, mixing_slope=0.5, duration_jitter=0.2,
             template_scale=1.0, activities_scale=0.6)
HARD = Knobs(burst_rate=0.03, burst_length_scale=2.0, observation_noise=1.5, mixing_slope=0.05, duration_jitter=0.8,
             template_scale=2.0, activities_scale=2.0)


def _linear(low: float, high: float, d: float) -> float:
  return low + d * (high - low)


def _geometric(low: float, high: float, d: float) -> float:
  return float(np.exp(_linear(np.log(low), np.log(high), d)))


def knobs_at(difficulty: float) -> Knobs:
  """The knob values at `difficulty` in [0, 1] (see the module docstring)."""
  if not 0.0 <= difficulty <= 1.0:
    raise ConfigError("difficulty", f"must be in [0, 1], got {difficulty!r}")
  d = float(difficulty)
  return Knobs(burst_rate=_geometric(EASY.burst_rate, HARD.burst_rate, d),
               burst_length_scale=_linear(EASY.burst_length_scale, HARD.burst_length_scale, d),
               observation_noise=_geometric(EASY.observation_noise, HARD.observation_noise, d),
               mixing_slope=_geometric(EASY.mixing_slope, HARD.mixing_slope, d),
               duration_jitter=_linear(EASY.duration_jitter, HARD.duration_jitter, d),
               template_scale=_linear(EASY.template_scale, HARD.template_scale, d),
               activities_scale=_linear(EASY.activities_scale, HARD.activities_scale, d))


def _scaled(value: int, easy: float, hard: float, d: float) -> int:
  """round(value x the interpolated factor), computed from the scaled end points so that halves round alike."""
  return round(_linear(value * easy, value * hard, d))


def at_difficulty(config: SegmentationConfig, difficulty: float) -> SegmentationConfig:
  """`config` with the family's knobs set to their values at `difficulty` (the rest unchanged).

  Raises:
    ConfigError: `difficulty` outside [0, 1].
  """
  knobs = knobs_at(difficulty)
  d = float(difficulty)
  burst_length = tuple(_scaled(v, EASY.burst_length_scale, HARD.burst_length_scale, d)
                       for v in config.process.burst_length)
  process: ProcessConfig = dataclasses.replace(
      config.process, burst_rate=knobs.burst_rate, burst_length=burst_length,
      observation_noise=knobs.observation_noise, mixing_slope=knobs.mixing_slope)
  if config.source is not None:  # Real transcripts and durations: only how the videos look can change.
    return dataclasses.replace(config, process=process)
  low, high = (min(config.num_actions, _scaled(v, EASY.template_scale, HARD.template_scale, d))
               for v in config.actions_per_activity)
  num_activities = max(1, _scaled(config.num_activities, EASY.activities_scale, HARD.activities_scale, d))
  # Keep the mean video length: shorten every class's mean duration by the growth of the mean template length.
  shrink = (sum(config.actions_per_activity) / 2) / ((low + high) / 2)
  duration_range = tuple(max(1, round(v * shrink)) for v in config.duration_range)
  return dataclasses.replace(
      config, duration_jitter=knobs.duration_jitter, actions_per_activity=(low, high),
      num_activities=num_activities, duration_range=duration_range,
      background_duration=max(1, round(config.background_duration * shrink)),
      min_segment=max(1, round(config.min_segment * shrink)), process=process)


def sharing(config: SegmentationConfig) -> float:
  """Expected number of activities an action belongs to: num_activities x mean template length / num_actions."""
  return config.num_activities * (sum(config.actions_per_activity) / 2) / config.num_actions
