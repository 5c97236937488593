"""The data of one segmentation experiment: validated splits, their pipelines, and scoring of predictions.

`load(config, workdir)` reads the MS-TCN directory `config.data_dir` (or, when it is empty, generates the synthetic
preset `config.synthetic_preset` into ``<workdir>/data`` once; or reads the prepared TFDS dataset `config.tfds_name`,
`hal_jax.tfds`), validates every file, and builds the pipelines, all before any training starts.
`SegmentationData.score` turns model outputs into metrics at the raw frame rate: frame logits of the valid
downsampled steps are linearly upsampled to the raw length (spec hal_atba.md §9), then argmax, then the metrics of
`hal_jax.metrics.segmentation` against the raw ground truth.

Model selection (hal_jax.model_selection): `config.validation_fraction` of the training videos (default 0) are held
out (`hal_jax.tasks.common.hold_out_validation`), never trained on, and scored by `score_validation`.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import ml_collections
import numpy as np

from hal_jax import errors
from hal_jax import latent_probe
from hal_jax import peer_formats as peer_formats_lib
from hal_jax.alignment import segments
from hal_jax.data import batching
from hal_jax.data import formats
from hal_jax.data import poses as poses_lib
from hal_jax.data import segmentation_formats
from hal_jax.data import segmentation_pipeline as pipeline_lib
from hal_jax.data import staging as staging_lib
from hal_jax.data import synthetic
from hal_jax.metrics import segmentation as segmentation_metrics
from hal_jax.tasks import common
from hal_jax.tasks.base import Pairs

# The MS-TCN convention: Edit and F1 drop only the label named "background" (metrics spec §4).
MSTCN_BACKGROUND_NAME = "background"


@dataclasses.dataclass
class SegmentationData:
  """Validated splits, their pipelines and the scoring of frame predictions (the `ExperimentData` protocol).

  Attributes:
    data_dir: the MS-TCN directory that was read.
    label_map: class names.
    background_id: id of `config.background` (None when the data has no background class).
    train, test: the splits, features in memory.
    train_pipeline, test_pipeline: their batch pipelines.
    train_eval_pipeline: the train split in evaluation mode (middle frames, dataset order), for latent probes.
    validation: training videos held out for model selection (`config.validation_fraction`), or None.
    validation_pipeline: their evaluation pipeline, or None.
  """
  data_dir: str
  label_map: formats.LabelMap
  background_id: int | None
  train: segmentation_formats.SegmentationDataset
  test: segmentation_formats.SegmentationDataset
  train_pipeline: pipeline_lib.SegmentationPipeline
  test_pipeline: pipeline_lib.SegmentationPipeline
  train_eval_pipeline: pipeline_lib.SegmentationPipeline
  validation: segmentation_formats.SegmentationDataset | None = None
  validation_pipeline: pipeline_lib.SegmentationPipeline | None = None

  @property
  def has_true_latents(self) -> bool:
    """Whether the data stores true latents (synthetic data), so identifiability can be measured."""
    return latent_probe.has_true_latents(self.data_dir)

  def predicted_labels(self, predictions: Pairs, dataset: segmentation_formats.SegmentationDataset | None = None
                       ) -> dict[str, np.ndarray]:
    """Raw-rate predicted label ids per video from `(batch, outputs)` pairs with ``frame_logits [B, T, C]``.

    `dataset` is the split the batches index (`video_index`); default the test split.
    """
    dataset = dataset or self.test
    labels = {}
    for batch, outputs in predictions:
      logits = np.asarray(outputs["frame_logits"])
      for row in np.flatnonzero(batch["batch_mask"]):
        video = dataset.videos[int(batch["video_index"][row])]
        num_frames = int(batch["num_frames"][row])
        raw = segments.upsample_logits(logits[row], num_frames, int(batch["raw_length"][row]))
        labels[video.name] = np.argmax(raw, axis=-1).astype(np.int32)
    return labels

  def _scores(self, predictions: Pairs, dataset: segmentation_formats.SegmentationDataset) -> dict[str, float]:
    predicted = self.predicted_labels(predictions, dataset)
    common.check_all_predicted([v.name for v in dataset.videos], predicted, "videos")
    gt = [v.labels for v in dataset.videos]
    pred = [predicted[v.name] for v in dataset.videos]
    background = [] if self.background_id is None else [self.background_id]
    mstcn_background = ([self.label_map.names.index(MSTCN_BACKGROUND_NAME)]
                        if MSTCN_BACKGROUND_NAME in self.label_map.names else [])
    return segmentation_metrics.segmentation_scores(gt, pred, background_ids=background,
                                                    edit_f1_background_ids=mstcn_background)

  def score(self, predictions: Pairs) -> dict[str, float]:
    """Segmentation metrics (0-100) of the test split from `(batch, outputs)` pairs."""
    return self._scores(predictions, self.test)

  def score_validation(self, predictions: Pairs) -> dict[str, float]:
    """The same metrics on the held-out validation videos (predictions of `validation_pipeline`)."""
    if self.validation is None:
      raise ValueError("this experiment has no validation split (config.validation_fraction = 0)")
    return self._scores(predictions, self.validation)

  def write_predictions(self, predictions: Pairs, out_dir: str, peer_formats: bool = False) -> int:
    """Writes ``<out_dir>/<video>.txt`` (one label name per raw frame, MS-TCN style) and
    ``<out_dir>/plots/<video>.png`` for the test split; returns the number of videos.

    With `peer_formats` also ``<out_dir>/mstcn/<video>``, the result files that MS-TCN's ``eval.py`` reads as its
    ``recog_path`` (`hal_jax.peer_formats`). The set appears whole (`staging.staged_directory`): a failure leaves the
    previous predictions, or none.
    """
    from hal_jax import plotting  # pylint: disable=g-import-not-at-top  (matplotlib only when plotting)
    names = self.label_map.names
    if peer_formats:  # Before predicting anything: a class name that the format cannot hold is the data's problem.
      peer_formats_lib.check_mstcn_labels(names, os.path.join(self.data_dir, "mapping.txt"))
    predicted = self.predicted_labels(predictions)
    with staging_lib.staged_directory(out_dir, overwrite=True) as staged:
      os.makedirs(os.path.join(staged, "plots"))
      for video in self.test.videos:
        labels = [names[i] for i in predicted[video.name]]
        segmentation_formats.write_frame_labels(os.path.join(staged, f"{video.name}.txt"), labels)
        if peer_formats:
          peer_formats_lib.write_mstcn_results(os.path.join(staged, peer_formats_lib.MSTCN_DIRECTORY),
                                               {video.name: labels})
        plotting.plot_segmentation(os.path.join(staged, "plots", f"{video.name}.png"), video.labels,
                                   predicted[video.name], names, title=video.name)
    return len(predicted)


# What `config.data_dir` must hold (for the error when a real-data preset has none).
_LAYOUT = ("an MS-TCN directory with features/, groundTruth/, mapping.txt and splits/; or set config.synthetic_preset, "
           "e.g. 'breakfast' with config.feature_dim=64 for Breakfast-structured synthetic data")


def read_splits(config: ml_collections.ConfigDict, workdir: str) -> tuple[
    str, segmentation_formats.SegmentationDataset, segmentation_formats.SegmentationDataset]:
  """(the directory read, the train split, the test split) of `config`: from `config.data_dir` or the synthetic
  preset, or from the prepared TFDS dataset `config.tfds_name` (splits ``train_split<k>`` / ``test_split<k>`` with
  k = `config.split`; the directory is then the prepared dataset's)."""
  name = common.tfds_name(config)
  if name:
    from hal_jax.tfds import source  # pylint: disable=g-import-not-at-top  (TensorFlow Datasets only when used)
    splits = {f"{split}_split{config.split}": "config.split" for split in ("train", "test")}
    builder = source.prepared(name, splits, data_dir=config.tfds_data_dir, feature_dim=config.feature_dim)
    train, test = (source.segmentation_split(name, split, data_dir=config.tfds_data_dir) for split in splits)
    return builder.data_dir, train, test
  data_dir = common.resolve_data_dir(config, workdir, synthetic.SegmentationConfig, _LAYOUT)
  read = dict(split_index=config.split, feature_layout=config.feature_layout, feature_dim=config.feature_dim,
              length_tolerance=config.length_tolerance)
  return (data_dir, segmentation_formats.load_mstcn_split(data_dir, "train", **read),
          segmentation_formats.load_mstcn_split(data_dir, "test", **read))


def load(config: ml_collections.ConfigDict, workdir: str) -> SegmentationData:
  """Reads, validates and wraps the data of `config` (see the module docstring)."""
  data_dir, train, test = read_splits(config, workdir)
  label_map = train.label_map
  background_id = None
  if config.background:
    if config.background not in label_map:  # The config names a class the data lacks: the key is what to fix.
      raise errors.ConfigError("config.background", f"{config.background!r} is not a class of the data "
                               f"({label_map.num_classes} classes in {os.path.join(data_dir, 'mapping.txt')}, e.g. "
                               f"{list(label_map.names[:3])})")
    background_id = label_map.index(config.background, where=os.path.join(data_dir, "mapping.txt"))
  _check_lengths(config, data_dir, (train, test))
  # Buckets and transcripts are sized on the whole training split, so holding videos out changes no batch shape.
  longest = max(pipeline_lib.longest_video(train, config.sample_rate),
                pipeline_lib.longest_video(test, config.sample_rate))
  if longest > config.max_positions:
    raise errors.ConfigError(
        "config.max_positions", f"{config.max_positions} positions, but the longest video has {longest} frames "
        f"after downsampling by {config.sample_rate}")
  # Padded lengths never exceed the positional table (the longest video fits, checked above).
  buckets = tuple(sorted({min(b, config.max_positions)
                          for b in batching.default_buckets(longest, config.bucket_multiple)}))
  max_transcript = config.max_transcript or max(pipeline_lib.longest_transcript(train),
                                                pipeline_lib.longest_transcript(test))
  train, validation = common.hold_out_validation(train, config.get("validation_fraction", 0.0), config.seed)
  poses_of = lambda split: None
  if config.get("use_poses", False):
    # Poses are a training-only stream of the pose-aware add-on (every training video needs its pose file), and an
    # input of every split when the host reads them (config.pose_input, hal_jax/methods/pose_input.py).
    if not config.pose_dir and common.tfds_name(config):
      raise errors.ConfigError("config.pose_dir", "is required with config.tfds_name (the TFDS dataset holds no "
                               "poses)")
    pose_dir = config.pose_dir or os.path.join(data_dir, poses_lib.POSE_DIRECTORY)
    poses_of = lambda split: poses_lib.load_split_poses(pose_dir, split, config.pose_layout)
  pipeline = functools.partial(pipeline_lib.SegmentationPipeline, batch_size=config.batch_size,
                               sample_rate=config.sample_rate, bucket_lengths=buckets,
                               max_transcript=max_transcript, seed=config.seed)
  train_poses = poses_of(train)
  reads_poses = config.get("pose_input", "rgb") != "rgb"
  eval_poses = poses_of if reads_poses else lambda split: None
  return SegmentationData(
      data_dir=data_dir, label_map=label_map, background_id=background_id, train=train, test=test,
      train_pipeline=pipeline(train, train=True, poses=train_poses),
      test_pipeline=pipeline(test, train=False, poses=eval_poses(test)),
      train_eval_pipeline=pipeline(train, train=False, poses=train_poses if reads_poses else None),
      validation=validation,
      validation_pipeline=pipeline(validation, train=False, poses=eval_poses(validation)) if validation else None)


def _check_lengths(config: ml_collections.ConfigDict, data_dir: str,
                   splits: tuple[segmentation_formats.SegmentationDataset, ...]) -> None:
  """ConfigError unless every video has a frame per window and a downsampled frame per transcript action."""
  for dataset in splits:
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
