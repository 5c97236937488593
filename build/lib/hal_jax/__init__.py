"""hal_jax: weakly-supervised temporal action understanding in JAX/Flax.

Methods: HAL (hierarchical action latents on top of ATBA), ATBA, AHLM, HAAN, pose-aware segmentation, H-CLIP.
See README.md.
"""

import os as _os

__version__ = "0.2.0"

# TensorFlow's C++ INFO lines (tf.data's "Local rendezvous ...", CPU feature notices) are not the project's output;
# warnings and errors still show, and a value the user set is kept. Its start-up notices, which this does not reach,
# are dropped by `hal_jax.quiet`. Set before anything imports TensorFlow, which reads it once.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
