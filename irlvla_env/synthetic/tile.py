"""What one log needs from the world: a tile's road network plus its cast, and shared layout helpers.

Each log drives inside its own tile; the tiles of one map sit far apart, so logs never see each other.
Tiles are built in local coordinates and placed by a `TileFrame` (a rotation and a UTM offset).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import Polygon

from irlvla_env.synthetic import geometry2d as g2
from irlvla_env.synthetic.road_network import RoadNetwork
from irlvla_env.synthetic.signals import SignalPlan

WALKWAY_WIDTH = 3.0  # [m]
PARKING_WIDTH = 2.6  # [m]
CROSSWALK_WIDTH = 4.0  # [m]
STOP_LINE_SETBACK = 5.0  # [m] from the end of an incoming lane (the intersection edge) to its stop line


@dataclass
class PedestrianPlan:
    """A walker: a path (walkway → crosswalk → walkway), when to start, and which lights gate the crossing."""

    path: np.ndarray
    speed: float
    start_time: float
    crosswalk_id: int | None = None
    crossing_s: tuple[float, float] = (0.0, 0.0)  # arclength interval of the path on the road
    gate_connectors: tuple[int, ...] = ()  # may only step onto the road while all of these are red


@dataclass
class StaticObject:
    """Something that does not move for the whole log (parked car, broken-down car, cone, barrier)."""

    name: str
    pose: tuple[float, float, float]
    size: tuple[float, float, float]  # length, width, height [m]
    blocks_lane: int | None = None  # the lane it obstructs, for the expert's lane-change decision


@dataclass
class Tile:
    """Everything one log needs from the world."""

    family: str
    network: RoadNetwork
    ego_route: list[int]
    ego_start_s: float
    signals: list[SignalPlan] = field(default_factory=list)
    traffic_entries: list[int] = field(default_factory=list)  # lanes traffic may be spawned on
    no_spawn_lanes: set[int] = field(default_factory=set)
    traffic_density: float = 1.0  # vehicles per 40 m of lane
    pedestrians: list[PedestrianPlan] = field(default_factory=list)
    statics: list[StaticObject] = field(default_factory=list)
    lead_brake: bool = False


class TileFrame:
    """Local tile coordinates → world coordinates (rotation, then the tile's offset)."""

    def __init__(self, origin: tuple[float, float], yaw: float) -> None:
        self.origin = np.asarray(origin, dtype=float)
        self.yaw = yaw
        c, s = np.cos(yaw), np.sin(yaw)
        self.rot = np.array([[c, -s], [s, c]])

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=float) @ self.rot.T + self.origin


def follow_lanes(net: RoadNetwork, start_lane: int, length: float, prefer: Callable[[list[int]], int] | None = None) -> list[int]:
    """A lane route from `start_lane` through successors until it covers `length` metres or the graph ends."""
    route, covered = [start_lane], net.lanes[start_lane].length
    while covered < length:
        succ = net.lanes[route[-1]].successors
        if not succ:
            break
        route.append(succ[0] if prefer is None or len(succ) == 1 else prefer(succ))
        covered += net.lanes[route[-1]].length
    return route


def strip(ref: np.ndarray, d0: float, d1: float) -> Polygon:
    """The band between lateral offsets `d0` and `d1` (left positive) of a reference line."""
    return Polygon(np.concatenate([g2.offset(ref, d0), g2.offset(ref, d1)[::-1]])).buffer(0)


def cross_band(ref: np.ndarray, s_ref: np.ndarray, s_mid: float, width: float, half_span: float) -> Polygon:
    """A band across the road at arclength `s_mid` of `ref`, `width` long and `half_span` to each side."""
    p = g2.interpolate(ref, s_ref, s_mid)
    h = float(np.interp(s_mid, s_ref, np.unwrap(g2.headings(ref))))
    t, n = np.array([np.cos(h), np.sin(h)]), np.array([-np.sin(h), np.cos(h)])
    corners = [p - t * width / 2 - n * half_span, p + t * width / 2 - n * half_span,
               p + t * width / 2 + n * half_span, p - t * width / 2 + n * half_span]  # fmt: skip
    return Polygon(corners)
