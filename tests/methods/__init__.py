"""Tests of hal_jax.methods."""
