"""What every task's data shares: where the data comes from (a directory, a synthetic preset or a prepared TFDS
dataset), held-out validation videos, and checks of predictions.

A task module (`hal_jax.tasks.segmentation`, `.localization`, `.recognition`) reads its own file layout and scores
with its own metrics; the steps below are the same for all of them, so they live here once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Collection, Sequence
from typing import TypeVar

import ml_collections
import numpy as np

from hal_jax import errors
from hal_jax.data import synthetic

Split = TypeVar("Split")


def resolve_data_dir(config: ml_collections.ConfigDict, workdir: str, preset_type: type, layout: str) -> str:
  """`config.data_dir`, or the task's synthetic preset `config.synthetic_preset` generated (once) into
  ``<workdir>/data``.

  Args:
    config: the run's config.
    workdir: the run directory.
    preset_type: the generator config class of the task's presets (`hal_jax.data.synthetic`), so that a preset of
      another task is refused by name instead of failing later on a file it lacks.
    layout: what `config.data_dir` must hold, for the error when a real-data preset has none.

  Raises:
    DataError: `config.data_dir` does not exist.
    ConfigError: no data directory and no synthetic preset, or a preset of another task.
  """
  if config.data_dir:
    if not os.path.isdir(config.data_dir):
      raise errors.DataError(config.data_dir, "data directory does not exist (config.data_dir)")
    return config.data_dir
  if not config.synthetic_preset:
    raise errors.ConfigError("config.data_dir", f"is required: this preset reads real features ({layout})")
  preset = synthetic.PRESETS.get(config.synthetic_preset)
  if not isinstance(preset, preset_type):
    choices = sorted(k for k, v in synthetic.PRESETS.items() if isinstance(v, preset_type))
    raise errors.ConfigError("config.synthetic_preset", f"{config.synthetic_preset!r} is not a synthetic "
                             f"preset of this task; choose one of {choices}")
  os.makedirs(workdir, exist_ok=True)
  # Generated once; a later run in the same workdir reuses it (and refuses data made with other settings).
  return synthetic.ensure_generated(os.path.join(workdir, "data"), preset)


def tfds_name(config: ml_collections.ConfigDict) -> str:
  """`config.tfds_name`: the prepared TFDS dataset (`hal_jax.tfds`) the task reads instead of a directory, or ''.

  Raises:
    ConfigError: both `config.tfds_name` and `config.data_dir` name the data.
  """
  name = config.get("tfds_name", "")
  if name and config.data_dir:
    raise errors.ConfigError("config.tfds_name", f"{name!r} and config.data_dir={config.data_dir!r} both name the "
                             "data; set one of them")
  return name


def hold_out_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
  """Splits ⌈fraction · V⌉ of the training videos off for model selection (a seeded draw; both keep the split's
  order). `train` is a dataclass with a ``videos`` tuple.

  Returns:
    (the remaining training videos, the validation videos or None when `fraction` is 0).
  Raises:
    ConfigError: `fraction` outside [0, 1) or leaving no training video.
  """
  if not 0.0 <= fraction < 1.0:
    raise errors.ConfigError("config.validation_fraction", f"must be in [0, 1), got {fraction}")
  if fraction == 0.0:
    return train, None
  videos = train.videos
  count = math.ceil(fraction * len(videos))
  if count >= len(videos):
    raise errors.ConfigError("config.validation_fraction", f"{fraction} of {len(videos)} training videos "
                             "leaves none to train on")
  held = set(np.random.default_rng(seed).permutation(len(videos))[:count].tolist())
  keep = tuple(v for i, v in enumerate(videos) if i not in held)
  validation = tuple(v for i, v in enumerate(videos) if i in held)
  return dataclasses.replace(train, videos=keep), dataclasses.replace(train, videos=validation)


def check_all_predicted(expected: Sequence[str], predicted: Collection[str], what: str) -> None:
  """ValueError naming the count and the first of `expected` that has no prediction (`what`: e.g. "test videos")."""
  missing = [name for name in expected if name not in predicted]
  if missing:
    raise ValueError(f"no prediction for {len(missing)} {what}, e.g. {missing[0]}")
