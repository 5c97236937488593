"""The tasks of hal_jax: segmentation, localization and recognition, each the data of one experiment."""
