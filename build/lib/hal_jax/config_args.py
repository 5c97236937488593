"""The one grammar of a config file's argument: ``--config=FILE:preset[,key=value...]``.

Every file in configs/ reads its argument with `parse_arg`, as big_vision's configs do:

  configs/haan.py                            the file's default preset, every option at its default
  configs/haan.py:finegym                    a preset
  configs/haan.py:finegym,variant=mil        a preset and options (each ``key=value``, keys and values declared)

A bad argument raises `ValueError` naming the file the user gave (the command line turns it into one line).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ml_collections


def _display(file: str) -> str:
  """`file` as the user most likely typed it: relative to the working directory when it lies below it."""
  relative = os.path.relpath(file)
  return file if relative.startswith(os.pardir) else relative


def parse_arg(arg: str | None, *, file: str, presets: Iterable[str], default: str,
              options: Mapping[str, Sequence[str]] | None = None) -> tuple[str, dict[str, str]]:
  """Splits a config argument into its preset and options.

  Args:
    arg: what follows ``FILE:`` (None or empty: `default`).
    file: the config file (its ``__file__``), named in errors.
    presets: the file's presets.
    default: the preset of an empty argument.
    options: option name -> its values, the first being the default.

  Returns:
    (preset, {option: value} for every option).

  Raises:
    ValueError: an unknown preset, option or value, or a part that is not ``key=value``.
  """
  options = options or {}
  presets = sorted(presets)
  preset, *parts = (arg or "").split(",")
  preset = preset or default
  where = _display(file)
  if preset not in presets:
    raise ValueError(f"unknown preset {preset!r} for {where}; choose one of {presets}")
  chosen = {key: values[0] for key, values in options.items()}
  for part in parts:
    key, sep, value = part.partition("=")
    if not sep:
      raise ValueError(f"{where} takes 'preset[,key=value...]' with keys {sorted(options)}, got {part!r}")
    if key not in options:
      choices = f"choose one of {sorted(options)}" if options else "it takes a preset only"
      raise ValueError(f"unknown option {key!r} for {where}; {choices}")
    if value not in options[key]:
      raise ValueError(f"unknown {key} {value!r} for {where}; choose one of {sorted(options[key])}")
    chosen[key] = value
  return preset, chosen


def build(arg: str | None, *, file: str, base_config: Callable[[], ml_collections.ConfigDict],
          presets: Mapping[str, Mapping[str, Any]], default: str,
          options: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> ml_collections.ConfigDict:
  """The locked config of `arg`: `base_config()` updated with the preset's keys, then with each chosen option's.

  Args:
    arg, file, default: as in `parse_arg`.
    base_config: every key of the file's experiments.
    presets: preset name -> the keys it changes.
    options: option name -> {value -> the keys it changes}, the first value being the default.

  The config records its choices: ``config.preset`` and ``config.<option>`` for every option.
  """
  options = options or {}
  preset, chosen = parse_arg(arg, file=file, presets=presets, default=default,
                             options={key: tuple(table) for key, table in options.items()})
  config = base_config()
  config.update(presets[preset])
  for key, table in options.items():
    config.update(table[chosen[key]])
  config.preset = preset
  for key in options:
    config[key] = chosen[key]
  config.lock()
  return config
