"""Draw the tabs' example images from geometry: stylised blood cells and dermatoscopic lesions, no patient data.

Run: python scripts/make_examples.py  (writes spaces/examples/{wbc,skin}/*.png, deterministic)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 128
EXAMPLES = Path(__file__).resolve().parent.parent / "spaces" / "examples"

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


def _blob(rng: np.random.Generator, centre, radius: float, wobble: float, points: int = 90) -> list[tuple]:
    """A closed irregular outline: a circle whose radius wanders by up to ``wobble``."""
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    noise = np.convolve(rng.normal(0, 1, points * 3), np.ones(9) / 9, mode="same")[points:2 * points]
    radii = radius * (1 + wobble * noise / (np.abs(noise).max() + 1e-9))
    return [(centre[0] + r * np.cos(a), centre[1] + r * np.sin(a)) for a, r in zip(angles, radii)]


def _lesion(kind: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(100 + seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    vignette = np.clip(1.25 - np.hypot(xx - SIZE / 2, yy - SIZE / 2) / (SIZE * 0.62), 0, 1)[..., None]
    skin = np.array([222, 170, 150]) + rng.normal(0, 4, (SIZE, SIZE, 3))
    image = Image.fromarray(np.clip(skin * vignette, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    c = (SIZE / 2 + rng.uniform(-6, 6), SIZE / 2 + rng.uniform(-6, 6))
    if kind == "nevus":
        outline = _blob(rng, c, 30, 0.08)
        lesion = Image.new("RGB", image.size, (150, 95, 70))
        network = ImageDraw.Draw(lesion)
        for offset in range(0, SIZE, 6):  # reticular pigment network
            network.line((0, offset, SIZE, offset + 3), fill=(110, 65, 45), width=1)
            network.line((offset, 0, offset + 3, SIZE), fill=(110, 65, 45), width=1)
        mask = Image.new("L", image.size, 0)
        ImageDraw.Draw(mask).polygon(outline, fill=255)
        image.paste(lesion, mask=mask)
    elif kind == "melanoma":
        draw.polygon(_blob(rng, c, 36, 0.35), fill=(95, 55, 45))
        draw.polygon(_blob(rng, (c[0] + 10, c[1] - 6), 16, 0.3), fill=(40, 25, 30))
        draw.polygon(_blob(rng, (c[0] - 12, c[1] + 10), 12, 0.3), fill=(120, 135, 165))  # blue-white veil
        _granules(draw, rng, c, 30, (30, 20, 25), 25, 1.5)
    elif kind == "vascular":
        for _ in range(9):  # red-purple lacunae
            x, y = c[0] + rng.uniform(-18, 18), c[1] + rng.uniform(-18, 18)
            draw.polygon(_blob(rng, (x, y), rng.uniform(6, 11), 0.15, 40), fill=(170, 40, 70))
    elif kind == "seborrheic":
        draw.polygon(_blob(rng, c, 34, 0.12), fill=(135, 100, 70))
        _granules(draw, rng, c, 28, (235, 225, 200), 14, 2)  # milia-like cysts
        for _ in range(10):  # comedo-like openings
            x, y = c[0] + rng.uniform(-22, 22), c[1] + rng.uniform(-22, 22)
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(70, 50, 35))
    return image.filter(ImageFilter.GaussianBlur(1.0))


def main() -> None:
    drawings = {
        "wbc": (_cell, ["neutrophil", "lymphocyte", "eosinophil", "monocyte", "basophil", "platelet"]),
        "skin": (_lesion, ["nevus", "melanoma", "vascular", "seborrheic"]),
    }
    for folder, (draw_one, kinds) in drawings.items():
        out = EXAMPLES / folder
        out.mkdir(parents=True, exist_ok=True)
        for seed, kind in enumerate(kinds):
            draw_one(kind, seed).save(out / f"drawn_{kind}.png", optimize=True)
            print(out / f"drawn_{kind}.png")


if __name__ == "__main__":
    main()
