"""Draw the WBC tab's example images: stylised stained blood cells rendered from geometry, no patient data.

Run: python scripts/make_wbc_examples.py  (writes spaces/examples/wbc/*.png, deterministic)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 128
OUT = Path(__file__).resolve().parent.parent / "spaces" / "examples" / "wbc"

BACKGROUND = (236, 214, 200)
RED_CELL = (222, 160, 150)
NUCLEUS = (88, 40, 120)


def _canvas(rng: np.random.Generator) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for _ in range(9):  # red cells around the white cell, with pale centres
        x, y, r = *rng.uniform(0, SIZE, 2), rng.uniform(14, 18)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=RED_CELL)
        draw.ellipse((x - r / 2.5, y - r / 2.5, x + r / 2.5, y + r / 2.5), fill=(230, 190, 180))
    return image


def _granules(draw: ImageDraw.ImageDraw, rng, centre, radius, colour, count, size):
    for _ in range(count):
        angle, dist = rng.uniform(0, 2 * np.pi), radius * np.sqrt(rng.uniform(0, 1))
        x, y = centre[0] + dist * np.cos(angle), centre[1] + dist * np.sin(angle)
        draw.ellipse((x - size, y - size, x + size, y + size), fill=colour)


def _cell(kind: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = _canvas(rng)
    draw = ImageDraw.Draw(image)
    c = SIZE / 2
    if kind == "platelet":
        for _ in range(3):
            x, y = c + rng.uniform(-12, 12), c + rng.uniform(-12, 12)
            draw.ellipse((x - 5, y - 4, x + 5, y + 4), fill=(150, 100, 170))
            _granules(draw, rng, (x, y), 3, (110, 60, 140), 5, 1)
        return image.filter(ImageFilter.GaussianBlur(0.8))
    cytoplasm = {"lymphocyte": (170, 170, 215), "monocyte": (185, 175, 205), "basophil": (200, 170, 210),
                 "eosinophil": (235, 175, 160), "neutrophil": (225, 195, 205)}[kind]
    radius = {"lymphocyte": 22, "monocyte": 34, "basophil": 28, "eosinophil": 30, "neutrophil": 30}[kind]
    draw.ellipse((c - radius, c - radius, c + radius, c + radius), fill=cytoplasm)
    if kind == "lymphocyte":
        draw.ellipse((c - 18, c - 17, c + 17, c + 18), fill=NUCLEUS)
    elif kind == "monocyte":
        draw.ellipse((c - 24, c - 18, c + 20, c + 18), fill=(120, 80, 150))
        draw.ellipse((c + 2, c - 6, c + 26, c + 12), fill=cytoplasm)  # kidney notch
        _granules(draw, rng, (c, c), 28, (225, 215, 235), 6, 3)  # vacuoles
    elif kind == "neutrophil":
        for angle in np.linspace(0, 2 * np.pi, 4, endpoint=False) + rng.uniform(0, 1):
            x, y = c + 13 * np.cos(angle), c + 13 * np.sin(angle)
            draw.ellipse((x - 9, y - 8, x + 9, y + 8), fill=NUCLEUS)
            draw.line((c, c, x, y), fill=NUCLEUS, width=4)
        _granules(draw, rng, (c, c), 28, (205, 170, 190), 60, 1)
    elif kind == "eosinophil":
        for dx in (-12, 12):
            draw.ellipse((c + dx - 10, c - 11, c + dx + 10, c + 11), fill=NUCLEUS)
        _granules(draw, rng, (c, c), 28, (215, 110, 70), 140, 2)
    elif kind == "basophil":
        draw.ellipse((c - 15, c - 14, c + 15, c + 14), fill=(100, 50, 130))
        _granules(draw, rng, (c, c), 26, (60, 20, 90), 120, 2)
    return image.filter(ImageFilter.GaussianBlur(0.8))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, kind in enumerate(["neutrophil", "lymphocyte", "eosinophil", "monocyte", "basophil", "platelet"]):
        _cell(kind, seed).save(OUT / f"drawn_{kind}.png", optimize=True)
        print(OUT / f"drawn_{kind}.png")


if __name__ == "__main__":
    main()
