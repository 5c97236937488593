"""The data of one segmentation experiment: validated splits, their pipelines, and scoring of predictions.

`load(config, workdir)` reads the MS-TCN directory `config.data_dir` (or, when it is empty, generates the synthetic
preset `config.synthetic_preset` into ``<workdir>/data`` once), validates every file, and builds the train and test
pipelines, all before any training starts. `ExperimentData.score` turns model outputs into metrics at the raw frame
rate: frame logits of the valid downsampled steps are linearly upsampled to the raw length (spec hal_atba.md §9),
then argmax, then the metrics of `hal_jax.metrics.segmentation` against the raw ground truth.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping

import ml_collections
import numpy as np

from hal_jax import errors
from hal_jax import latent_probe
from hal_jax.alignment import segments
from hal_jax.data import formats
from hal_jax.data import pipeline as pipeline_lib
from hal_jax.data import poses as poses_lib
from hal_jax.data import staging as staging_lib
from hal_jax.data import synthetic
from hal_jax.metrics import segmentation as segmentation_metrics

# The MS-TCN convention: Edit and F1 drop only the label named "background" (metrics spec §4).
MSTCN_BACKGROUND_NAME = "background"


@dataclasses.dataclass
class ExperimentData:
  """Validated splits and their pipelines.

  Attributes:
    data_dir: the MS-TCN directory that was read.
    label_map: class names.
    background_id: id of `config.background` (None when the data has no background class).
    train, test: the splits, features in memory.
    train_pipeline, test_pipeline: their batch pipelines.
    train_eval_pipeline: the train split in evaluation mode (middle frames, dataset order), for latent probes.
  """
  data_dir: str
  label_map: formats.LabelMap
  background_id: int | None
  train: formats.SegmentationDataset
  test: formats.SegmentationDataset
  train_pipeline: pipeline_lib.SegmentationPipeline
  test_pipeline: pipeline_lib.SegmentationPipeline
  train_eval_pipeline: pipeline_lib.SegmentationPipeline

  @property
  def has_true_latents(self) -> bool:
    """Whether the data stores true latents (synthetic data), so identifiability can be measured."""
    return latent_probe.has_true_latents(self.data_dir)

  def predicted_labels(self, predictions: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]
                       ) -> dict[str, np.ndarray]:
    """Raw-rate predicted label ids per test video from `(batch, outputs)` pairs with ``frame_logits [B, T, C]``."""
    labels = {}
    for batch, outputs in predictions:
      logits = np.asarray(outputs["frame_logits"])
      for row in np.flatnonzero(batch["batch_mask"]):
        video = self.test.videos[int(batch["video_index"][row])]
        num_frames = int(batch["num_frames"][row])
        raw = segments.upsample_logits(logits[row], num_frames, int(batch["raw_length"][row]))
        labels[video.name] = np.argmax(raw, axis=-1).astype(np.int32)
    return labels

  def score(self, predictions: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]
            ) -> dict[str, float]:
    """Segmentation metrics (0-100) of the test split from `(batch, outputs)` pairs."""
    predicted = self.predicted_labels(predictions)
    missing = [v.name for v in self.test.videos if v.name not in predicted]
    if missing:
      raise ValueError(f"no prediction for {len(missing)} test videos, e.g. {missing[0]}")
    gt = [v.labels for v in self.test.videos]
    pred = [predicted[v.name] for v in self.test.videos]
    background = [] if self.background_id is None else [self.background_id]
    mstcn_background = ([self.label_map.names.index(MSTCN_BACKGROUND_NAME)]
                        if MSTCN_BACKGROUND_NAME in self.label_map.names else [])
    return segmentation_metrics.segmentation_scores(gt, pred, background_ids=background,
                                                    edit_f1_background_ids=mstcn_background)


  def write_predictions(self, predictions: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
                        out_dir: str) -> int:
    """Writes ``<out_dir>/<video>.txt`` (one label name per raw frame, MS-TCN style) and
    ``<out_dir>/plots/<video>.png`` for the test split; returns the number of videos.

    The set appears whole (`staging.staged_directory`): a failure leaves the previous predictions, or none.
    """
    from hal_jax import plotting  # pylint: disable=g-import-not-at-top  (matplotlib only when plotting)
    predicted = self.predicted_labels(predictions)
    names = self.label_map.names
    with staging_lib.staged_directory(out_dir, overwrite=True) as staged:
      os.makedirs(os.path.join(staged, "plots"))
      for video in self.test.videos:
        labels = predicted[video.name]
        formats.write_frame_labels(os.path.join(staged, f"{video.name}.txt"), [names[i] for i in labels])
        plotting.plot_segmentation(os.path.join(staged, "plots", f"{video.name}.png"), video.labels, labels, names,
                                   title=video.name)
    return len(predicted)


def resolve_data_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`config.data_dir`, or the synthetic preset generated (once) into ``<workdir>/data``."""
  if config.data_dir:
    if not os.path.isdir(config.data_dir):
      raise errors.DataError(config.data_dir, "data directory does not exist (config.data_dir)")
    return config.data_dir
  if config.synthetic_preset not in synthetic.PRESETS:
    raise errors.ConfigError("config.synthetic_preset",
                             f"unknown preset {config.synthetic_preset!r}; choose one of {sorted(synthetic.PRESETS)}")
  # Generated once; a later run in the same workdir reuses it (and refuses data made with other settings).
  return synthetic.ensure_generated(os.path.join(workdir, "data"), synthetic.PRESETS[config.synthetic_preset])


