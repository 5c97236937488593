"""A tiny train step of each method, built from shapes (for the FLOP-count and precision tests)."""

import jax
import jax.numpy as jnp
import numpy as np

from hal_jax import experiment
from hal_jax import optim
from hal_jax import train
from hal_jax.data import localization_formats
from hal_jax.data import formats
from hal_jax.methods import base


def segmentation_batch(rng: np.random.Generator, b: int = 2, t: int = 48, d: int = 16, c: int = 6) -> dict:
  transcript = np.array([[0, 1, 2, 0, -1], [0, 3, 4, 5, 0]], np.int32)
  labels = np.zeros((b, c), np.float32)
  for i, row in enumerate(transcript):
    labels[i, row[row >= 0]] = 1.0
  return {"features": rng.standard_normal((b, t, d)).astype(np.float32), "frame_mask": np.ones((b, t), bool),
          "frame_labels": rng.integers(0, c, (b, t)).astype(np.int32), "num_frames": np.full(b, t, np.int32),
          "raw_length": np.full(b, 2 * t, np.int32), "transcript": transcript, "transcript_mask": transcript >= 0,
          "video_labels": labels, "batch_mask": np.ones(b, bool), "video_index": np.arange(b, dtype=np.int32)}


def localization_batch(rng: np.random.Generator, b: int = 2, t: int = 24, d: int = 16, c: int = 4) -> dict:
  return {"features": rng.standard_normal((b, t, d)).astype(np.float32), "frame_mask": np.ones((b, t), bool),
          "num_frames": np.full(b, t, np.int32), "video_labels": np.eye(c, dtype=np.float32)[[0, 2]],
          "batch_mask": np.ones(b, bool), "video_index": np.arange(b, dtype=np.int32)}


def _split(batch: dict, label_names: tuple[str, ...]) -> localization_formats.LocalizationDataset:
  """The batch's videos as a training split with two coarse groups (for HAAN's state)."""
  videos = tuple(localization_formats.LocalizationVideo(
      f"v{i}", "train", float(batch["features"].shape[1]), 1.0, batch["features"][i], np.zeros([0, 2]),
      np.flatnonzero(batch["video_labels"][i]).astype(np.int32)) for i in range(len(batch["features"])))
  hierarchy = {j: j % 2 for j in range(len(label_names))}
  return localization_formats.LocalizationDataset("", formats.LabelMap(label_names), videos, hierarchy)


def tiny_step(config_module: str, compute_dtype: str = "float32"):
  """(unjitted step of the last stage, abstract train state, batch, init) of `config_module`'s test preset;
  `init()` makes the concrete initial state."""
  config = __import__(config_module, fromlist=["get_config"]).get_config("test")
  with config.unlocked():
    config.compute_dtype = compute_dtype
  rng = np.random.default_rng(0)
  segmentation = base.method_task(config) is base.Task.SEGMENTATION
  batch = segmentation_batch(rng) if segmentation else localization_batch(rng)
  names = (("background",) + tuple(f"a{i}" for i in range(1, 6)) if segmentation
           else tuple(f"a{i}" for i in range(4)))
  method = base.make_method(config, names)
  tx = optim.make_optimizer(config)
  method_state = method.init_state(method.refresh_data(_split(batch, names))) if base.has_state(method) else None

  def make(batch, method_state):
    params = method.init(jax.random.key(config.seed), batch)
    return experiment.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                            method_state=method_state)

  step = train.make_train_step(method, tx, stage=method.stage_for_epoch(config.num_epochs - 1),
                               steps_per_epoch=1, dropout_key=jax.random.key(1))
  return step, jax.eval_shape(make, batch, method_state), batch, lambda: jax.jit(make)(batch, method_state)
