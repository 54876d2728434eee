"""The camera part of an observation: crop each camera TransFuser-style and stitch them into one strip.

Each crop is resized straight to its share of the output width (shares proportional to the crops' aspect
ratios), so a camera is resampled once and the cameras keep their relative proportions.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from irlvla_env.observations.config import ObservationConfig


class MissingSensorError(ValueError):
    """A sensor the observation config needs was not loaded; the message names it and its history index."""


def crop_box(height: int, width: int, side_crop: float, top_bottom_crop: float) -> tuple[int, int, int, int]:
    """`(left, top, right, bottom)` pixel box that cuts `side_crop` of the width from each side and
    `top_bottom_crop` of the height from the top and from the bottom."""
    dy, dx = int(round(height * top_bottom_crop)), int(round(width * side_crop))
    return dx, dy, width - dx, height - dy


def _share_widths(aspects: list[float], total: int) -> list[int]:
    """Integer widths summing to `total`, proportional to `aspects` (largest remainders get the spare pixels)."""
    exact = np.asarray(aspects) / np.sum(aspects) * total
    widths = np.maximum(np.floor(exact).astype(int), 1)
    for i in np.argsort(-(exact - np.floor(exact)))[: total - widths.sum()]:
        widths[i] += 1
    return widths.tolist()


def stitch_cameras(images: dict[str, np.ndarray], config: ObservationConfig) -> np.ndarray:
    """uint8 `(H, W, 3)` strip of `config.cameras` in order (default left | front | right).

    :param images: camera name (navsim field name) -> uint8 `(h, w, 3)` image; float images in [0, 255] are
        accepted too (navsim annotates `Camera.image` as float32).
    """
    pictures, boxes = [], []
    for name in config.cameras:
        image = np.asarray(images[name])
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"camera {name}: expected an (H, W, 3) image, got shape {image.shape}")
        if image.dtype != np.uint8:
            image = np.clip(np.round(image), 0, 255).astype(np.uint8)
        side = 0.0 if name == "cam_f0" else config.side_crop
        pictures.append(Image.fromarray(image))
        boxes.append(crop_box(image.shape[0], image.shape[1], side, config.top_bottom_crop))
    widths = _share_widths([(b[2] - b[0]) / (b[3] - b[1]) for b in boxes], config.image_width)
    strip = np.empty((config.image_height, config.image_width, 3), dtype=np.uint8)
    left = 0
    for picture, crop, width in zip(pictures, boxes, widths):
        resized = picture.resize((width, config.image_height), Image.BILINEAR, box=crop)
        strip[:, left : left + width] = np.asarray(resized)
        left += width
    return strip
