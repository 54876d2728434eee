"""The camera part of an observation: crop each camera TransFuser-style and stitch them into one strip.

Each crop is resized straight to its share of the output width (shares proportional to the crops' aspect
ratios), so a camera is resampled once and the cameras keep their relative proportions.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def strip_layout(image_shapes: Sequence[tuple[int, int]], config: ObservationConfig) -> list[tuple[tuple, tuple]]:
    """Where each of `config.cameras` (images of `(height, width)`, in strip order) lands in the strip: its crop box
    `(left, top, right, bottom)` [px of the camera image] and its strip columns `(u0, u1)`. The one geometry that
    the stitcher and the camera projection (`reward_models.projection`) share."""
    boxes = [crop_box(height, width, 0.0 if name == "cam_f0" else config.side_crop, config.top_bottom_crop)
             for name, (height, width) in zip(config.cameras, image_shapes)]
    widths = _share_widths([(b[2] - b[0]) / (b[3] - b[1]) for b in boxes], config.image_width)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    return [(box, (int(start), int(start + width))) for box, start, width in zip(boxes, starts, widths)]


def stitch_cameras(images: dict[str, np.ndarray], config: ObservationConfig) -> np.ndarray:
    """uint8 `(H, W, 3)` strip of `config.cameras` in order (default left | front | right).

    :param images: camera name (navsim field name) -> uint8 `(h, w, 3)` image; float images in [0, 255] are
        accepted too (navsim annotates `Camera.image` as float32).
    """
    pictures = []
    for name in config.cameras:
        image = np.asarray(images[name])
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"camera {name}: expected an (H, W, 3) image, got shape {image.shape}")
        if image.dtype != np.uint8:
            image = np.clip(np.round(image), 0, 255).astype(np.uint8)
        pictures.append(image)
    strip = np.empty((config.image_height, config.image_width, 3), dtype=np.uint8)
    for image, (crop, (left, right)) in zip(pictures, strip_layout([p.shape[:2] for p in pictures], config)):
        resized = Image.fromarray(image).resize((right - left, config.image_height), Image.BILINEAR, box=crop)
        strip[:, left:right] = np.asarray(resized)
    return strip
