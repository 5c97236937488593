"""hal_jax.models."""
