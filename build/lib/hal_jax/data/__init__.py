"""hal_jax.data."""
