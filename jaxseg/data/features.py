"""The TFDS feature specs that jaxseg's own builders write.

Every jaxseg builder stores images as encoded bytes (PNG or the user's original JPEG) and
label maps / instance masks as PNG, because TFDS can only encode numpy arrays through
TensorFlow. Boxes are stored in jaxseg's own convention, xyxy in absolute pixels of the
stored image, not TFDS's normalised yxyx `BBoxFeature`.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


def image_feature() -> tfds.features.Image:
    """Returns the feature for an RGB uint8 [H, W, 3] image."""
    return tfds.features.Image(shape=(None, None, 3), dtype=np.uint8)


def semantic_features() -> dict:
    """Returns the features of a semantic example.

    image: uint8 [H, W, 3]; label: uint8 [H, W, 1] class ids, 255 = ignore;
    image_id: int64; file_name: the source file (empty for generated data).
    """
    return {
        "image": image_feature(),
        "label": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8, encoding_format="png"),
        "image_id": np.int64,
        "file_name": tfds.features.Text(),
    }


def instance_features() -> dict:
    """Returns the features of an instance example.

    objects/box: float32 [N, 4] xyxy absolute pixels of the stored image;
    objects/label: int64 [N] instance classes 1..K (their names are in the dataset's
      `info.metadata["instance_class_names"]`, name of class k at index k - 1: a builder
      may only learn them while it generates, after the features are fixed);
    objects/mask: uint8 [N, H, W, 1] binary masks at image resolution;
    objects/is_crowd: bool [N].
    """
    return {
        "image": image_feature(),
        "image_id": np.int64,
        "file_name": tfds.features.Text(),
        "objects": tfds.features.Sequence(
            {
                "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                "label": np.int64,
                "mask": tfds.features.Image(
                    shape=(None, None, 1), dtype=np.uint8, encoding_format="png"
                ),
                "is_crowd": np.bool_,
            }
        ),
    }
