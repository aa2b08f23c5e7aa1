"""The jitted resize: PIL's antialiased bilinear, torch's bilinear, identity at scale 1."""

import jax
import numpy as np
import pytest
from PIL import Image

from jaxseg.predict.preprocess import to_network_input

MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def _resize(image, inside, canvas, *, antialias):
    """Returns float32 [h', w', 3] in 0..255 of one image resized to `inside` (jitted)."""
    batch = np.zeros((1, *canvas, 3), np.uint8)
    batch[0, : image.shape[0], : image.shape[1]] = image
    fn = jax.jit(
        lambda x, s, i: to_network_input(
            x, s, i, mean=MEAN, std=STD, pixel_scale=1.0, antialias=antialias
        )
    )
    out = np.asarray(fn(batch, np.asarray([image.shape[:2]]), np.asarray([inside])))[0]
    assert not out[inside[0] :].any() and not out[:, inside[1] :].any()  # zero padding
    return out[: inside[0], : inside[1]]


@pytest.mark.parametrize("inside", [(40, 57), (23, 31), (61, 90)])
def test_antialiased_resize_is_pils_bilinear(inside):
    image = np.random.default_rng(0).integers(0, 256, (40, 57, 3), dtype=np.uint8)
    out = _resize(image, inside, (64, 96), antialias=True)
    expected = np.asarray(Image.fromarray(image).resize(inside[::-1], Image.BILINEAR))
    # PIL rounds to uint8 after each of its two passes; identity is exact.
    np.testing.assert_allclose(out, expected, atol=0.0 if inside == (40, 57) else 1.01)
    assert np.abs(out - expected).mean() < 0.35


@pytest.mark.parametrize("inside", [(61, 90), (23, 31)])
def test_resize_without_antialias_is_torchs_bilinear(inside):
    torch = pytest.importorskip("torch")
    image = np.random.default_rng(1).integers(0, 256, (40, 57, 3), dtype=np.uint8)
    out = _resize(image, inside, (64, 96), antialias=False)
    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    expected = torch.nn.functional.interpolate(
        x, size=inside, mode="bilinear", align_corners=False
    )[0].permute(1, 2, 0)
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-3)
