"""Open untrusted image files safely and normalise them to 8-bit RGB."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest image accepted, in pixels (about 7000 x 7000). Larger ones are refused before decoding.
MAX_PIXELS = 50_000_000
#: Smallest side accepted, in pixels.
MIN_SIDE = 8


class ImageInputError(ValueError):
    """An input is not a usable image; the message says why and what to send instead."""


def open_image(source: str | os.PathLike | bytes | Image.Image | np.ndarray) -> Image.Image:
    """Open a path, bytes, PIL image or array as an RGB PIL image, refusing non-images, bombs and tiny images.

    Transparency is composited on white, 16-bit and float images are rescaled to 8 bits, CMYK / palette /
    greyscale images are converted, and EXIF orientation is applied.
    """
    if isinstance(source, np.ndarray):
        image = _from_array(source)
    elif isinstance(source, Image.Image):
        image = source
    else:
        image = _open_file(source)
    _check_size(image.size)
    return _to_rgb(image)


def _open_file(source: str | os.PathLike | bytes) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        stream, name = io.BytesIO(source), "the upload"
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageInputError(f"No file at {path}.")
        stream, name = open(path, "rb"), path.name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            _check_size(image.size)  # before any pixel is decoded
            image.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageInputError(f"{name} is too large to decode safely ({error}).") from error
    except UnidentifiedImageError as error:
        raise ImageInputError(f"{name} is not an image PIL can read; send a PNG, JPEG, WebP, BMP or TIFF.") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageInputError(f"{name} is a damaged or truncated image ({error}); send an intact file.") from error
    finally:
        if not isinstance(source, (bytes, bytearray)):
            stream.close()
    return image


def _check_size(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageInputError(
            f"The image is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels. "
            "Downscale it first (the models look at 128x128 pixels)."
        )
    if min(width, height) < MIN_SIDE:
        raise ImageInputError(f"The image is {width}x{height} pixels; each side must be at least {MIN_SIDE} pixels.")


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageInputError(f"An image array must be HxW, HxWx3 or HxWx4; got shape {array.shape}.")
    _check_size((array.shape[1], array.shape[0]))
    if array.dtype != np.uint8:
        array = _rescale_to_uint8(array.astype(np.float64))
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return Image.fromarray(array)


def _rescale_to_uint8(array: np.ndarray) -> np.ndarray:
    if not np.isfinite(array).all():
        raise ImageInputError("The image contains NaN or infinite values.")
    low, high = float(array.min()), float(array.max())
    if low >= 0 and high <= 1:
        scale_low, scale_high = 0.0, 1.0
    elif low >= 0 and high <= 255:
        scale_low, scale_high = 0.0, 255.0
    else:
        scale_low, scale_high = low, max(high, low + 1e-12)
    return np.clip((array - scale_low) / (scale_high - scale_low) * 255 + 0.5, 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        image = Image.fromarray(_rescale_to_uint8(np.asarray(image, dtype=np.float64)))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")
