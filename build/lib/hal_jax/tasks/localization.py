"""The data of one localization experiment: validated splits, their pipelines, detections and their scores.

The task of localization methods (module constant ``TASK = Task.LOCALIZATION``, e.g. `hal_jax.methods.ahlm`);
`LocalizationData` is the `hal_jax.tasks.base.ExperimentData` the training loop reads.

`load(config, workdir)` reads the localization directory `config.data_dir` (layout: hal_jax.data.localization_formats;
with an empty `data_dir` the synthetic preset `config.synthetic_preset` is generated into ``<workdir>/data`` once; or
the prepared TFDS dataset `config.tfds_name`, `hal_jax.tfds`), validates every file and builds both pipelines before
any training starts.

From predictions to scores: the method's host-side ``postprocess(batch, outputs)`` turns each predicted batch into
per-video detections in snippets (class id, score, start, end); they become seconds with the video's feature rate
(snippet t covers [t / fps, (t + 1) / fps)), clipped to its duration, and are scored with the ActivityNet mAP of
`hal_jax.metrics.detection`. Methods that also return change points get a boundary F1 against the annotated action
boundaries (on synthetic data these are exactly the true change points of the generating process). On synthetic
data the stored true latents are also available (`has_true_latents`, `train_eval_pipeline`) for hal_jax.latent_probe.

Model selection (hal_jax.model_selection): `config.validation_fraction` of the training videos are held out
(`hal_jax.tasks.common.hold_out_validation`, a seeded draw) and scored by `score_validation`; they are never
trained on. With a fine -> coarse hierarchy (fine_to_coarse.json), every score also has a coarse-level twin
(``coarse_average_map``, ...): the same detections relabelled with their coarse class, scored against the
coarse-relabelled ground truth.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Mapping

import ml_collections
import numpy as np
from absl import logging

from hal_jax import errors
from hal_jax import latent_probe
from hal_jax import peer_formats as peer_formats_lib
from hal_jax.data import localization_formats
from hal_jax.data import formats
from hal_jax.data import localization_pipeline
from hal_jax.data import batching
from hal_jax.data import synthetic
from hal_jax.methods import base
from hal_jax.metrics import detection
from hal_jax.tasks import common
from hal_jax.tasks.base import Pairs

Postprocess = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], list]


# File name of the prediction JSON that `write_predictions` writes into its directory.
DETECTIONS_FILE = "detections.json"

def boundary_matches(predicted: np.ndarray, true: np.ndarray, tolerance: int) -> int:
  """Number of one-to-one matches between predicted and true boundaries at most `tolerance` apart.

  Pairs are taken greedily by increasing distance (ties: earlier predicted, then earlier true), each boundary at
  most once.

  Args:
    predicted: [P] int boundary positions. true: [G] int boundary positions.
  """
  distance = np.abs(np.asarray(predicted)[:, None] - np.asarray(true)[None, :])
  pred_index, true_index = np.nonzero(distance <= tolerance)
  order = np.argsort(distance[pred_index, true_index], kind="stable")
  used_pred, used_true, matches = set(), set(), 0
  for i, j in zip(pred_index[order], true_index[order]):
    if i not in used_pred and j not in used_true:
      used_pred.add(i)
      used_true.add(j)
      matches += 1
  return matches


def true_boundaries(video: localization_formats.LocalizationVideo) -> np.ndarray:
  """Annotated action starts and ends in snippets, inside (0, T_v): [G] int64, sorted and unique."""
  length = len(video.features)
  positions = np.unique(np.round(video.segments.reshape(-1) * video.feature_fps).astype(np.int64))
  return positions[(positions > 0) & (positions < length)]


@dataclasses.dataclass
class LocalizationData:
  """Validated splits, their pipelines and the scoring of detections.

  Attributes:
    data_dir: the localization directory that was read.
    label_map: the action classes.
    train, test: the splits (features in memory).
    train_pipeline, test_pipeline: their batch pipelines.
    train_eval_pipeline: the train split in evaluation mode (every snippet, dataset order), for latent probes.
    ground_truth: every video of gt.json.
    test_subset: the gt.json subset that is evaluated.
    test_videos: the evaluated videos when a list restricts the subset (THUMOS14's 210), else None.
    tiou_thresholds: the mAP thresholds.
    postprocess: the method's host-side ``postprocess(batch, outputs)`` (see `detections`).
    change_point_tolerance: boundary F1 counts a change point within this many snippets of a true one (the method's
      own setting, for methods that predict change points).
    validation: training videos held out for model selection (`config.validation_fraction`), or None; they are not
      in `train` and are scored against the training subset's ground truth.
    validation_pipeline: their evaluation pipeline, or None.
    coarse_ground_truth: with a fine -> coarse hierarchy, `ground_truth` relabelled with coarse classes (the
      coarse-level mAP scores the same detections, relabelled, against it), else None.
  """
  data_dir: str
  label_map: formats.LabelMap
  train: localization_formats.LocalizationDataset
  test: localization_formats.LocalizationDataset
  train_pipeline: localization_pipeline.LocalizationPipeline
  test_pipeline: localization_pipeline.LocalizationPipeline
  train_eval_pipeline: localization_pipeline.LocalizationPipeline
  ground_truth: dict[str, localization_formats.DetectionVideo]
  test_subset: str
  test_videos: list[str] | None
  tiou_thresholds: tuple[float, ...]
  postprocess: Postprocess
  change_point_tolerance: int
  validation: localization_formats.LocalizationDataset | None = None
  validation_pipeline: localization_pipeline.LocalizationPipeline | None = None
  coarse_ground_truth: dict[str, localization_formats.DetectionVideo] | None = None
  train_subset: str = "train"

  @property
  def has_true_latents(self) -> bool:
    """Whether the data stores true latents (synthetic data), so identifiability can be measured."""
    return latent_probe.has_true_latents(self.data_dir)

  def localize(self, predictions: Pairs, dataset: localization_formats.LocalizationDataset | None = None
               ) -> tuple[dict[str, list[localization_formats.Detection]], dict[str, dict]]:
    """Detections in seconds and the per-video post-processing results of `(batch, outputs)` pairs.

    `dataset` is the split the batches index (`video_index`); default the test split.

    Returns:
      video name -> detections (every test video, possibly empty), and video name -> the method's result dict
      (``detections`` [N, 4] in snippets, optional ``change_points`` / ``raw_change_points``).
    """
    dataset = dataset or self.test
    names = self.label_map.names
    detections: dict[str, list[localization_formats.Detection]] = {}
    results: dict[str, dict] = {}
    for batch, outputs in predictions:
      for row, result in enumerate(self.postprocess(batch, outputs)):
        if result is None:
          continue
        video = dataset.videos[int(batch["video_index"][row])]
        rows = np.asarray(result["detections"], np.float64).reshape(-1, 4)
        seconds = np.clip(rows[:, 2:4] / video.feature_fps, 0.0, video.duration)
        detections[video.name] = [localization_formats.Detection(names[int(label)], float(score), (float(s), float(e)))
                                  for (label, score), (s, e) in zip(rows[:, :2], seconds)]
        results[video.name] = result
    common.check_all_predicted([v.name for v in dataset.videos], detections,
                               f"videos of subset {dataset.videos[0].subset!r}")
    return detections, results

  def change_point_scores(self, results: Mapping[str, dict]) -> dict[str, float]:
    """Boundary precision / recall / F1 (0-100, micro over videos) of pruned and raw change points, and rates."""
    scores = {}
    for key, suffix in (("change_points", ""), ("raw_change_points", "_raw")):
      if not all(key in result for result in results.values()):
        continue
      matched = predicted = true = snippets = 0
      for video in self.test.videos:
        points, gold = np.asarray(results[video.name][key]), true_boundaries(video)
        matched += boundary_matches(points, gold, self.change_point_tolerance)
        predicted, true, snippets = predicted + len(points), true + len(gold), snippets + len(video.features)
      precision = 100.0 * matched / predicted if predicted else 0.0
      recall = 100.0 * matched / true if true else 0.0
      f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
      scores.update({f"change_point_precision{suffix}": precision, f"change_point_recall{suffix}": recall,
                     f"change_point_f1{suffix}": f1, f"change_points_per_100{suffix}": 100.0 * predicted / snippets})
    return scores

  def _map_scores(self, detections: Mapping[str, list[localization_formats.Detection]], subset: str,
                  videos: list[str] | None) -> dict[str, float]:
    """mAP per tIoU and its average; with a hierarchy also ``coarse_*``: the same detections relabelled coarse.

    mAP averages over the classes annotated in the evaluated videos; a detection of a class of the label map that no
    evaluated video has (common in a small validation split) cannot change any of those APs and is dropped.
    """
    score = functools.partial(detection.detection_scores, tiou_thresholds=self.tiou_thresholds, subset=subset,
                              videos=videos, drop_unknown_labels=True)
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="dropped .* whose label is not a ground-truth class")
      scores = score(self.ground_truth, detections)
      if self.coarse_ground_truth is not None:
        coarse_name = coarse_names(self.label_map, self.train.fine_to_coarse)
        coarse = {video: [dataclasses.replace(d, label=coarse_name[d.label]) for d in found]
                  for video, found in detections.items()}
        scores.update({f"coarse_{k}": v for k, v in score(self.coarse_ground_truth, coarse).items()})
    return scores

  def score(self, predictions: Pairs) -> dict[str, float]:
    """mAP per tIoU and its average (0-100) of the test split (fine and, with a hierarchy, coarse level), plus
    change-point scores when there are any."""
    detections, results = self.localize(predictions)
    scores = self._map_scores(detections, self.test_subset, self.test_videos)
    scores.update(self.change_point_scores(results))
    return scores

  def score_validation(self, predictions: Pairs) -> dict[str, float]:
    """Like `score`, for the held-out validation videos (predictions of `validation_pipeline`)."""
    if self.validation is None:
      raise ValueError("this experiment has no validation split (config.validation_fraction = 0)")
    detections, _ = self.localize(predictions, self.validation)
    return self._map_scores(detections, self.train_subset, [v.name for v in self.validation.videos])

  def write_predictions(self, predictions: Pairs, out_dir: str, peer_formats: bool = False) -> int:
    """Writes ``<out_dir>/detections.json`` (ActivityNet style) for the test split; returns the number of videos.

    Score it with ``python -m hal_jax.evaluate --task=localization --ground_truth=<data_dir>/gt.json
    --predictions=<out_dir>/detections.json --subset=<test subset>``. With `peer_formats` also
    ``<out_dir>/activitynet.json``, which ActivityNet's ``eval_detection.py`` reads unchanged: the evaluated videos
    only, without detections of classes that they do not annotate (`hal_jax.peer_formats.activitynet_results`).
    """
    detections, _ = self.localize(predictions)
    os.makedirs(out_dir, exist_ok=True)
    localization_formats.write_detection_predictions(os.path.join(out_dir, DETECTIONS_FILE), detections)
    if peer_formats:
      dropped = peer_formats_lib.write_activitynet_predictions(
          os.path.join(out_dir, peer_formats_lib.ACTIVITYNET_FILE), detections, self.ground_truth, self.test_subset,
          self.test_videos)
      if dropped:
        logging.warning("%s: left out %d detections of classes that subset %r does not annotate (the reference "
                        "evaluator stops on them)", peer_formats_lib.ACTIVITYNET_FILE, dropped, self.test_subset)
    return len(detections)


def coarse_names(label_map: formats.LabelMap, fine_to_coarse: Mapping[int, int]) -> dict[str, str]:
  """Fine class name -> the name of its coarse class, ``coarse_<id>``."""
  return {name: f"coarse_{fine_to_coarse[i]}" for i, name in enumerate(label_map.names)}


def coarse_ground_truth(ground_truth: Mapping[str, localization_formats.DetectionVideo], label_map: formats.LabelMap,
                        fine_to_coarse: Mapping[int, int]) -> dict[str, localization_formats.DetectionVideo]:
  """`ground_truth` with every annotation relabelled by its coarse class (see `coarse_names`)."""
  name = coarse_names(label_map, fine_to_coarse)
  return {video: dataclasses.replace(gt, annotations=tuple(dataclasses.replace(a, label=name[a.label])
                                                           for a in gt.annotations))
          for video, gt in ground_truth.items()}


# What `config.data_dir` must hold (for the error when a real-data preset has none).
_LAYOUT = "a localization directory with gt.json, video_info.tsv and features/"


def ground_truth_of(*splits: localization_formats.LocalizationDataset
                    ) -> dict[str, localization_formats.DetectionVideo]:
  """The gt.json entries of the videos of `splits` (what a TFDS dataset holds of gt.json)."""
  return {video.name: localization_formats.DetectionVideo(video.name, video.subset, video.duration, tuple(
      localization_formats.DetectionAnnotation((float(start), float(end)), split.label_map.names[int(label)])
      for (start, end), label in zip(video.segments, video.labels))) for split in splits for video in split.videos}


def read_splits(config: ml_collections.ConfigDict, workdir: str) -> tuple[
    str, localization_formats.LocalizationDataset, localization_formats.LocalizationDataset, list[str] | None,
    dict[str, localization_formats.DetectionVideo]]:
  """(the directory read, the train subset, the test subset, its evaluated videos (`config.test_video_list`, or None
  for all), the ground truth) of `config`: from `config.data_dir` or the synthetic preset, or from the prepared TFDS
  dataset `config.tfds_name` (one split per subset; the directory is then the prepared dataset's, and a relative
  `test_video_list` is relative to the working directory)."""
  feature_dim = config.feature_dim or None
  name = common.tfds_name(config)
  if name:
    from hal_jax.tfds import source  # pylint: disable=g-import-not-at-top  (TensorFlow Datasets only when used)
    subsets = {config.train_subset: "config.train_subset", config.test_subset: "config.test_subset"}
    builder = source.prepared(name, subsets, data_dir=config.tfds_data_dir, feature_dim=feature_dim)
    train, test = (source.localization_split(name, subset, data_dir=config.tfds_data_dir)
                   for subset in (config.train_subset, config.test_subset))
    test_videos = formats.read_split_list(config.test_video_list) if config.test_video_list else None
    if test_videos is not None:
      names = {video.name for video in test.videos}
      missing = [video for video in test_videos if video not in names]
      if missing:
        raise errors.DataError(config.test_video_list, f"video {missing[0]!r} is not in subset "
                               f"{config.test_subset!r} of {name}")
      wanted = set(test_videos)
      test = dataclasses.replace(test, videos=tuple(v for v in test.videos if v.name in wanted))
    return builder.data_dir, train, test, test_videos, ground_truth_of(train, test)
  data_dir = common.resolve_data_dir(config, workdir, synthetic.LocalizationConfig, _LAYOUT)
  train = localization_formats.load_localization_split(data_dir, config.train_subset, feature_dim=feature_dim)
  test_videos = None
  if config.test_video_list:
    list_path = os.path.join(data_dir, config.test_video_list)  # An absolute list path is kept as it is.
    test_videos = formats.read_split_list(list_path)
  test = localization_formats.load_localization_split(data_dir, config.test_subset, feature_dim=feature_dim,
                                                      videos=test_videos)
  ground_truth = localization_formats.read_detection_ground_truth(os.path.join(data_dir, "gt.json"),
                                                                  label_map=train.label_map)
  return data_dir, train, test, test_videos, ground_truth


def load(config: ml_collections.ConfigDict, workdir: str) -> LocalizationData:
  """Reads, validates and wraps the data of `config` (see the module docstring)."""
  data_dir, train, test, test_videos, ground_truth = read_splits(config, workdir)
  train, validation = common.hold_out_validation(train, config.get("validation_fraction", 0.0), config.seed)
  try:
    thresholds = detection.parse_tiou_range(config.tiou_thresholds)
  except ValueError as error:
    raise errors.ConfigError("config.tiou_thresholds", str(error)) from None
  method = base.make_method(config, train.label_map.names)
  if not callable(getattr(method, "postprocess", None)):
    raise errors.ConfigError("config.method", f"{config.method!r} has no postprocess(batch, outputs) for "
                             "localization")
  longest = max(len(v.features) for v in train.videos + test.videos + (validation.videos if validation else ()))
  buckets = batching.default_buckets(longest, config.bucket_multiple)
  shared = dict(batch_size=config.batch_size, seed=config.seed)
  eval_pipeline = functools.partial(localization_pipeline.LocalizationPipeline, train=False, bucket_lengths=buckets,
                                    **shared)
  return LocalizationData(
      data_dir=data_dir, label_map=train.label_map, train=train, test=test,
      train_pipeline=localization_pipeline.LocalizationPipeline(train, train=True, train_length=config.train_length,
                                                                **shared),
      test_pipeline=eval_pipeline(test), train_eval_pipeline=eval_pipeline(train),
      ground_truth=ground_truth, test_subset=config.test_subset, test_videos=test_videos,
      tiou_thresholds=thresholds, postprocess=method.postprocess,
      change_point_tolerance=getattr(method, "change_point_tolerance", 0), validation=validation,
      validation_pipeline=eval_pipeline(validation) if validation else None,
      coarse_ground_truth=(coarse_ground_truth(ground_truth, train.label_map, train.fine_to_coarse)
                           if train.fine_to_coarse is not None else None),
      train_subset=config.train_subset)
