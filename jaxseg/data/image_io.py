"""Reading user image files into clean 8-bit arrays, and encoding arrays for TFDS.

TFDS without TensorFlow cannot encode numpy arrays (its encoder is a TF op), but it does
store encoded bytes and PIL images as they are. Builders therefore hand TFDS either the
original file bytes (when they are already a clean 8-bit RGB JPEG/PNG) or PNG bytes made
here with PIL.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

# Decoding-time errors PIL raises for corrupt, truncated or foreign bytes, and for images
# whose header claims more than twice `MAX_PIXELS` (a "decompression bomb").
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)

# Larger images are refused before decoding: PIL's own bomb limit (about 89 Mpx, 9459 px
# square), far above any segmentation image, and a decoded RGB copy of 270 MB.
MAX_PIXELS = 89_478_485


class BadImageError(ValueError):
    """Raised when image bytes cannot be decoded; the message names the file."""


def to_rgb8(image: Image.Image) -> np.ndarray:
    """Returns `image` as uint8 [H, W, 3] RGB, whatever its mode.

    Grayscale is replicated to three channels, alpha is dropped (composited on black),
    palette and CMYK are converted, and 16/32-bit integer or float images are rescaled
    from their dynamic range to 0..255 (a 16-bit PNG keeps its top 8 bits).
    """
    mode = image.mode
    if mode in ("RGB",):
        return np.asarray(image, dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _gray_to_rgb(_rescale(np.asarray(image).astype(np.float64), 65535.0))
    if mode == "I":
        array = np.asarray(image).astype(np.float64)
        peak = 65535.0 if array.max(initial=0) > 255 else 255.0
        return _gray_to_rgb(_rescale(array, peak))
    if mode == "F":
        array = np.asarray(image).astype(np.float64)
        peak = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        return _gray_to_rgb(_rescale(array, peak))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(black, rgba).convert("RGB"), dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _rescale(array: np.ndarray, peak: float) -> np.ndarray:
    return np.clip(np.round(array * (255.0 / peak)), 0, 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def open_image(data: bytes, *, name: str) -> Image.Image:
    """Returns the fully decoded PIL image of `data`.

    Raises:
      BadImageError: naming `name`, if the bytes are corrupt or the image is larger than
        `MAX_PIXELS` (checked from the header, before decoding).
    """
    if not data:
        raise BadImageError(f"cannot decode image {name}: the file is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        if image.width * image.height > MAX_PIXELS:
            raise BadImageError(
                f"image {name} is {image.width}x{image.height} pixels, more than the "
                f"{MAX_PIXELS} jaxseg decodes"
            )
        image.load()  # Forces a full decode, so truncated files fail here, not later.
    except BadImageError:
        raise
    except UnidentifiedImageError as e:
        # PIL's message names the in-memory buffer (`<_io.BytesIO object at 0x...>`).
        raise BadImageError(
            f"cannot decode image {name}: not an image format PIL can read "
            f"({len(data)} bytes starting {data[:8]!r})"
        ) from e
    except _DECODE_ERRORS as e:
        raise BadImageError(f"cannot decode image {name}: {e}") from e
    return image


def read_file(path: str | os.PathLike) -> bytes:
    """Returns the bytes of `path`; FileNotFoundError names the path."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"missing file: {os.fspath(path)}") from e


def load_rgb_for_tfds(path: str | os.PathLike) -> tuple[bytes, tuple[int, int]]:
    """Returns (encoded bytes safe for `tfds.features.Image(shape=(None, None, 3))`, (H, W)).

    A clean 8-bit RGB JPEG or PNG keeps its original bytes (no re-encoding loss); any
    other mode (grayscale, RGBA, palette, CMYK, 16-bit) is converted with `to_rgb8` and
    re-encoded as PNG. Raises BadImageError or FileNotFoundError naming the file.
    """
    data = read_file(path)
    image = open_image(data, name=os.fspath(path))
    size = (image.height, image.width)
    if image.mode == "RGB" and image.format in ("JPEG", "PNG"):
        return data, size
    return encode_png(to_rgb8(image)), size


def encode_png(array: np.ndarray) -> bytes:
    """Returns PNG bytes of uint8 `array` [H, W], [H, W, 1] or [H, W, 3]."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"encode_png expects [H, W] or [H, W, C], got shape {array.shape}")
    buffer = io.BytesIO()
    # compress_level 1: masks and labels compress well anyway; level 6 is ~4x slower.
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_label_png(data: bytes, *, name: str) -> np.ndarray:
    """Returns the uint8 [H, W] class-index map stored in a label PNG.

    Palette PNGs (VOC's SegmentationClass) give their palette indices; 8-bit grayscale
    gives its values. Anything else (RGB, 16-bit) is not a label map: ValueError naming
    the file.
    """
    image = open_image(data, name=name)
    if image.mode not in ("P", "L"):
        raise ValueError(
            f"label image {name} has mode {image.mode}; expected a palette or 8-bit "
            "grayscale PNG of class indices"
        )
    return np.asarray(image, dtype=np.uint8)
