"""Test-wide settings: CPU only, and deterministic seeds."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
