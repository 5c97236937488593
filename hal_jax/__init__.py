"""hal_jax: weakly-supervised temporal action understanding in JAX/Flax.

Methods: HAL (hierarchical action latents on top of ATBA), ATBA, AHLM, HAAN. See README.md.
"""

__version__ = "0.1.0"
