"""The map as the sensor renderer sees it: painted ground surfaces in the global frame, cropped fast.

`RenderMap` holds what a camera or LiDAR can tell apart on a flat ground: road surface, walkways, car parks,
zebra-crossing stripes, stop lines and lane markings (white dashed between lanes of one direction, white solid at
the right road edge, yellow at the left edge). It precomputes everything that does not depend on the ego pose
(dashes, zebra stripes, ring coordinate arrays, one STRtree per layer), so a frame only queries the trees.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely import STRtree
from shapely.geometry import LineString, Polygon
from shapely.geometry.base import BaseGeometry

# Material ids of the ground raster, in painting order of their layers.
MATERIALS: dict[str, int] = {
    "terrain": 0,
    "road": 1,
    "walkway": 2,
    "carpark": 3,
    "crosswalk": 4,
    "white_solid": 5,
    "white_dashed": 6,
    "yellow_solid": 7,
    "stop_line": 8,
}
MARKING_WIDTH = 0.2  # [m] painted line width
STOP_LINE_WIDTH = 0.4  # [m]
DASH_LENGTH, DASH_PERIOD = 3.0, 9.0  # [m] US-style dashes: 3 m paint, 6 m gap
ZEBRA_BAR, ZEBRA_PERIOD = 0.5, 1.0  # [m] zebra bar width and spacing along the walking direction


@dataclass
class RenderLayer:
    """One material: area polygons (filled, holes as terrain) or lines (drawn `width` metres wide)."""

    material: str
    is_area: bool
    width: float
    rings: list[list[tuple[np.ndarray, bool]]]  # per geometry: (coords (K, 2), is_hole)
    tree: STRtree

    def query(self, xy: np.ndarray, radius: float) -> Iterator[tuple[np.ndarray, bool]]:
        """Rings `(coords (K, 2), is_hole)` of the geometries meeting the square `xy ± radius`."""
        square = shapely.box(xy[0] - radius, xy[1] - radius, xy[0] + radius, xy[1] + radius)
        for index in np.sort(self.tree.query(square)):
            yield from self.rings[index]


def _polygon_parts(geoms: list[BaseGeometry]) -> list[Polygon]:
    parts = shapely.get_parts(np.array([g for g in geoms if g is not None and not g.is_empty], dtype=object))
    return [p for p in parts if isinstance(p, Polygon) and p.area > 0]


def _line_parts(geoms: list[BaseGeometry]) -> list[LineString]:
    parts = shapely.get_parts(np.array([g for g in geoms if g is not None and not g.is_empty], dtype=object))
    return [p for p in parts if isinstance(p, LineString) and p.length > 0]


def dash_segments(lines: list[LineString], dash: float = DASH_LENGTH, period: float = DASH_PERIOD) -> list[LineString]:
    """Two-point dash segments along `lines` (vectorised; curved dashes become chords)."""
    lines = _line_parts(lines)
    if not lines:
        return []
    lengths = shapely.length(np.array(lines, dtype=object))
    counts = np.ceil(lengths / period).astype(int)
    owner = np.repeat(np.arange(len(lines)), counts)
    starts = np.concatenate([np.arange(n) * period for n in counts])
    ends = np.minimum(starts + dash, lengths[owner])
    line_arr = np.array(lines, dtype=object)[owner]
    p0 = shapely.get_coordinates(shapely.line_interpolate_point(line_arr, starts))
    p1 = shapely.get_coordinates(shapely.line_interpolate_point(line_arr, ends))
    keep = ends - starts > 0.1
    return list(shapely.linestrings(np.stack([p0[keep], p1[keep]], axis=1)))


def zebra_stripes(crosswalks: list[Polygon]) -> list[Polygon]:
    """Zebra bars inside each crosswalk: parallel to its short side, repeated along its long side."""
    bars: list[Polygon] = []
    for poly in _polygon_parts(crosswalks):
        rect = np.asarray(poly.minimum_rotated_rectangle.exterior.coords)[:4]
        edges = np.diff(np.vstack([rect, rect[:1]]), axis=0)
        lengths = np.linalg.norm(edges, axis=1)
        long_i = int(np.argmax(lengths))
        u = edges[long_i] / lengths[long_i]  # walking direction
        v = np.array([-u[1], u[0]])
        proj_u, proj_v = rect @ u, rect @ v
        offsets = np.arange(proj_u.min() + 0.25, proj_u.max() - ZEBRA_BAR + 1e-6, ZEBRA_PERIOD)
        if len(offsets) == 0:
            continue
        a, b = offsets[:, None], (offsets + ZEBRA_BAR)[:, None]
        lo, hi = proj_v.min(), proj_v.max()
        corners = np.stack([a * u + lo * v, b * u + lo * v, b * u + hi * v, a * u + hi * v], axis=1)
        clipped = shapely.intersection(shapely.polygons(corners), poly)
        bars.extend(_polygon_parts(list(clipped)))
    return bars


def _rings(geom: BaseGeometry) -> list[tuple[np.ndarray, bool]]:
    if isinstance(geom, Polygon):
        return [(np.asarray(geom.exterior.coords)[:, :2], False)] + [
            (np.asarray(hole.coords)[:, :2], True) for hole in geom.interiors
        ]
    return [(np.asarray(geom.coords)[:, :2], False)]


def _layer(material: str, geoms: list[BaseGeometry], is_area: bool, width: float = 0.0) -> RenderLayer:
    geoms = _polygon_parts(geoms) if is_area else _line_parts(geoms)
    return RenderLayer(material, is_area, width, [_rings(g) for g in geoms], STRtree(geoms))


@dataclass
class RenderMap:
    """Global-frame ground geometry for rendering (UTM metres, the frame of `ego2global`).

    :param drivable: road surface polygons (roadblocks, connectors, intersections, lanes, drivable areas).
    :param walkways: sidewalk polygons.
    :param carparks: car-park polygons.
    :param crosswalks: crosswalk polygons (painted as zebra bars).
    :param stop_lines: stop polygons (their outline is painted).
    :param dashed_white: lane dividers between lanes of one direction.
    :param solid_white: right road edges.
    :param solid_yellow: left road edges (centre lines of two-way roads).
    :param signal_heads: lane-connector id -> `(x, y, heading)` of its traffic-light head (drawn only when a
        frame gives that connector a status).
    """

    drivable: list[Polygon] = field(default_factory=list)
    walkways: list[Polygon] = field(default_factory=list)
    carparks: list[Polygon] = field(default_factory=list)
    crosswalks: list[Polygon] = field(default_factory=list)
    stop_lines: list[Polygon] = field(default_factory=list)
    dashed_white: list[LineString] = field(default_factory=list)
    solid_white: list[LineString] = field(default_factory=list)
    solid_yellow: list[LineString] = field(default_factory=list)
    signal_heads: dict[str, np.ndarray] = field(default_factory=dict)
    layers: list[RenderLayer] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        stop_outlines = [p.exterior for p in _polygon_parts(self.stop_lines)]
        self.layers = [
            _layer("walkway", self.walkways, True),
            _layer("carpark", self.carparks, True),
            _layer("road", self.drivable, True),
            _layer("crosswalk", zebra_stripes(self.crosswalks), True),
            _layer("stop_line", [LineString(r.coords) for r in stop_outlines], False, STOP_LINE_WIDTH),
            _layer("white_dashed", dash_segments(self.dashed_white), False, MARKING_WIDTH),
            _layer("white_solid", self.solid_white, False, MARKING_WIDTH),
            _layer("yellow_solid", self.solid_yellow, False, MARKING_WIDTH),
        ]

    @classmethod
    def from_map_api(cls, map_api: Any) -> "RenderMap":
        """Build from an `irlvla_env.navsim.map_api.NuPlanMap` (or anything with its public attributes).

        Lane markings come from each lane's left/right boundary (the `boundaries` layer when the lane names
        one, else its centerline offset by half the lane width): a side with a neighbour lane is dashed white,
        a left side without one is solid yellow, a right side without one solid white. Lane connectors get no
        markings, as in real intersections.
        """
        drivable = [o.polygon for o in (*map_api.roadblocks.values(), *map_api.roadblock_connectors.values())]
        drivable += [o.polygon for o in (*map_api.lanes.values(), *map_api.lane_connectors.values())]
        drivable += list(map_api.intersections.values()) + list(getattr(map_api, "drivable_areas", {}).values())
        markings: dict[str, list[LineString]] = {"dashed_white": [], "solid_white": [], "solid_yellow": []}
        seen: set[str] = set()
        boundaries = getattr(map_api, "boundaries", {})
        for lane in map_api.lanes.values():
            for side, neighbour, boundary_id in (
                ("left", lane.left_neighbour_id, lane.left_boundary_id),
                ("right", lane.right_neighbour_id, lane.right_boundary_id),
            ):
                kind = "dashed_white" if neighbour else ("solid_yellow" if side == "left" else "solid_white")
                if boundary_id is not None and boundary_id in boundaries:
                    if boundary_id not in seen:
                        seen.add(boundary_id)
                        markings[kind].append(boundaries[boundary_id])
                elif side == "left" or not neighbour:  # a shared divider is drawn once, from its right lane
                    line = _offset_side(lane.polygon, lane.baseline_path, side)
                    if line is not None:
                        markings[kind].append(line)
        heads = {cid: _signal_head(conn.baseline_path) for cid, conn in map_api.lane_connectors.items()}
        return cls(
            signal_heads={cid: head for cid, head in heads.items() if head is not None},
            drivable=drivable,
            walkways=list(map_api.walkways.values()),
            carparks=list(map_api.carpark_areas.values()),
            crosswalks=list(map_api.crosswalks.values()),
            stop_lines=list(map_api.stop_lines.values()),
            **markings,
        )


def _offset_side(polygon: Polygon, baseline: LineString, side: str) -> LineString | None:
    """The centerline shifted to one edge of the lane (width estimated as area / length)."""
    if baseline is None or baseline.length <= 0 or polygon is None or polygon.is_empty:
        return None
    half_width = 0.5 * polygon.area / baseline.length
    line = baseline.offset_curve(half_width if side == "left" else -half_width)
    return line if isinstance(line, LineString) and not line.is_empty else None


def _signal_head(baseline: LineString | None) -> np.ndarray | None:
    """`(x, y, heading)` where a connector's light hangs: over its entry, nudged towards the way it turns.

    Connectors leaving one lane share the entry point; the nudge (up to 1 m) keeps their heads apart.
    """
    if baseline is None or baseline.length <= 0:
        return None
    coords = np.asarray(baseline.coords)[:, :2]
    start, second, end = coords[0], coords[1], coords[-1]
    direction = (second - start) / max(float(np.linalg.norm(second - start)), 1e-9)
    left = np.array([-direction[1], direction[0]])
    nudge = float(np.clip((end - start) @ left / 10.0, -1.0, 1.0))
    x, y = start + nudge * left
    return np.array([x, y, np.arctan2(direction[1], direction[0])])