def load(config: ml_collections.ConfigDict, workdir: str) -> ExperimentData:
  """Reads, validates and wraps the data of `config` (see the module docstring)."""
  data_dir = resolve_data_dir(config, workdir)
  read = dict(split_index=config.split, feature_layout=config.feature_layout, feature_dim=config.feature_dim,
              length_tolerance=config.length_tolerance)
  train = formats.load_mstcn_split(data_dir, "train", **read)
  test = formats.load_mstcn_split(data_dir, "test", **read)
  label_map = train.label_map
  background_id = None
  if config.background:
    if config.background not in label_map:  # The config names a class the data lacks: the key is what to fix.
      raise errors.ConfigError("config.background", f"{config.background!r} is not a class of the data "
                               f"({label_map.num_classes} classes in {os.path.join(data_dir, 'mapping.txt')}, e.g. "
                               f"{list(label_map.names[:3])})")
    background_id = label_map.index(config.background, where=os.path.join(data_dir, "mapping.txt"))
  for dataset in (train, test):
    for video in dataset.videos:
      frames = len(video.features)
      if frames < config.sample_rate:
        raise errors.ConfigError("config.sample_rate", f"{config.sample_rate} is larger than video {video.name!r} of "
                                 f"{data_dir} ({frames} frames)")
      steps = pipeline_lib.downsampled_length(frames, config.sample_rate)
      if steps < len(video.transcript):  # ATBA's alignment needs a frame per transcript action (T_v >= M).
        raise errors.ConfigError(
            "config.sample_rate", f"video {video.name!r} of {data_dir} has {steps} frames after downsampling by "
            f"{config.sample_rate}, fewer than its {len(video.transcript)} transcript actions")
  longest = max(pipeline_lib.longest_video(train, config.sample_rate),
                pipeline_lib.longest_video(test, config.sample_rate))
  if longest > config.max_positions:
    raise errors.ConfigError(
        "config.max_positions", f"{config.max_positions} positions, but the longest video has {longest} frames "
        f"after downsampling by {config.sample_rate}")
  # Padded lengths never exceed the positional table (the longest video fits, checked above).
  buckets = tuple(sorted({min(b, config.max_positions)
                          for b in pipeline_lib.default_buckets(longest, config.bucket_multiple)}))
  max_transcript = config.max_transcript or max(pipeline_lib.longest_transcript(train),
                                                pipeline_lib.longest_transcript(test))
  common = dict(sample_rate=config.sample_rate, bucket_lengths=buckets, max_transcript=max_transcript,
                seed=config.seed)
  train_poses = None
  if config.get("use_poses", False):
    # Poses are a training-only stream (the pose-aware add-on): every training video needs its pose file.
    pose_dir = config.pose_dir or os.path.join(data_dir, poses_lib.POSE_DIRECTORY)
    train_poses = poses_lib.load_split_poses(pose_dir, train, config.pose_layout)
  return ExperimentData(
      data_dir=data_dir, label_map=label_map, background_id=background_id, train=train, test=test,
      train_pipeline=pipeline_lib.SegmentationPipeline(train, batch_size=config.batch_size, train=True,
                                                       poses=train_poses, **common),
      test_pipeline=pipeline_lib.SegmentationPipeline(test, batch_size=config.batch_size, train=False, **common),
      train_eval_pipeline=pipeline_lib.SegmentationPipeline(train, batch_size=config.batch_size, train=False,
                                                            **common))
