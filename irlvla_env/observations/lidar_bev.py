"""The LiDAR part of an observation: a TransFuser-style 2-channel bird's-eye-view histogram (spec §2.4).

Layout of `bev[c, row, col]` (shared with the BEV semantic targets): the image looks down on the ego with the
driving direction up. Row 0 is the far front (x = +range), rows go backwards; column 0 is the far left
(y = +range), columns go right. Channel 0 counts points at or below `lidar_split_height`, channel 1 above.
"""

from __future__ import annotations

import numpy as np

from irlvla_env.observations.config import ObservationConfig


def ego_to_bev_pixel(xy: np.ndarray, bev_range: float, resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer `(row, col)` of ego-frame points `(..., 2)` in a BEV whose centre is the rear axle."""
    xy = np.asarray(xy, dtype=np.float64)
    row = np.floor((bev_range - xy[..., 0]) / resolution).astype(np.int64)
    col = np.floor((bev_range - xy[..., 1]) / resolution).astype(np.int64)
    return row, col


def lidar_bev(points: np.ndarray, config: ObservationConfig) -> np.ndarray:
    """float32 `(2, B, B)` histogram of a point cloud `(>=3, N)` (rows x, y, z, ...; ego frame).

    Counts per cell are clipped at `lidar_max_per_cell` and divided by it, so every value lies in [0, 1].
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[0] < 3:
        raise ValueError(f"lidar point cloud must be (>=3, N) with rows x, y, z; got shape {points.shape}")
    size = config.lidar_bev_size
    x, y, z = (points[i].astype(np.float64) for i in range(3))
    row, col = ego_to_bev_pixel(np.stack([x, y], axis=-1), config.lidar_bev_range, config.lidar_bev_resolution)
    valid = (row >= 0) & (row < size) & (col >= 0) & (col < size) & (z < config.lidar_max_height) & np.isfinite(z)
    channel = (z > config.lidar_split_height).astype(np.int64)
    flat = (channel * size + row) * size + col
    counts = np.bincount(flat[valid], minlength=2 * size * size).reshape(2, size, size)
    bev = np.minimum(counts, config.lidar_max_per_cell) / config.lidar_max_per_cell
    return bev.astype(np.float32)
