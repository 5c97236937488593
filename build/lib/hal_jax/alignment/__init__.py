"""hal_jax.alignment."""
