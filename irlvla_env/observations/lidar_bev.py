"""The LiDAR part of an observation: a TransFuser-style 2-channel bird's-eye-view histogram (spec §2.4).

Layout of `bev[c, row, col]` (shared with the BEV semantic targets): the image looks down on the ego with the
driving direction up. Row 0 is the far front (x = +range), rows go backwards; column 0 is the far left
(y = +range), columns go right. Channel 0 counts points at or below `lidar_split_height`, channel 1 above.
Past sweeps (`lidar_history`) are moved into the current ego frame first and keep only the above-ground channel.
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


def checked_cloud(points: np.ndarray) -> np.ndarray:
    """`points` as an array, or a ValueError naming the shape when it is not `(>=3, N)` (rows x, y, z, ...)."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[0] < 3:
        raise ValueError(f"lidar point cloud must be (>=3, N) with rows x, y, z; got shape {points.shape}")
    return points


def lidar_bev(points: np.ndarray, config: ObservationConfig) -> np.ndarray:
    """float32 `(2, B, B)` histogram of a point cloud `(>=3, N)` (rows x, y, z, ...; ego frame).

    Counts per cell are clipped at `lidar_max_per_cell` and divided by it, so every value lies in [0, 1].
    """
    points = checked_cloud(points)
    size = config.lidar_bev_size
    x, y, z = (points[i].astype(np.float64) for i in range(3))
    row, col = ego_to_bev_pixel(np.stack([x, y], axis=-1), config.lidar_bev_range, config.lidar_bev_resolution)
    valid = (row >= 0) & (row < size) & (col >= 0) & (col < size) & (z < config.lidar_max_height) & np.isfinite(z)
    channel = (z > config.lidar_split_height).astype(np.int64)
    flat = (channel * size + row) * size + col
    counts = np.bincount(flat[valid], minlength=2 * size * size).reshape(2, size, size)
    bev = np.minimum(counts, config.lidar_max_per_cell) / config.lidar_max_per_cell
    return bev.astype(np.float32)


def to_current_frame(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Points `(>=3, N)` of a past sweep, given in that frame's ego frame, in the current ego frame; `pose` is the
    past ego pose `(x, y, heading)` in the current frame (AgentInput ego poses are local)."""
    x, y, heading = (float(v) for v in pose[:3])
    cos, sin = np.cos(heading), np.sin(heading)
    moved = np.array(points[:3], dtype=np.float64)
    moved[0], moved[1] = cos * points[0] - sin * points[1] + x, sin * points[0] + cos * points[1] + y
    return moved


def lidar_history_bev(sweeps: list[np.ndarray], poses: list[np.ndarray], config: ObservationConfig) -> np.ndarray:
    """float32 `(len(sweeps), B, B)`: the above-ground histogram of each past sweep in the current ego frame."""
    if len(sweeps) != len(poses):
        raise ValueError(f"lidar_history_bev got {len(sweeps)} sweeps but {len(poses)} poses")
    size = config.lidar_bev_size
    out = np.zeros((len(sweeps), size, size), dtype=np.float32)
    for i, (points, pose) in enumerate(zip(sweeps, poses)):
        out[i] = lidar_bev(to_current_frame(checked_cloud(points), pose), config)[1]
    return out
