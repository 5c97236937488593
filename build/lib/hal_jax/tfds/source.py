"""Prepared TFDS splits as the datasets the training pipelines read (an alternative to reading the directories).

  train = source.segmentation_split("mstcn_segmentation/gtea", "train_split1", data_dir=DATA)
  pipeline = pipeline_lib.SegmentationPipeline(train, ...)      # as with segmentation_formats.load_mstcn_split

TFDS does not keep the order in which examples were written; the videos are put back in the order of the split list
(gt.json for localization) from their ``index``, so the dataset, and every seeded batch drawn from it, equals the
directory reader's. Training reads them through ``config.tfds_name`` (`hal_jax.tasks.segmentation` and
`.localization` call `prepared` first, so a missing dataset or split is one line naming the config key).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds

import hal_jax.tfds  # noqa: F401  (registers the builders)
from hal_jax import errors
from hal_jax.data import localization_formats
from hal_jax.data import formats
from hal_jax.data import segmentation_formats


def prepared(name: str, splits: Mapping[str, str], *, data_dir: str | None = None,
             feature_dim: int | None = None) -> tfds.core.DatasetBuilder:
  """The builder of the prepared dataset `name` in `data_dir` (default: TFDS's), checked for training.

  Args:
    name: ``<builder>/<config>``, the value of ``config.tfds_name``.
    splits: the splits that are read -> the config key that chose each (named when the split is missing).
    data_dir: where TFDS keeps prepared datasets (``config.tfds_data_dir``; empty or None: TFDS's default).
    feature_dim: the feature dimension the config expects (``config.feature_dim``), or None for any.

  Raises:
    ConfigError: `name` is no registered dataset, lacks a split, or has other features than `feature_dim`.
    DataError: the dataset is not prepared in `data_dir`.
  """
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as error:
    raise errors.ConfigError("config.tfds_name", f"{name!r} is not a registered TFDS dataset (hal_jax's: "
                             "mstcn_segmentation/<config>, activitynet_localization/<config>): "
                             f"{str(error).splitlines()[0][:200]}") from None
  if not builder.is_prepared():
    raise errors.DataError(builder.data_dir, f"{name} is not prepared here (config.tfds_data_dir); prepare it from its "
                           "manual_dir first, e.g. tfds.builder(...).download_and_prepare(download_config="
                           "tfds.download.DownloadConfig(manual_dir=DIR))")
  for split, key in splits.items():
    if split not in builder.info.splits:
      raise errors.ConfigError(key, f"{name} has no split {split!r}; it has {sorted(builder.info.splits)}")
  dim = builder.info.features["features"].shape[-1]
  if feature_dim is not None and dim != feature_dim:
    raise errors.ConfigError("config.feature_dim", f"{feature_dim}, but {name} has features of dimension {dim}")
  return builder


def _examples(name: str, split: str, data_dir: str | None, manual_dir: str | None):
  builder = tfds.builder(name, data_dir=data_dir)
  if manual_dir is not None:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  examples = sorted(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)),
                    key=lambda example: int(example["index"]))
  return builder, examples


def segmentation_split(name: str, split: str, *, data_dir: str | None = None,
                       manual_dir: str | None = None) -> segmentation_formats.SegmentationDataset:
  """A split of `mstcn_segmentation/<config>` as a `segmentation_formats.SegmentationDataset` (prepared first from
  `manual_dir` when given)."""
  builder, examples = _examples(name, split, data_dir, manual_dir)
  label_map = formats.LabelMap(tuple(builder.info.metadata["class_names"]))
  videos = tuple(segmentation_formats.SegmentationVideo(name=example["video"].decode("utf-8"),
                                                       features=example["features"],
                                                       labels=example["frame_labels"].astype(np.int32),
                                                       transcript=example["transcript"].astype(np.int32))
                 for example in examples)
  return segmentation_formats.SegmentationDataset(root=f"tfds:{name}/{split}", label_map=label_map, videos=videos)


def localization_split(name: str, subset: str, *, data_dir: str | None = None,
                       manual_dir: str | None = None) -> localization_formats.LocalizationDataset:
  """A subset of `activitynet_localization/<config>` as a `localization_formats.LocalizationDataset`."""
  builder, examples = _examples(name, subset, data_dir, manual_dir)
  label_map = formats.LabelMap(tuple(builder.info.metadata["class_names"]))
  hierarchy = builder.info.metadata.get("fine_to_coarse")
  videos = tuple(localization_formats.LocalizationVideo(
      name=example["video"].decode("utf-8"), subset=subset, duration=float(example["duration"]),
      feature_fps=float(example["feature_fps"]), features=example["features"], segments=example["segments"],
      labels=example["labels"].astype(np.int32)) for example in examples)
  return localization_formats.LocalizationDataset(
      root=f"tfds:{name}/{subset}", label_map=label_map, videos=videos,
      fine_to_coarse={int(k): int(v) for k, v in hierarchy.items()} if hierarchy else None)
