"""Polyline helpers for building roads: resampling, offsetting, arcs and smooth connector curves.

Everything works on `(N, 2)` float arrays in metres. Roads are resampled at ~1 m so that arclength lookups by
index are cheap for the traffic simulation, which runs thousands of such lookups per log.
"""

from __future__ import annotations

import numpy as np


def arclength(points: np.ndarray) -> np.ndarray:
    """Cumulative distance `(N,)` along a polyline, starting at 0."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(seg)])


def resample(points: np.ndarray, step: float = 1.0) -> np.ndarray:
    """The polyline re-sampled at (almost) equal spacing `step`, keeping both end points."""
    s = arclength(points)
    n = max(int(np.ceil(s[-1] / step)), 1)
    t = np.linspace(0.0, s[-1], n + 1)
    return np.column_stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])])


def headings(points: np.ndarray) -> np.ndarray:
    """Tangent heading `(N,)` at every vertex (central differences, one-sided at the ends)."""
    d = np.gradient(points, axis=0)
    return np.arctan2(d[:, 1], d[:, 0])


def left_normals(points: np.ndarray) -> np.ndarray:
    """Unit normals `(N, 2)` pointing to the left of the direction of travel."""
    h = headings(points)
    return np.column_stack([-np.sin(h), np.cos(h)])


def offset(points: np.ndarray, distance: float) -> np.ndarray:
    """The polyline shifted sideways by `distance` (positive = left of travel)."""
    return points + distance * left_normals(points)


def curvature(points: np.ndarray) -> np.ndarray:
    """Signed curvature `(N,)` [1/m] (positive = turning left), from unwrapped headings."""
    h = np.unwrap(headings(points))
    s = arclength(points)
    if len(s) < 3:
        return np.zeros(len(points))
    return np.gradient(h, s)


def straight(start: np.ndarray, heading: float, length: float, step: float = 1.0) -> np.ndarray:
    """A straight segment from `start` along `heading`."""
    n = max(int(np.ceil(length / step)), 1)
    t = np.linspace(0.0, length, n + 1)
    return np.asarray(start, dtype=float) + t[:, None] * np.array([np.cos(heading), np.sin(heading)])


def arc(start: np.ndarray, heading: float, radius: float, angle: float, step: float = 1.0) -> np.ndarray:
    """A circular arc from `start` with initial `heading`, turning by `angle` (positive = left)."""
    length = abs(angle) * radius
    n = max(int(np.ceil(length / step)), 2)
    sign = np.sign(angle) if angle != 0 else 1.0
    centre = np.asarray(start, dtype=float) + sign * radius * np.array([-np.sin(heading), np.cos(heading)])
    phi0 = heading - sign * np.pi / 2.0
    phi = phi0 + np.linspace(0.0, angle, n + 1)
    return centre + radius * np.column_stack([np.cos(phi), np.sin(phi)])


def join(*pieces: np.ndarray) -> np.ndarray:
    """Concatenate polylines that share their joint points (the duplicate joint is dropped)."""
    out = [pieces[0]]
    for piece in pieces[1:]:
        out.append(piece[1:] if np.allclose(piece[0], out[-1][-1]) else piece)
    return np.concatenate(out)


def bezier_connector(p0: np.ndarray, h0: float, p1: np.ndarray, h1: float, step: float = 0.5) -> np.ndarray:
    """A cubic Bezier from `p0` leaving along `h0` to `p1` arriving along `h1`.

    Control arms of 0.39 x chord approximate a circular quarter arc for 90-degree turns and stay straight
    for straight crossings, which gives lane connectors a constant, drivable curvature.
    """
    p0, p1 = np.asarray(p0, dtype=float), np.asarray(p1, dtype=float)
    chord = float(np.linalg.norm(p1 - p0))
    arm = 0.39 * chord
    c0 = p0 + arm * np.array([np.cos(h0), np.sin(h0)])
    c1 = p1 - arm * np.array([np.cos(h1), np.sin(h1)])
    t = np.linspace(0.0, 1.0, 200)[:, None]
    curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * c0 + 3 * (1 - t) * t**2 * c1 + t**3 * p1
    return resample(curve, step)


def project(points: np.ndarray, path: np.ndarray, s_path: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Arclength `(M,)` and signed lateral offset `(M,)` (left positive) of `points` on a polyline.

    Exact segment projection, vectorised over points and segments; fine for the few hundred vertices of one
    vehicle's look-ahead window.
    """
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    s_path = arclength(path) if s_path is None else s_path
    a, b = path[:-1], path[1:]
    ab = b - a
    seg_len2 = np.maximum((ab**2).sum(axis=1), 1e-12)
    ap = points[:, None, :] - a[None, :, :]
    t = np.clip((ap * ab[None]).sum(axis=2) / seg_len2[None], 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    dist2 = ((points[:, None, :] - closest) ** 2).sum(axis=2)
    best = np.argmin(dist2, axis=1)
    rows = np.arange(len(points))
    s = s_path[best] + t[rows, best] * np.sqrt(seg_len2[best])
    cross = ab[best, 0] * ap[rows, best, 1] - ab[best, 1] * ap[rows, best, 0]
    lateral = np.sign(cross) * np.sqrt(dist2[rows, best])
    return s, lateral


def interpolate(path: np.ndarray, s_path: np.ndarray, s: np.ndarray | float) -> np.ndarray:
    """Points `(..., 2)` at arclengths `s` along the polyline (clamped to its ends)."""
    s = np.asarray(s, dtype=float)
    return np.stack([np.interp(s, s_path, path[:, 0]), np.interp(s, s_path, path[:, 1])], axis=-1)
