"""Padded, fixed-shape containers passed between the parts of a detector.

Every container is a `flax.struct.dataclass` (a pytree: it goes through `jit`, `vmap` and
`grad`), padded to a static length with a `valid` mask. Fields are documented batched;
inside a `jax.vmap` over images they lose the leading B.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

MASK_FORMATS = ("crop", "canvas")


@flax.struct.dataclass
class Instances:
    """Ground-truth instances of a batch, padded to N = max_instances.

    Attributes:
      boxes: [B, N, 4] float32 xyxy, input (canvas) pixels.
      classes: [B, N] int32, 1..K for objects, 0 on padding.
      masks: uint8 or float [B, N, M, M] when `mask_format == 'crop'` (each instance's mask
        cut to its own box and resampled to M x M, `jaxseg.data`'s default) or [B, N, H, W]
        when `mask_format == 'canvas'` (full input resolution).
      valid: [B, N] bool, False on padding.
      mask_format: 'crop' or 'canvas' (static).
    """

    boxes: jax.Array
    classes: jax.Array
    masks: jax.Array
    valid: jax.Array
    mask_format: str = flax.struct.field(pytree_node=False, default="crop")

    @classmethod
    def from_batch(cls, batch: Mapping[str, Any], *, mask_format: str = "crop") -> Instances:
        """Returns the instances of a `jaxseg.data.make_instance_loader` batch."""
        return cls(
            boxes=jnp.asarray(batch["boxes"], jnp.float32),
            classes=jnp.asarray(batch["classes"], jnp.int32),
            masks=jnp.asarray(batch["masks"]),
            valid=jnp.asarray(batch["valid"], bool),
            mask_format=mask_format,
        )

    def check(self, batch_size: int) -> None:
        """Raises ValueError unless the fields have consistent [B, N, ...] shapes."""
        if self.mask_format not in MASK_FORMATS:
            raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {self.mask_format!r}")
        if self.boxes.ndim != 3 or self.boxes.shape[-1] != 4:
            raise ValueError(f"Instances.boxes must be [B, N, 4], got {self.boxes.shape}")
        lead = self.boxes.shape[:2]
        if lead[0] != batch_size:
            raise ValueError(f"Instances has batch {lead[0]}, the images {batch_size}")
        if lead[1] < 1:
            raise ValueError(f"Instances needs max_instances >= 1, got boxes {self.boxes.shape}")
        for name in ("classes", "valid"):
            if getattr(self, name).shape != lead:
                raise ValueError(
                    f"Instances.{name} must be [B, N] = {lead}, got {getattr(self, name).shape}"
                )
        if self.masks.ndim != 4 or self.masks.shape[:2] != lead:
            raise ValueError(
                f"Instances.masks must be [B, N, ., .] with B, N = {lead}, got {self.masks.shape}"
            )
        if self.mask_format == "crop" and self.masks.shape[2] != self.masks.shape[3]:
            raise ValueError(f"crop masks must be [B, N, M, M], got {self.masks.shape}")


@flax.struct.dataclass
class Proposals:
    """Region proposals of a batch, a fixed count P per image.

    Attributes:
      boxes: [B, P, 4] float32 xyxy, input pixels, clipped to the input (no gradient).
      scores: [B, P] float32 objectness probabilities.
      valid: [B, P] bool, False on slots NMS left empty or on boxes filtered out.
    """

    boxes: jax.Array
    scores: jax.Array
    valid: jax.Array


@flax.struct.dataclass
class Detections:
    """Detections of a batch, a fixed count D per image (100 by default).

    Attributes:
      boxes: [B, D, 4] float32 xyxy, input (canvas) pixels.
      scores: [B, D] float32 class probabilities, in descending order per image.
      classes: [B, D] int32, 1..K (0 on invalid slots).
      masks: [B, D, Hm, Wm] float32 mask probabilities of the predicted class in each
        detection's box (28 x 28 by default); `paste_detection_masks` pastes them into an
        image.
      valid: [B, D] bool; invalid slots have zero boxes, scores and masks.
    """

    boxes: jax.Array
    scores: jax.Array
    classes: jax.Array
    masks: jax.Array
    valid: jax.Array


@flax.struct.dataclass
class RoISamples:
    """The RoIs sampled for training the box and mask heads, a fixed count S per image.

    Attributes:
      boxes: [B, S, 4] float32 xyxy RoIs (proposals and ground truth), no gradient.
      labels: [B, S] int32 class targets, 0 = background (also on invalid slots).
      box_targets: [B, S, 4] float32 encoded deltas to the matched ground truth (0 for
        background).
      matched: [B, S] int32 index of the matched ground-truth instance (0 for background).
      valid: [B, S] bool, False on slots left empty by the sampler.
    """

    boxes: jax.Array
    labels: jax.Array
    box_targets: jax.Array
    matched: jax.Array
    valid: jax.Array
