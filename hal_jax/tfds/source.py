"""Prepared TFDS splits as the datasets the training pipelines read (an alternative to reading the directories).

  train = source.segmentation_split("mstcn_segmentation/gtea", "train_split1", data_dir=DATA)
  pipeline = pipeline_lib.SegmentationPipeline(train, ...)      # as with segmentation_formats.load_mstcn_split

TFDS does not keep the order in which examples were written; the videos are put back in the order of the split list
(gt.json for localization) from their ``index``, so the dataset, and every seeded batch drawn from it, equals the
directory reader's.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

import hal_jax.tfds  # noqa: F401  (registers the builders)
from hal_jax.data import localization_formats
from hal_jax.data import formats
from hal_jax.data import segmentation_formats


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
