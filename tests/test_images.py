import io

import numpy as np
import pytest
from PIL import Image

from magic.images import MAX_PIXELS, ImageInputError, open_image


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    assert open_image(image).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_greyscale_is_rescaled(tmp_path):
    array = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    rgb = open_image(path)
    assert rgb.mode == "RGB" and rgb.getextrema()[0] == (0, 255)


def test_cmyk_is_converted():
    assert open_image(Image.new("CMYK", (16, 16), (0, 255, 255, 0))).mode == "RGB"


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image")
    with pytest.raises(ImageInputError, match="not an image"):
        open_image(path)


def test_truncated_png_is_reported_damaged():
    data = _png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        open_image(data[: len(data) // 2])


def test_huge_image_is_refused_before_decoding():
    side = int(MAX_PIXELS ** 0.5) + 100
    data = _png_bytes(Image.new("L", (side, side)))
    with pytest.raises(ImageInputError, match="megapixels"):
        open_image(data)


def test_tiny_image_and_nan_array_are_refused():
    with pytest.raises(ImageInputError, match="at least"):
        open_image(Image.new("RGB", (1, 1)))
    with pytest.raises(ImageInputError, match="NaN"):
        open_image(np.full((16, 16, 3), np.nan))
