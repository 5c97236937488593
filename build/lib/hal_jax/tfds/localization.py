"""TFDS builder of a localization feature directory (gt.json, features/<video>.npy [T, D], video_info.tsv).

Read and validated by `hal_jax.data.localization_formats.load_localization_split`. One split per gt.json subset (names
of letters, digits and underscores). An example is one video: ``video``, ``index`` (its place in gt.json),
``features`` [T, D] float32, ``feature_fps``, ``duration`` (s), ``segments`` [N, 2] float64 (start, end in seconds)
and ``labels`` [N] int64; ``info.metadata`` holds ``class_names`` and, for hierarchical sets (FineGym, FineAction),
``fine_to_coarse``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from hal_jax.data import localization_formats
from hal_jax.errors import DataError

_INSTRUCTIONS = """Put a localization feature directory (gt.json in the ActivityNet format, features/<video>.npy of
shape [T, D], video_info.tsv, optionally classes.txt and fine_to_coarse.json) in the manual_dir."""


@dataclasses.dataclass
class LocalizationConfig(tfds.core.BuilderConfig):
  """One localization data set: its feature dimension."""
  feature_dim: int = 2048


class ActivitynetLocalization(tfds.core.GeneratorBasedBuilder):
  """Temporal action localization data in the ActivityNet ground-truth format, from a manual_dir."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
      LocalizationConfig(name="thumos14", description="THUMOS14, I3D RGB+flow snippet features [T, 2048]."),
      LocalizationConfig(name="activitynet", description="ActivityNet 1.3, snippet features [T, 2048]."),
      LocalizationConfig(name="finegym", description="FineGym (coarse -> fine classes), snippet features [T, 2048]."),
      LocalizationConfig(name="fineaction", description="FineAction (coarse -> fine classes), [T, 2048]."),
      LocalizationConfig(name="synthetic", description="hal_jax's synthetic THUMOS/FineGym-like sets (D = 64).",
                         feature_dim=64),
      LocalizationConfig(name="synthetic_test", description="hal_jax's tiny synthetic sets (D = 16).",
                         feature_dim=16),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Text(),
            "index": tfds.features.Scalar(dtype=np.int64),
            "features": tfds.features.Tensor(shape=(None, self.builder_config.feature_dim), dtype=np.float32),
            "feature_fps": tfds.features.Scalar(dtype=np.float64),
            "duration": tfds.features.Scalar(dtype=np.float64),
            "segments": tfds.features.Tensor(shape=(None, 2), dtype=np.float64),
            "labels": tfds.features.Tensor(shape=(None,), dtype=np.int64),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = os.fspath(dl_manager.manual_dir)
    gt_path = os.path.join(root, "gt.json")
    ground_truth = localization_formats.read_detection_ground_truth(gt_path)
    subsets = sorted({video.subset for video in ground_truth.values()})
    bad = [s for s in subsets if not re.fullmatch(r"\w+", s)]
    if bad:
      raise DataError(gt_path, f"subset {bad[0]!r} cannot name a TFDS split (letters, digits, underscores)")
    first = localization_formats.load_localization_split(root, subsets[0], feature_dim=self.builder_config.feature_dim)
    self.info.metadata["class_names"] = list(first.label_map.names)
    if first.fine_to_coarse is not None:
      self.info.metadata["fine_to_coarse"] = json.loads(json.dumps({str(k): v for k, v in
                                                                   first.fine_to_coarse.items()}))
    return {subset: self._generate_examples(root, subset) for subset in subsets}

  def _generate_examples(self, root: str, subset: str):
    dataset = localization_formats.load_localization_split(root, subset, feature_dim=self.builder_config.feature_dim)
    for index, video in enumerate(dataset.videos):
      yield video.name, {"video": video.name, "index": index,
                         "features": np.asarray(video.features, np.float32),
                         "feature_fps": np.float64(video.feature_fps), "duration": np.float64(video.duration),
                         "segments": np.asarray(video.segments, np.float64).reshape(-1, 2),
                         "labels": np.asarray(video.labels, np.int64)}
