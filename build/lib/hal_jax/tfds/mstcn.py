"""TFDS builder of the MS-TCN directory layout (features/, groundTruth/, transcripts/, mapping.txt, splits/).

Every video is read and validated by `hal_jax.data.formats.load_mstcn_split` (the training data's own reader, so a
bad file stops the build with its one-line error). An example is one video: ``video`` (name), ``index`` (its place
in the split list), ``features`` [T, D] float32 (time first, whatever the files' layout), ``frame_labels`` [T] int64
and ``transcript`` [M] int64; the class names of mapping.txt are in ``info.metadata["class_names"]``.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from hal_jax.data import formats
from hal_jax.data import segmentation_formats

_INSTRUCTIONS = """Put an MS-TCN data directory (features/, groundTruth/, mapping.txt, splits/, optionally
transcripts/) in the manual_dir, e.g. the contents of data/<dataset>/ of the MS-TCN release."""


@dataclasses.dataclass
class MstcnConfig(tfds.core.BuilderConfig):
  """One data set of the MS-TCN layout: its feature dimension, file layout and label-length tolerance."""
  feature_dim: int = 2048
  feature_layout: str = "DT"
  length_tolerance: int = 0


class MstcnSegmentation(tfds.core.GeneratorBasedBuilder):
  """Action segmentation data in the MS-TCN layout, from a manual_dir."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
      MstcnConfig(name="breakfast", description="Breakfast, I3D features [2048, T]."),
      MstcnConfig(name="50salads", description="50Salads, I3D features [2048, T]."),
      MstcnConfig(name="gtea", description="GTEA, I3D features [2048, T]."),
      MstcnConfig(name="hollywood", description="Hollywood Extended, [T, 2048] features.", feature_layout="TD",
                  length_tolerance=7),
      MstcnConfig(name="crosstask", description="CrossTask, [3200, T] features.", feature_dim=3200),
      MstcnConfig(name="synthetic", description="hal_jax's synthetic default (D = 64).", feature_dim=64),
      MstcnConfig(name="synthetic_test", description="hal_jax's tiny synthetic preset (D = 16).", feature_dim=16),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Text(),
            "index": tfds.features.Scalar(dtype=np.int64),
            "features": tfds.features.Tensor(shape=(None, self.builder_config.feature_dim), dtype=np.float32),
            "frame_labels": tfds.features.Tensor(shape=(None,), dtype=np.int64),
            "transcript": tfds.features.Tensor(shape=(None,), dtype=np.int64),
        }),
        metadata=tfds.core.MetadataDict(),
        supervised_keys=("features", "frame_labels"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = os.fspath(dl_manager.manual_dir)
    label_map = formats.read_mapping(os.path.join(root, "mapping.txt"))
    self.info.metadata["class_names"] = list(label_map.names)
    folds = sorted({int(m.group(1)) for path in glob.glob(os.path.join(root, "splits", "*.split*.bundle"))
                    if (m := re.search(r"\.split(\d+)\.bundle$", path))})
    generators = {}
    for fold in folds:
      for split in ("train", "test"):
        if os.path.exists(segmentation_formats.split_path(root, split, fold)):
          generators[f"{split}_split{fold}"] = self._generate_examples(root, split, fold)
    if not generators:
      raise formats.DataError(os.path.join(root, "splits"), "no <train|test>.split<k>.bundle files")
    return generators

  def _generate_examples(self, root: str, split: str, fold: int):
    config = self.builder_config
    dataset = segmentation_formats.load_mstcn_split(root, split, fold, feature_layout=config.feature_layout,
                                       feature_dim=config.feature_dim, length_tolerance=config.length_tolerance)
    for index, video in enumerate(dataset.videos):
      yield video.name, {"video": video.name, "index": index,
                         "features": np.asarray(video.features, np.float32),
                         "frame_labels": np.asarray(video.labels, np.int64),
                         "transcript": np.asarray(video.transcript, np.int64)}
