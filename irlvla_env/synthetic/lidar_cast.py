"""Ray casting of one spinning-LiDAR sweep against the flat ground and oriented 3-D boxes.

The rays are fixed in the ego frame, so where each one meets the ground (z = 0) is computed once. Per sweep,
each box is tested only against the rays of its azimuth and elevation window (a few hundred of the ~29 k), and
the nearest hit per ray wins. Frames follow `sensors.py`: the point cloud is in the ego (= lidar) frame.
"""

from __future__ import annotations

import numpy as np

from irlvla_env.navsim.geometry import wrap_angle
from irlvla_env.synthetic.sensors import LidarSpec

# Reflectivity [0-255] of box classes (navsim `gt_names`); retro-reflective cones and signs return strongly.
CLASS_INTENSITY = {"vehicle": 45.0, "pedestrian": 25.0, "bicycle": 35.0, "traffic_cone": 120.0, "barrier": 60.0,
                   "czone_sign": 150.0, "generic_object": 30.0}  # fmt: skip
UNKNOWN_CLASS_INTENSITY = 30.0
INTENSITY_NOISE_STD = 2.0


def ray_box_distance(origin: np.ndarray, directions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Distance along unit `directions` `(..., 3)` from `origin` to box `[x, y, z, l, w, h, heading]`.

    Slab test in the box frame; inf where the ray misses (or the box is behind the origin).
    """
    c, s = np.cos(box[6]), np.sin(box[6])
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # box -> ego; row vectors @ rot = ego -> box
    o = (origin - box[:3]) @ rot
    d = directions @ rot
    half = box[3:6] / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1, t2 = (-half - o) * inv, (half - o) * inv
    t_near = np.minimum(t1, t2).max(axis=-1)
    t_far = np.maximum(t1, t2).min(axis=-1)
    t = np.where(t_near > 0, t_near, t_far)
    return np.where((t_near <= t_far) & (t > 0), t, np.inf)


class LidarCaster:
    """Precomputed rays of one `LidarSpec` and the sweep cast from them.

    :param spec: the LiDAR; its `mount` is the ray origin in the ego frame.
    """

    def __init__(self, spec: LidarSpec) -> None:
        self.spec = spec
        self.origin = np.asarray(spec.mount, dtype=np.float64)
        self.rays = spec.ray_directions()  # (B, A, 3)
        self.elevations = spec.elevations()
        dz = self.rays[..., 2]
        ground_range = np.where(dz < -1e-9, -self.origin[2] / np.minimum(dz, -1e-9), np.inf)
        self.ground_mask = ground_range <= spec.max_range  # (B, A) rays that meet the ground within range
        self.ground_range = np.where(self.ground_mask, ground_range, np.inf)
        mask = self.ground_mask
        self.ground_hits = self.origin[:2] + ground_range[mask][:, None] * self.rays[mask][:, :2]  # (n, 2)

    def cast(
        self, boxes: np.ndarray, names: list[str], ground_intensity: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """float32 `(6, N)` sweep: rows `x, y, z, intensity, ring, lidar_id`.

        :param boxes: `(N, 7)` ego-frame boxes.
        :param names: class names of the boxes (reflectivity).
        :param ground_intensity: `(len(ground_hits),)` reflectivity of the ground at `ground_hits`.
        :param rng: draws range noise, intensity noise and dropout.
        """
        spec, rays = self.spec, self.rays
        num_beams, num_az = rays.shape[:2]
        ranges = self.ground_range.copy()
        intensity = np.zeros(ranges.shape, dtype=np.float32)
        intensity[self.ground_mask] = ground_intensity
        for box, name in zip(boxes, names):
            window = self._box_window(box)
            if window is None:
                continue
            rows, cols = window
            t_hit = ray_box_distance(self.origin, rays[rows][:, cols], box)
            sub_r = ranges[rows, cols]
            closer = t_hit < sub_r
            if closer.any():
                sub_i = intensity[rows, cols]
                sub_r[closer] = t_hit[closer]
                sub_i[closer] = CLASS_INTENSITY.get(name, UNKNOWN_CLASS_INTENSITY)
                ranges[rows, cols], intensity[rows, cols] = sub_r, sub_i

        keep = np.isfinite(ranges) & (ranges <= spec.max_range) & (rng.random(ranges.shape) >= spec.dropout)
        r = ranges[keep] + rng.normal(0.0, spec.range_noise_std, size=int(keep.sum()))
        points = np.empty((6, len(r)), dtype=np.float32)
        points[:3] = (self.origin + r[:, None] * rays[keep]).T
        points[3] = np.clip(intensity[keep] + rng.normal(0.0, INTENSITY_NOISE_STD, size=len(r)), 0.0, 255.0)
        points[4] = np.broadcast_to(np.arange(num_beams)[:, None], (num_beams, num_az))[keep]
        points[5] = 0.0
        return points

    def _box_window(self, box: np.ndarray) -> tuple[slice, np.ndarray] | None:
        """Beam rows (a slice) and azimuth columns whose rays can reach the box; None when out of range."""
        num_az = self.rays.shape[1]
        origin = self.origin
        half_diagonal = 0.5 * np.hypot(box[3], box[4])
        offset = box[:2] - origin[:2]
        distance = float(np.linalg.norm(offset))
        if distance - half_diagonal > self.spec.max_range:
            return None
        c, s = np.cos(box[6]), np.sin(box[6])
        if abs(c * offset[0] + s * offset[1]) <= box[3] / 2 and abs(-s * offset[0] + c * offset[1]) <= box[4] / 2:
            return slice(None), np.arange(num_az)  # the sensor is above the footprint
        near, far = max(distance - half_diagonal, 0.05), distance + half_diagonal
        low, high = box[2] - box[5] / 2 - origin[2], box[2] + box[5] / 2 - origin[2]
        elevation_low = np.arctan2(low, near if low < 0 else far)
        elevation_high = np.arctan2(high, near if high > 0 else far)
        rows = slice(max(int(np.searchsorted(self.elevations, elevation_low)) - 1, 0),
                     int(np.searchsorted(self.elevations, elevation_high)) + 1)  # fmt: skip
        half = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]) * box[3:5] / 2
        corners = box[:2] + half @ np.array([[c, s], [-s, c]]) - origin[:2]  # the 4 footprint corners
        center = np.arctan2(offset[1], offset[0])
        rel = wrap_angle(np.arctan2(corners[:, 1], corners[:, 0]) - center)
        step = 2.0 * np.pi / num_az
        first = int(np.floor((center + rel.min() + np.pi) / step))
        last = int(np.ceil((center + rel.max() + np.pi) / step))
        return rows, np.arange(first, last + 1) % num_az
