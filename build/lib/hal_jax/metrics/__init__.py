"""hal_jax.metrics."""
