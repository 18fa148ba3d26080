"""Draw the project's icons and logos with Pillow: one design, every size the stores ask for.

Run ``.venv/bin/python scripts/brand_images.py`` after changing the design; it rewrites

- ``custom_components/thermo_bridge/brand/``: ``icon.png`` (256 px), ``icon@2x.png`` (512 px)
  and ``logo.png`` (Home Assistant 2026.3+ shows these for a custom integration);
- ``icon.png`` (128 px) and ``logo.png`` (250 x 100 px) next to the add-on's ``config.yaml``
  (the add-on store's tile and page header).

Shapes are drawn four times larger and scaled down, which anti-aliases the edges. The logo's
lettering uses Pillow's bundled font, so the output does not depend on the machine's fonts.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
BRAND = ROOT / "custom_components" / "thermo_bridge" / "brand"

BLUE = (3, 169, 244, 255)
WHITE = (255, 255, 255, 255)
ORANGE = (255, 87, 34, 255)
TEXT = (2, 136, 209, 255)  # a blue that reads on light and dark themes alike
SUPERSAMPLE = 4


def icon(size: int) -> Image.Image:
    """The app icon: a thermometer dial on a rounded blue square, ``size`` px square."""
    big = size * SUPERSAMPLE
    unit = big / 256  # the design is laid out on a 256-unit grid
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((8 * unit, 8 * unit, 248 * unit, 248 * unit), radius=40 * unit, fill=BLUE)
    ring_outer, ring_width = 72 * unit, 14 * unit
    centre = 128 * unit
    draw.ellipse(
        (centre - ring_outer, centre - ring_outer, centre + ring_outer, centre + ring_outer),
        outline=WHITE,
        width=round(ring_width),
    )
    draw.rounded_rectangle((centre - 8 * unit, 84 * unit, centre + 8 * unit, 132 * unit), radius=8 * unit, fill=WHITE)
    bulb = 25 * unit
    draw.ellipse((centre - bulb, 148 * unit - bulb, centre + bulb, 148 * unit + bulb), fill=ORANGE)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def logo(width: int, height: int) -> Image.Image:
    """The icon followed by the name, on a transparent background."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    mark = icon(height)
    image.alpha_composite(mark, (0, 0))
    draw = ImageDraw.Draw(image)
    gap = height // 8
    available = width - height - gap
    font_size = height // 2
    font = ImageFont.load_default(size=font_size)
    while font_size > 8 and draw.textlength("Thermo Bridge", font=font) > available:
        font_size -= 1
        font = ImageFont.load_default(size=font_size)
    draw.text((height + gap, height / 2), "Thermo Bridge", font=font, fill=TEXT, anchor="lm")
    return image


def main() -> None:
    """Write every image."""
    BRAND.mkdir(parents=True, exist_ok=True)
    icon(256).save(BRAND / "icon.png", optimize=True)
    icon(512).save(BRAND / "icon@2x.png", optimize=True)
    logo(640, 160).save(BRAND / "logo.png", optimize=True)
    icon(128).save(ROOT / "icon.png", optimize=True)
    logo(250, 100).save(ROOT / "logo.png", optimize=True)


if __name__ == "__main__":
    main()
