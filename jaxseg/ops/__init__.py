"""Pure `jax.numpy` operators for detection and segmentation (no parameters, no Flax)."""
