"""The moving things of the synthetic world: lane-following drivers and walkers, and what they carry.

A `PathTrack` is the concatenated centerlines of a lane route at ~1 m spacing, with the lane id of every
vertex, so "which lane am I in" and "how far to that stop line" are array lookups.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import LineString

from irlvla_env.synthetic import geometry2d as g2
from irlvla_env.synthetic.road_network import RoadNetwork
from irlvla_env.synthetic.tile import PedestrianPlan


class PathTrack:
    """A drivable path: polyline at ~1 m, arclength, lane id per vertex, headings and curvature."""

    def __init__(self, net: RoadNetwork, lane_route: list[int], points: np.ndarray | None = None,
                 lane_ids: np.ndarray | None = None) -> None:  # fmt: skip
        self.lane_route = list(lane_route)
        if points is None:
            pieces, ids = [], []
            for lane_id in lane_route:
                pts = net.lanes[lane_id].centerline
                pts = pts[1:] if pieces else pts
                pieces.append(pts)
                ids.append(np.full(len(pts), lane_id))
            points, lane_ids = np.concatenate(pieces), np.concatenate(ids)
        self.points = points
        self.lane_ids = lane_ids
        self.s = g2.arclength(points)
        self.heading = np.unwrap(g2.headings(points))
        self.kappa = np.clip(np.nan_to_num(g2.curvature(points)), -0.5, 0.5)
        # Where each lane begins and ends along the path.
        self.lane_span: dict[int, tuple[float, float]] = {}
        for lane_id in dict.fromkeys(lane_ids.tolist()):
            idx = np.flatnonzero(lane_ids == lane_id)
            self.lane_span[int(lane_id)] = (float(self.s[idx[0]]), float(self.s[idx[-1]]))

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def pose(self, s: float) -> np.ndarray:
        x, y = g2.interpolate(self.points, self.s, s)
        return np.array([x, y, np.interp(s, self.s, self.heading)])

    def lane_at(self, s: float) -> int:
        return int(self.lane_ids[min(np.searchsorted(self.s, s), len(self.s) - 1)])

    def crossings(self, polygons: dict[int, object]) -> list[tuple[int, float, float]]:
        """`(polygon id, s_in, s_out)` for every polygon the path runs through."""
        line = LineString(self.points)
        out = []
        for pid, poly in polygons.items():
            if not line.intersects(poly):
                continue
            part = line.intersection(poly)
            coords = np.concatenate([np.asarray(g.coords) for g in getattr(part, "geoms", [part]) if not g.is_empty])
            s_vals, _ = g2.project(coords, self.points, self.s)
            out.append((pid, float(s_vals.min()), float(s_vals.max())))
        return out


@dataclass
class DriverParams:
    """IDM parameters of one driver."""

    speed_factor: float = 1.0  # desired speed / speed limit
    headway: float = 1.5  # [s]
    min_gap: float = 2.0  # [m]
    a_max: float = 1.5  # [m/s^2]
    b_comf: float = 2.0  # [m/s^2]
    a_lat: float = 2.0  # [m/s^2] lateral acceleration a driver accepts in curves
    max_decel: float = 6.0  # [m/s^2]


@dataclass
class BrakePlan:
    """A scripted stop-and-go of a lead car: brake at `decel` from `t_start` to `v_low`, hold, drive on."""

    t_start: float
    decel: float  # [m/s^2]
    v_low: float  # [m/s]
    hold: float  # [s]
    reached_at: float | None = None

    def limit(self, t: float, v: float, a: float) -> float:
        if t < self.t_start:
            return a
        if self.reached_at is None:
            if v > self.v_low + 0.05:
                return min(a, -self.decel)
            self.reached_at = t
        return min(a, 0.0) if t < self.reached_at + self.hold else a


@dataclass
class Agent:
    """A moving vehicle; the box centre (or, for the ego, the rear axle) runs along `path` at arclength `s`."""

    track_token: str
    path: PathTrack
    s: float
    v: float
    size: tuple[float, float, float]  # length, width, height [m]
    params: DriverParams
    front: float  # distance from the reference point to the front bumper [m]
    name: str = "vehicle"
    a: float = 0.0
    a_cmd: float = 0.0  # last decided acceleration (traffic decides at a lower rate than it moves)
    alive: bool = True
    is_ego: bool = False
    brake_plan: "BrakePlan | None" = None
    crossings: list[tuple[int, float, float]] = field(default_factory=list)

    def pose(self) -> np.ndarray:
        return self.path.pose(self.s)


@dataclass
class Walker:
    """A pedestrian following its plan's polyline."""

    track_token: str
    plan: PedestrianPlan
    s: float = 0.0
    v: float = 0.0
    alive: bool = True
    crossing: bool = False

    def __post_init__(self) -> None:
        self.s_path = g2.arclength(self.plan.path)

    def pose(self) -> np.ndarray:
        x, y = g2.interpolate(self.plan.path, self.s_path, self.s)
        i = min(int(np.searchsorted(self.s_path, self.s)), len(self.s_path) - 1)
        h = float(g2.headings(self.plan.path)[i])
        return np.array([x, y, h])


def token(*parts: object, n: int = 16) -> str:
    """A deterministic hex token from its parts (so a seed reproduces every id)."""
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:n]
