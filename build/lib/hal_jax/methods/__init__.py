"""hal_jax.methods."""
