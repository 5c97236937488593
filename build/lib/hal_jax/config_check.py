"""The config values no run can use, checked once before any data is read (`hal_jax.experiment.check_config`).

`validate_config(config)` rejects impossible values (zero epochs, a batch of 0, ...) as
``ConfigError("config.<key>", ...)``; it checks only the keys a config has, so it serves every method's config, and
a method checks its own keys when it is made. `check_batch_size` checks the batch against the device count.
"""

from __future__ import annotations

import math

import ml_collections

from hal_jax import errors

# Integer keys and their smallest possible value; a config is checked on the keys it has.
_MINIMUM = {
    "num_epochs": 1,
    "batch_size": 1,
    "sample_rate": 1,
    "checkpoint_every_steps": 1,
    "eval_every_epochs": 1,
    "log_every_steps": 1,
    "checkpoints_to_keep": 1,
    "split": 1,
    "feature_dim": 1,
    "hidden_dim": 1,
    "num_layers": 1,
    "num_heads": 1,
    "max_positions": 1,
    "bucket_multiple": 1,
    "train_length": 1,
    "max_transcript": 0,  # 0 means "the longest transcript of the data".
    "length_tolerance": 0,
}
# Float keys that must be finite and >= 0 (besides every "*_weight" key). A method checks its own keys (make_method).
_NON_NEGATIVE = ("weight_decay",)
_FEATURE_LAYOUTS = ("DT", "TD")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError("config.<key>", ...)` for the first impossible value of `config`.

  Checks only the keys `config` has, so it serves every method's config.
  """
  for key, minimum in _MINIMUM.items():
    if key in config and config[key] < minimum:
      raise errors.ConfigError(f"config.{key}", f"must be >= {minimum}, got {config[key]}")
  if "seed" in config and not 0 <= config.seed < 2**32:
    raise errors.ConfigError("config.seed", f"must be in [0, 2**32), got {config.seed}")
  if "learning_rate" in config and not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
    raise errors.ConfigError("config.learning_rate", f"must be finite and > 0, got {config.learning_rate}")
  if "dropout" in config and not 0 <= config.dropout < 1:
    raise errors.ConfigError("config.dropout", f"must be in [0, 1), got {config.dropout}")
  for key in sorted(config.keys()):
    if key in _NON_NEGATIVE or key.endswith("_weight"):
      value = config[key]
      if not (math.isfinite(value) and value >= 0):
        raise errors.ConfigError(f"config.{key}", f"must be finite and >= 0, got {value}")
  if "feature_layout" in config and config.feature_layout not in _FEATURE_LAYOUTS:
    raise errors.ConfigError("config.feature_layout", f"must be one of {_FEATURE_LAYOUTS}, got "
                             f"{config.feature_layout!r}")


def check_batch_size(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """ConfigError unless `config.batch_size` splits evenly over `num_devices` (the ('data',) mesh)."""
  if config.batch_size % num_devices:
    raise errors.ConfigError("config.batch_size", f"{config.batch_size} is not divisible by the number of devices "
                             f"({num_devices})")
