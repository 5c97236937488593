r"""Pose-aware weakly-supervised action segmentation: a transcript-supervised host plus pose-to-RGB distillation.

Zhao et al., CVPR Workshops (pose-to-RGB contrastive distillation); spec ../shared/specs/pose.md. The argument is
``preset[,host=atba|hal][,loss=filtered|vanilla|none][,mode=offline|online][,input=rgb|concat|pose]``:

  python -m hal_jax.main --config=configs/pose.py --workdir=/tmp/pose                   # synthetic, ATBA, filtered
  python -m hal_jax.main --config=configs/pose.py:test --workdir=/tmp/pose_test
  python -m hal_jax.main --config=configs/pose.py:synthetic,loss=none,mode=online --workdir=/tmp/online_base
  python -m hal_jax.main --config=configs/pose.py:desktop_assembly,mode=online --workdir=/tmp/da \
      --config.data_dir=/data/desktop_assembly

* loss: ``filtered`` (the method: negatives at pose distance >= δ), ``vanilla`` (δ = 0: every other pose frame is a
  negative; Table 3), ``none`` (the host alone, no poses read: the baseline).
* mode: ``offline`` (the host as it is) or ``online`` (causal encoder: frames never attend ahead; Table 1).
* host: the project's transcript-supervised backbone, ATBA (default) or HAL (spec §10 row 12).
* input: what the host reads, in training and at test: ``rgb`` (the features; the method), ``concat`` (features ⊕
  a trained pose encoder's embedding of the step's pose: Table 5's "concatenated pose", poses needed at test) or
  ``pose`` (the pose embedding alone: Table 6's "Pose → Pose"); hal_jax/methods/pose_input.py.

Real-data presets (ATA, Desktop Assembly, IKEA ASM) carry the paper's class counts, pose stride and δ; they need an
MS-TCN directory with ``poses/<video>.npz`` for every training video (README "Pose-aware segmentation").
"""

import ml_collections

from configs import atba as atba_config
from configs import hal as hal_config

# Host preset of each pose preset, and the keys that differ (δ: spec §4; None = the paper gives online/offline).
_PRESETS = {
    "synthetic": dict(host_preset="synthetic", synthetic_preset="pose", pose_delta=0.15, pose_width=64),
    "test": dict(host_preset="test", synthetic_preset="pose_test", pose_delta=0.15, pose_width=16),
    # Desktop Assembly: 23 classes, ResNet features, 59/17 videos; δ = 0.15 (paper).
    "desktop_assembly": dict(host_preset="breakfast", expected_classes=23, background="", pose_delta=0.15,
                             sample_rate=5, max_positions=2000),
    # ATA: 15 classes, I3D; δ = 0.05 online, 0.2 offline (paper).
    "ata": dict(host_preset="breakfast", expected_classes=15, background="", pose_delta=None, sample_rate=5,
                max_positions=1000),
    # IKEA ASM: 33 classes, I3D; δ = 0.15 (project choice, spec §10 row 9).
    "ikea_asm": dict(host_preset="breakfast", expected_classes=33, background="", pose_delta=0.15, sample_rate=5,
                     max_positions=1500),
}
_ATA_DELTA = {"online": 0.05, "offline": 0.2}
_HOSTS = {"atba": (atba_config, "hal_jax.methods.atba"), "hal": (hal_config, "hal_jax.methods.hal")}
_LOSSES = ("filtered", "vanilla", "none")
_MODES = ("offline", "online")
_INPUTS = ("rgb", "concat", "pose")


def _parse(arg: str | None) -> dict[str, str]:
  """"preset[,host=..][,loss=..][,mode=..][,input=..]" -> {"preset", "host", "loss", "mode", "input"}."""
  parts = [p for p in (arg or "synthetic").split(",") if p]
  choices = {"host": tuple(_HOSTS), "loss": _LOSSES, "mode": _MODES, "input": _INPUTS}
  parsed = {"preset": parts[0], "host": "atba", "loss": "filtered", "mode": "offline", "input": "rgb"}
  if parsed["preset"] not in _PRESETS:
    raise ValueError(f"unknown preset {parsed['preset']!r} for configs/pose.py; choose one of {sorted(_PRESETS)}")
  for part in parts[1:]:
    key, _, value = part.partition("=")
    if key not in choices or value not in choices[key]:
      raise ValueError(f"configs/pose.py takes 'preset[,host=atba|hal][,loss=filtered|vanilla|none]"
                       f"[,mode=offline|online][,input=rgb|concat|pose]', got {arg!r}")
    parsed[key] = value
  return parsed


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The locked config of `arg` (module docstring)."""
  parsed = _parse(arg)
  settings = dict(_PRESETS[parsed["preset"]])
  host_config, host_method = _HOSTS[parsed["host"]]
  config = host_config.get_config(settings.pop("host_preset"))
  delta = settings.pop("pose_delta")
  with config.unlocked():
    config.host = host_method
    config.method = ("hal_jax.methods.pose" if parsed["loss"] != "none" else
                     "hal_jax.methods.pose_input" if parsed["input"] != "rgb" else host_method)
    config.use_poses = parsed["loss"] != "none" or parsed["input"] != "rgb"
    config.pose_input = parsed["input"]
    config.causal = parsed["mode"] == "online"
    config.pose_dir = ""  # Empty: <data_dir>/poses.
    config.pose_layout = "coco17"  # RTMPose Body2D / RTMO; "coco_wholebody133" for WholeBody2D.
    config.pose_stride = 5  # The paper samples a pose every 5 raw frames (what the synthetic poses do).
    config.pose_delta = _ATA_DELTA[parsed["mode"]] if delta is None else delta
    if parsed["loss"] == "vanilla":
      config.pose_delta = 0.0
    config.pose_temperature = 0.1
    config.pose_weight = 1.0
    config.pose_width = 256
    config.pose_dropout = 0.1
    config.expected_classes = 0  # 0: any number of classes.
    config.update(settings)
    config.preset = parsed["preset"]
    config.variant = f"host={parsed['host']},loss={parsed['loss']},mode={parsed['mode']},input={parsed['input']}"
  config.lock()
  return config
