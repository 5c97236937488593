"""Tests for hal_jax.data."""
