"""A segmentation host that sees the step's pose as input, at training and at test (pose paper Tables 5 and 6).

The pose-aware add-on (`hal_jax.methods.pose`) uses poses in training only. The paper compares it with hosts that
read poses at inference too: "concatenated pose" (Table 5: "pose and RGB embeddings are merged prior to input into
the segmentation model", pose needed at test; its upper bound) and "Pose → Pose" (Table 6: the host on poses alone).
`PoseInput` wraps a host so that, wherever the host reads ``batch["features"]``, it reads instead
(``config.pose_input``):

  concat  [B, T, D + D_e]  the RGB features ⊕ the step's pose embedding
  pose    [B, T, D_e]      the pose embedding alone

The pose embedding is a `pose_encoder.PoseEncoder` (the spec's Eqs. 2-4, width ``pose_width``, D_e =
``hidden_dim``) of the step's normalised pose, trained with the host's loss; a step without a pose gets the
encoder's embedding of no joint (Γ(0), a learned constant). It has parameters of its own, apart from the pose branch
of `hal_jax.methods.pose` when both are used (a project choice: the paper does not say whether they are shared).
Parameters are ``{"host": ..., "pose_input": ...}``. Batches must carry ``pose_keypoints`` / ``pose_scores`` in every
split (`hal_jax.tasks.segmentation` loads test poses for these modes), so inference, export and the streaming
predictor of such a model need poses too.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from hal_jax import errors
from hal_jax.data import poses as poses_lib
from hal_jax.methods import base
from hal_jax.models import pose_encoder

TASK = base.Task.SEGMENTATION

MODES = ("concat", "pose")
# Folded into the step's dropout key for the input encoder (the host keeps the key itself).
_INPUT_DROPOUT_STREAM = 0x706F7369


def make_encoder(config: ml_collections.ConfigDict) -> pose_encoder.PoseEncoder:
  """The pose encoder at the config's sizes: D_e = ``hidden_dim``, width ``pose_width``, dropout ``pose_dropout``."""
  return pose_encoder.PoseEncoder(output_dim=config.hidden_dim, width=config.pose_width,
                                  dropout_rate=config.pose_dropout)


def init_encoder(config: ml_collections.ConfigDict, rng: jax.Array) -> Any:
  """Parameters of `make_encoder(config)`, sized by the keypoint layout (not by a batch: the evaluation batches of a
  training-only pose branch carry no poses)."""
  k = poses_lib.LAYOUTS[config.pose_layout]
  return make_encoder(config).init({"params": rng}, jnp.zeros((1, k, 2)), jnp.ones((1, k), bool))["params"]


@dataclasses.dataclass(frozen=True)
class PoseInput:
  """`host` on pose-augmented input features (module docstring); the host's schedule."""
  config: ml_collections.ConfigDict
  host: Any
  name: str = "pose_input"

  def inputs(self, params: Any, batch: base.Batch, rng: jax.Array | None) -> base.Batch:
    """`batch` with ``features`` replaced as ``config.pose_input`` says; dropout in the encoder when `rng` is given."""
    poses, joint_mask, _ = pose_encoder.normalise(batch["pose_keypoints"], batch["pose_scores"])
    rngs = None if rng is None else {"dropout": jax.random.fold_in(rng, _INPUT_DROPOUT_STREAM)}
    embeddings = make_encoder(self.config).apply({"params": params}, poses, joint_mask, deterministic=rng is None,
                                                 rngs=rngs)
    embeddings = embeddings.astype(batch["features"].dtype)
    if self.config.pose_input == "pose":
      return dict(batch, features=embeddings)
    return dict(batch, features=jnp.concatenate([batch["features"], embeddings], axis=-1))

  def stage_for_epoch(self, epoch: int) -> int:
    return self.host.stage_for_epoch(epoch)

  def learning_rate(self, epoch: jax.Array) -> jax.Array:
    return self.host.learning_rate(epoch)

  def init(self, rng: jax.Array, batch: base.Batch) -> Any:
    host_rng, encoder_rng = jax.random.split(rng)
    params = init_encoder(self.config, encoder_rng)
    return {"host": self.host.init(host_rng, self.inputs(params, batch, None)), "pose_input": params}

  def forward(self, params: Any, batch: base.Batch, rng: jax.Array | None):
    return self.host.forward(params["host"], self.inputs(params["pose_input"], batch, rng), rng)

  def loss(self, params: Any, batch: base.Batch, rng: jax.Array, stage: int) -> tuple[jax.Array, base.Aux]:
    return self.host.loss(params["host"], self.inputs(params["pose_input"], batch, rng), rng, stage)

  def loss_with_outputs(self, params: Any, batch: base.Batch, rng: jax.Array, stage: int):
    return self.host.loss_with_outputs(params["host"], self.inputs(params["pose_input"], batch, rng), rng, stage)

  def predict(self, params: Any, batch: base.Batch) -> dict[str, jax.Array]:
    return self.host.predict(params["host"], self.inputs(params["pose_input"], batch, None))


def make_method(config: ml_collections.ConfigDict, label_names: tuple[str, ...]) -> Any:
  """The host ``config.host`` for `label_names` as the pose presets use it: with pose input when
  ``config.pose_input`` is "concat" or "pose" (module docstring), else the host itself.

  Raises:
    ConfigError: an unknown host, layout or input mode, a host without encoder outputs, or a class count other than
      ``config.expected_classes``.
  """
  try:
    host_module = importlib.import_module(config.host)
  except ImportError as error:
    raise errors.ConfigError("config.host", f"cannot import {config.host!r} ({error})") from None
  host = host_module.make_method(config, label_names)
  if not callable(getattr(host, "loss_with_outputs", None)):
    raise errors.ConfigError("config.host", f"{config.host!r} does not expose its encoder outputs "
                             "(loss_with_outputs); use hal_jax.methods.atba or hal_jax.methods.hal")
  if config.pose_layout not in poses_lib.LAYOUTS:
    raise errors.ConfigError("config.pose_layout", f"unknown layout {config.pose_layout!r}; choose one of "
                             f"{sorted(poses_lib.LAYOUTS)}")
  if config.expected_classes and len(label_names) != config.expected_classes:
    raise errors.ConfigError("config.expected_classes", f"the preset is for {config.expected_classes} classes, the "
                             f"data has {len(label_names)} (mapping.txt); set --config.expected_classes=0 to accept")
  mode = config.get("pose_input", "rgb")
  if mode == "rgb":
    return host
  if mode not in MODES:
    raise errors.ConfigError("config.pose_input", f"must be 'rgb' or one of {MODES}, got {mode!r}")
  if not config.get("use_poses", False):
    raise errors.ConfigError("config.use_poses", f"must be True with config.pose_input={mode!r} (the host reads "
                             "poses); use configs/pose.py:PRESET,input=" + mode)
  return PoseInput(config=config, host=host)

