"""Runs a model exported by `hal_jax.export` with JAX and NumPy alone (no training code, no TensorFlow).

  predictor = deploy.load("model.zip")
  outputs = predictor.predict_video(features)       # features [T, D] at the model's sample rate
  labels = [predictor.class_names[i] for i in outputs["frame_logits"].argmax(-1)]   # segmentation

`predictor(inputs)` runs a padded batch as exported (`meta["inputs"]` names the entries and their symbolic shapes);
`predict_video` pads one video to the time multiple, builds the mask, and cuts the outputs back to its length.
"""

from __future__ import annotations

import json
import zipfile
from typing import Any

import jax
import numpy as np

PROGRAM = "predictor.stablehlo"
META = "meta.json"


class Predictor:
  """A deserialized exported predictor and its metadata."""

  def __init__(self, exported: Any, meta: dict[str, Any]):
    self.exported = exported
    self.meta = meta
    self.class_names: list[str] = meta["class_names"]
    self.time_multiple: int = meta["time_multiple"]

  def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs a batch: `inputs` holds exactly `meta["inputs"]`, time padded to a multiple of `time_multiple`."""
    missing = set(self.meta["inputs"]) - set(inputs)
    if missing:
      raise ValueError(f"missing inputs {sorted(missing)}; the predictor takes {sorted(self.meta['inputs'])}")
    arrays = {name: np.asarray(inputs[name], self.meta["inputs"][name]["dtype"]) for name in self.meta["inputs"]}
    return jax.device_get(self.exported.call(arrays))

  def predict_video(self, features: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs for one video of `features` [T, D]; per-step outputs are cut to T, the batch axis removed."""
    features = np.asarray(features, np.float32)
    length = len(features)
    padded = -(-length // self.time_multiple) * self.time_multiple
    inputs = {"features": np.zeros([1, padded, features.shape[1]], np.float32)}
    inputs["features"][0, :length] = features
    mask = np.zeros([1, padded], bool)
    mask[0, :length] = True
    derived = {"frame_mask": mask, "num_frames": np.array([length]), "raw_length": np.array([length]),
               "batch_mask": np.ones([1], bool), "video_index": np.zeros([1])}
    for name in self.meta["inputs"]:
      if name not in inputs:
        if name not in derived:
          raise ValueError(f"predict_video cannot build input {name!r}; call the predictor with a batch")
        inputs[name] = derived[name]
    outputs = self(inputs)
    return {name: value[0, :length] if value.ndim >= 2 and value.shape[1] == padded else value[0]
            for name, value in outputs.items()}


def load(path: str) -> Predictor:
  """Reads a file written by `python -m hal_jax.export`."""
  from jax import export  # pylint: disable=g-import-not-at-top
  with zipfile.ZipFile(path) as archive:
    meta = json.loads(archive.read(META))
    exported = export.deserialize(bytearray(archive.read(PROGRAM)))
  return Predictor(exported, meta)
