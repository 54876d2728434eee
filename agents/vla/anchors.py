"""Trajectory anchors (k-means of demonstrations) and the normalisation of poses to [-1, 1].

DiffusionDrive starts its truncated diffusion from noisy copies of k-means anchors rather than from pure noise, so
two denoising steps suffice and the modes stay apart. The anchors and the normalisation ranges are buffers of the
planner, so they are saved in the checkpoint with the weights.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.cluster.vq import kmeans2


def kmeans_anchors(trajectories: np.ndarray, num_anchors: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """Cluster future trajectories `(N, T, 3)` [m, m, rad] into `(num_anchors, T, 3)` anchors.

    Clustering uses the `(x, y)` positions (as DiffusionDrive); each anchor is the mean of its members' full poses,
    so its headings are those of real trajectories rather than re-derived from positions.
    """
    data = np.asarray(trajectories, dtype=np.float64)
    if data.ndim != 3 or data.shape[2] != 3:
        raise ValueError(f"trajectories must have shape (N, T, 3), got {data.shape}")
    if len(data) < num_anchors:
        raise ValueError(f"need at least num_anchors={num_anchors} trajectories for k-means, got {len(data)}")
    if not np.all(np.isfinite(data)):
        raise ValueError("trajectories contain NaN or inf")
    points = data[:, :, :2].reshape(len(data), -1)
    centroids, labels = kmeans2(points, num_anchors, iter=iterations, minit="++", seed=np.random.default_rng(seed))
    anchors = np.empty((num_anchors,) + data.shape[1:], dtype=np.float64)
    for k in range(num_anchors):
        members = data[labels == k]
        if len(members):
            anchors[k] = members.mean(axis=0)
        else:  # an empty cluster keeps its centroid; heading follows the path
            xy = centroids[k].reshape(-1, 2)
            step = np.diff(np.vstack([np.zeros(2), xy]), axis=0)
            anchors[k] = np.column_stack([xy, np.arctan2(step[:, 1], step[:, 0])])
    order = np.argsort(anchors[:, -1, 1])  # right to left by final lateral offset: a stable, readable order
    return anchors[order].astype(np.float32)


def kinematic_prior_trajectories(num_poses: int = 8, interval: float = 0.5) -> np.ndarray:
    """Unicycle arcs over a grid of speeds (0-16 m/s) and yaw rates (±0.4 rad/s): `(N, num_poses, 3)`.

    They seed the anchors of a model that has not seen data yet, so an untrained planner still proposes a
    sensible fan of modes.
    """
    speeds = np.linspace(0.0, 16.0, 9)
    yaw_rates = np.linspace(-0.4, 0.4, 9)
    v, w = (g.reshape(-1, 1) for g in np.meshgrid(speeds, yaw_rates, indexing="ij"))
    t = interval * np.arange(1, num_poses + 1)[None, :]
    heading = w * t
    safe_w = np.where(np.abs(w) < 1e-6, 1.0, w)
    x = np.where(np.abs(w) < 1e-6, v * t, v / safe_w * np.sin(heading))
    y = np.where(np.abs(w) < 1e-6, 0.0, v / safe_w * (1.0 - np.cos(heading)))
    return np.stack([x, y, heading], axis=-1)


def fit_range(trajectories: np.ndarray, margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel `(low, high)` covering the trajectories plus `margin` of their span on both sides."""
    data = np.asarray(trajectories, dtype=np.float64).reshape(-1, 3)
    low, high = data.min(axis=0), data.max(axis=0)
    span = np.maximum(high - low, 1.0)
    return low - margin * span, high + margin * span


class TrajectoryNormalizer(torch.nn.Module):
    """Affine map of `(..., 3)` poses between metres/radians and [-1, 1]; its range is saved as buffers."""

    def __init__(self, low: tuple[float, float, float], high: tuple[float, float, float]):
        super().__init__()
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.tensor(high, dtype=torch.float32))

    def set_range(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low.copy_(torch.as_tensor(low, dtype=torch.float32))
        self.high.copy_(torch.as_tensor(high, dtype=torch.float32))

    def normalize(self, poses: torch.Tensor) -> torch.Tensor:
        return 2.0 * (poses - self.low) / (self.high - self.low) - 1.0

    def denormalize(self, values: torch.Tensor) -> torch.Tensor:
        return (values + 1.0) * 0.5 * (self.high - self.low) + self.low
