"""What the one training loop needs from the data of an experiment, whatever its task.

Three tasks share the loop (`hal_jax.train`): segmentation (frame labels from transcripts), localization
(detections from video labels) and recognition (one class per level of a taxonomy for a trimmed clip). Each has
one module here, ``hal_jax.tasks.<task>``, with ``load(config, workdir) -> ExperimentData`` that reads (or
generates), validates and wraps its data before anything is trained. The loop depends only on the two protocols
below, never on a task module.

Predictions travel as `Pairs`: `(host batch, host outputs)` for every evaluation batch of a pipeline, in order,
where a batch carries ``batch_mask [B]`` and ``video_index [B]`` (the row's position in its split) and the outputs
are the method's ``predict`` dict.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import jax
import numpy as np

HostBatch = Mapping[str, np.ndarray]
Pairs = Iterable[tuple[HostBatch, Mapping[str, np.ndarray]]]


class Task(enum.Enum):
  """The task of a method; its value names the module ``hal_jax.tasks.<value>`` that loads the task's data."""
  SEGMENTATION = "segmentation"
  LOCALIZATION = "localization"
  RECOGNITION = "recognition"


class Pipeline(Protocol):
  """Batches of one split: a pure function of `(seed, epoch, batch_index)`, padded to static shapes."""

  @property
  def num_batches_per_epoch(self) -> int:
    """Batches per epoch (the same every epoch, so a step number fixes the data position)."""

  def batch_spec(self, length: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of this host's batch (at bucket `length`; default the longest bucket)."""

  def batch(self, epoch: int, batch_index: int) -> dict[str, np.ndarray]:
    """This host's rows of batch `batch_index` of `epoch`."""

  def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This host's batches of `epoch` from `start_batch` on, in order."""

  def global_stream(self, mesh: jax.sharding.Mesh, start_epoch: int = 0, start_batch: int = 0,
                    num_epochs: int | None = None) -> Iterator[tuple[int, int, dict[str, jax.Array]]]:
    """`(epoch, batch_index, global batch)` from a position on, prefetched, sharded on `mesh`'s 'data' axis."""


class ExperimentData(Protocol):
  """The validated data of one experiment, its pipelines, and the scoring of predictions.

  Attributes:
    data_dir: the directory that was read (or generated).
    label_map: the classes (the finest level for hierarchical labels); `label_map.names` sizes the method.
    train: the training split as read (what a method's ``refresh_data`` reads).
    train_pipeline: training batches (shuffled, augmented).
    test_pipeline: test batches in evaluation mode, split order.
    train_eval_pipeline: the training split in evaluation mode (for probes of the latents).
    validation_pipeline: held-out training videos in evaluation mode (model selection), or None.
    has_true_latents: whether the data stores the true latents of a synthetic generator (identifiability).
  """

  data_dir: str
  label_map: Any
  train: Any
  train_pipeline: Pipeline
  test_pipeline: Pipeline
  train_eval_pipeline: Pipeline
  validation_pipeline: Pipeline | None

  @property
  def has_true_latents(self) -> bool:
    ...

  def score(self, predictions: Pairs) -> dict[str, float]:
    """The task's metrics of the test split (every test video must be predicted)."""

  def score_validation(self, predictions: Pairs) -> dict[str, float]:
    """The same metrics on the validation videos (predictions of `validation_pipeline`)."""

  def write_predictions(self, predictions: Pairs, out_dir: str, peer_formats: bool = False) -> int:
    """Writes the test split's predictions in the task's file format, atomically; returns the number of videos.

    `peer_formats`: also the files that the task's reference evaluator reads (`hal_jax.peer_formats`)."""
