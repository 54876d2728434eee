"""SE(2) helpers shared by the data model, the simulator and the scorer.

Poses are `(x, y, heading)` arrays with any leading batch shape. Everything is vectorised numpy,
because the scorer converts hundreds of candidate trajectories per scene.
"""

from __future__ import annotations

import numpy as np


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Wrap angles to (-pi, pi]."""
    a = np.asarray(angle, dtype=np.float64)
    wrapped = np.mod(a + np.pi, 2.0 * np.pi) - np.pi
    return np.where(wrapped == -np.pi, np.pi, wrapped)


def global_to_local(poses: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Express global poses `(..., 3)` in the frame of `origin` `(3,)`: subtract, rotate by -heading, wrap."""
    poses = np.asarray(poses, dtype=np.float64)
    origin = np.asarray(origin, dtype=np.float64)
    dx = poses[..., 0] - origin[0]
    dy = poses[..., 1] - origin[1]
    c, s = np.cos(origin[2]), np.sin(origin[2])
    out = np.empty(poses.shape, dtype=np.float64)
    out[..., 0] = c * dx + s * dy
    out[..., 1] = -s * dx + c * dy
    out[..., 2] = wrap_angle(poses[..., 2] - origin[2])
    return out


def local_to_global(poses: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Inverse of :func:`global_to_local`; `origin` may be `(3,)` or broadcast against `poses[..., :]`."""
    poses = np.asarray(poses, dtype=np.float64)
    origin = np.asarray(origin, dtype=np.float64)
    ox, oy, oh = origin[..., 0], origin[..., 1], origin[..., 2]
    c, s = np.cos(oh), np.sin(oh)
    if origin.ndim > 1:  # broadcast one origin per leading index
        c, s, ox, oy, oh = (v[..., None] for v in (c, s, ox, oy, oh))
    out = np.empty(poses.shape, dtype=np.float64)
    out[..., 0] = ox + c * poses[..., 0] - s * poses[..., 1]
    out[..., 1] = oy + s * poses[..., 0] + c * poses[..., 1]
    out[..., 2] = wrap_angle(poses[..., 2] + oh)
    return out


def rotate_vectors(vectors: np.ndarray, angle: float) -> np.ndarray:
    """Rotate 2-D vectors `(..., 2)` by `angle` (CCW)."""
    c, s = np.cos(angle), np.sin(angle)
    v = np.asarray(vectors, dtype=np.float64)
    return np.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)


def yaw_from_quaternion(q: np.ndarray) -> float:
    """Yaw of a `[w, x, y, z]` quaternion (pyquaternion's `yaw_pitch_roll[0]`)."""
    w, x, y, z = (float(v) for v in q)
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def quaternion_from_yaw(yaw: float) -> np.ndarray:
    """`[w, x, y, z]` quaternion of a pure rotation about z."""
    return np.array([np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0)], dtype=np.float64)
