"""The tasks of hal_jax: segmentation, localization and recognition, each the data of one experiment.

`load(task, config, workdir)` imports ``hal_jax.tasks.<task>`` and returns its `ExperimentData` (the protocol of
`hal_jax.tasks.base`); only the task that runs is imported.
"""

import importlib

import ml_collections

from hal_jax.tasks.base import ExperimentData, Task

__all__ = ["ExperimentData", "Task", "load"]


def load(task: Task, config: ml_collections.ConfigDict, workdir: str) -> ExperimentData:
  """Reads (or generates), validates and wraps the data of `config` for `task`."""
  return importlib.import_module(f"hal_jax.tasks.{task.value}").load(config, workdir)
