"""A procedural road network that becomes nuPlan GPKG layer tables (spec §3.2).

The builder places lanes beside a reference line (the road centre): to the right of travel for right-hand
traffic, to the left for left-hand traffic (Singapore). nuPlan numbers lanes from the left, so `lane_index`
is derived from that side. Consecutive roadblocks of one road are joined by short lane connectors, and each
roadblock polygon reaches half-way across those joints so the drivable area (roadblocks + intersections +
car parks, spec §3.3) has no cracks. Ids come from one counter shared by all layers, so an id names one
object whatever table it is looked up in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import LineString, Polygon

from irlvla_env.synthetic import geometry2d as g2

JOINT_GAP = 2.0  # [m] length of the lane connectors between consecutive roadblocks of one road
# nuPlan stop polygon types (spec §3.2).
STOP_PED_CROSSING, STOP_TRAFFIC_LIGHT = 0, 2


@dataclass
class LanePath:
    """A lane or lane connector: its centerline (~1 m spacing) and place in the lane graph."""

    id: int
    centerline: np.ndarray
    width: float
    speed_limit: float
    roadblock_id: int
    is_connector: bool
    lane_index: int | None = None
    left_boundary_id: int | None = None
    right_boundary_id: int | None = None
    successors: list[int] = field(default_factory=list)
    predecessors: list[int] = field(default_factory=list)
    turn: str = "straight"  # straight, left, right (connectors)
    has_signal: bool = False
    stop_line_ids: list[int] = field(default_factory=list)
    yield_to: list[int] = field(default_factory=list)  # connectors with priority over this one
    ends: bool = False  # a lane that drops: its only way on is a merging connector

    def __post_init__(self) -> None:
        self.s = g2.arclength(self.centerline)

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def polygon(self) -> Polygon:
        left = g2.offset(self.centerline, self.width / 2.0)
        right = g2.offset(self.centerline, -self.width / 2.0)
        return Polygon(np.concatenate([left, right[::-1]]))


@dataclass
class Roadblock:
    """A lane group (roadblock) or lane-group connector (`is_connector`)."""

    id: int
    polygon: Polygon
    lane_ids: list[int]
    is_connector: bool = False
    from_id: int | None = None
    to_id: int | None = None
    intersection_id: int | None = None


class RoadNetwork:
    """Lanes, roadblocks and area layers of one or more tiles; `to_layers()` gives the GPKG tables."""

    def __init__(self, first_id: int, left_hand: bool = False) -> None:
        self._next_id = first_id
        self.left_hand = left_hand
        self.lanes: dict[int, LanePath] = {}
        self.roadblocks: dict[int, Roadblock] = {}
        self.boundaries: dict[int, LineString] = {}
        self.intersections: dict[int, Polygon] = {}
        self.stop_lines: dict[int, tuple[Polygon, int]] = {}
        self.crosswalks: dict[int, Polygon] = {}
        self.walkways: dict[int, Polygon] = {}
        self.carparks: dict[int, Polygon] = {}
        self.generic_drivable: dict[int, Polygon] = {}

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    @property
    def side(self) -> float:
        """Sign of the lateral offset of lanes from their road centre: -1 right of travel, +1 left."""
        return 1.0 if self.left_hand else -1.0

    # ------------------------------------------------------------------------------------------ roads
    def add_road(
        self,
        reference: np.ndarray,
        lane_counts: list[int],
        cut_points: list[float],
        lane_width: float,
        speed_limit: float,
    ) -> list[Roadblock]:
        """A chain of roadblocks along `reference` (the road centre, in the direction of travel).

        :param lane_counts: lanes of each roadblock; a drop by one removes the outermost lane, whose last
            connector then merges into the new outermost lane.
        :param cut_points: arclengths where one roadblock ends and the next begins (len = len(lane_counts) - 1).
        """
        reference = g2.resample(reference, 1.0)
        s_ref = g2.arclength(reference)
        edges = [0.0, *cut_points, float(s_ref[-1])]
        chain: list[Roadblock] = []
        for i, n_lanes in enumerate(lane_counts):
            lo = edges[i] + (JOINT_GAP / 2.0 if i > 0 else 0.0)
            hi = edges[i + 1] - (JOINT_GAP / 2.0 if i < len(lane_counts) - 1 else 0.0)
            chain.append(self._add_roadblock(reference, s_ref, lo, hi, n_lanes, lane_width, speed_limit, i, len(lane_counts)))
        for a, b in zip(chain, chain[1:]):
            self._join_roadblocks(a, b, lane_width, speed_limit)
        return chain

    def _add_roadblock(
        self, ref: np.ndarray, s_ref: np.ndarray, lo: float, hi: float, n_lanes: int, width: float, speed: float,
        index: int, count: int,
    ) -> Roadblock:  # fmt: skip
        normals = g2.left_normals(ref)

        def band(d: float, a: float, b: float) -> np.ndarray:
            # Offsets of the *whole* reference, sliced by its arclength: neighbouring roadblocks then share their
            # joint points exactly, even on curves.
            return _slice(ref + self.side * d * normals, s_ref, a, b)

        # The roadblock polygon covers half of each joint gap (plus a 5 cm overlap), so the drivable area has
        # no cracks and no shared edge on which a point would be inside neither polygon.
        poly_lo = lo - (JOINT_GAP / 2.0 + 0.05 if index > 0 else 0.0)
        poly_hi = hi + (JOINT_GAP / 2.0 + 0.05 if index < count - 1 else 0.0)
        rb_id = self.new_id()
        boundary_ids = []
        for k in range(n_lanes + 1):
            bid = self.new_id()
            self.boundaries[bid] = LineString(band(k * width, lo, hi))
            boundary_ids.append(bid)
        lane_ids = []
        for k in range(n_lanes):  # k counts outward from the road centre
            lane_index = n_lanes - 1 - k if self.left_hand else k
            inner_b, outer_b = boundary_ids[k], boundary_ids[k + 1]
            left_b, right_b = (outer_b, inner_b) if self.left_hand else (inner_b, outer_b)
            lane = LanePath(
                id=self.new_id(), centerline=band((k + 0.5) * width, lo, hi), width=width,
                speed_limit=speed, roadblock_id=rb_id, is_connector=False, lane_index=lane_index,
                left_boundary_id=left_b, right_boundary_id=right_b,
            )  # fmt: skip
            self.lanes[lane.id] = lane
            lane_ids.append(lane.id)
        polygon = Polygon(np.concatenate([band(0.0, poly_lo, poly_hi), band(n_lanes * width, poly_lo, poly_hi)[::-1]]))
        self.roadblocks[rb_id] = Roadblock(rb_id, polygon.buffer(0), lane_ids)
        return self.roadblocks[rb_id]

    def _join_roadblocks(self, a: Roadblock, b: Roadblock, width: float, speed: float) -> None:
        """Connect lane k of `a` to lane k of `b` (k from the road centre); a dropped lane merges outward-most."""
        pairs = [(k, min(k, len(b.lane_ids) - 1)) for k in range(len(a.lane_ids))]
        for ka, kb in pairs:
            conn = self.connect(a.lane_ids[ka], b.lane_ids[kb], width, speed)
            if ka >= len(b.lane_ids):
                self.lanes[a.lane_ids[ka]].ends = True
                self.lanes[conn].yield_to = [c for c in self.lanes[b.lane_ids[kb]].predecessors if c != conn]

    def connect(
        self, from_lane: int, to_lane: int, width: float, speed: float, intersection_id: int | None = None,
        turn: str = "straight",
    ) -> int:  # fmt: skip
        """A lane connector from the end of `from_lane` to the start of `to_lane`; returns its id."""
        a, b = self.lanes[from_lane], self.lanes[to_lane]
        h0 = float(g2.headings(a.centerline[-3:])[-1])
        h1 = float(g2.headings(b.centerline[:3])[0])
        centerline = g2.bezier_connector(a.centerline[-1], h0, b.centerline[0], h1)
        rbc = self._roadblock_connector(a.roadblock_id, b.roadblock_id, intersection_id)
        conn = LanePath(
            id=self.new_id(), centerline=centerline, width=width, speed_limit=speed, roadblock_id=rbc.id,
            is_connector=True, turn=turn, predecessors=[from_lane], successors=[to_lane],
        )  # fmt: skip
        self.lanes[conn.id] = conn
        rbc.lane_ids.append(conn.id)
        rbc.polygon = shapely.union(rbc.polygon, conn.polygon()) if not rbc.polygon.is_empty else conn.polygon()
        a.successors.append(conn.id)
        b.predecessors.append(conn.id)
        return conn.id

    def _roadblock_connector(self, src: int, dst: int, intersection_id: int | None) -> Roadblock:
        for rb in self.roadblocks.values():
            if rb.is_connector and rb.from_id == src and rb.to_id == dst:
                return rb
        rb = Roadblock(self.new_id(), Polygon(), [], True, src, dst, intersection_id)
        self.roadblocks[rb.id] = rb
        return rb

    # -------------------------------------------------------------------------------------- queries
    def route_roadblocks(self, lane_route: list[int]) -> list[int]:
        """Ordered, de-duplicated roadblock / roadblock-connector ids along a lane route."""
        out: list[int] = []
        for lane_id in lane_route:
            rb = self.lanes[lane_id].roadblock_id
            if not out or out[-1] != rb:
                out.append(rb)
        return out

    def neighbour(self, lane_id: int, direction: int) -> int | None:
        """The lane `direction` places further from (+1) or nearer to (-1) the road centre, same roadblock."""
        lane = self.lanes[lane_id]
        if lane.is_connector:
            return None
        ids = self.roadblocks[lane.roadblock_id].lane_ids
        k = ids.index(lane_id) + direction
        return ids[k] if 0 <= k < len(ids) else None

    # --------------------------------------------------------------------------------------- layers
    def to_layers(self, crs: str) -> dict[str, pd.DataFrame]:
        """The nuPlan GPKG tables (spec §3.2) as DataFrames with integer `fid` and shapely `geometry`."""
        lanes = [ln for ln in self.lanes.values() if not ln.is_connector]
        conns = [ln for ln in self.lanes.values() if ln.is_connector]
        blocks = [rb for rb in self.roadblocks.values() if not rb.is_connector]
        rbcs = [rb for rb in self.roadblocks.values() if rb.is_connector]
        layers = {
            "lanes_polygons": pd.DataFrame({
                "fid": [ln.id for ln in lanes], "lane_fid": [ln.id for ln in lanes],
                "lane_group_fid": [ln.roadblock_id for ln in lanes], "lane_index": [ln.lane_index for ln in lanes],
                "speed_limit_mps": [ln.speed_limit for ln in lanes],
                "left_boundary_fid": [ln.left_boundary_id for ln in lanes],
                "right_boundary_fid": [ln.right_boundary_id for ln in lanes],
                "geometry": [ln.polygon() for ln in lanes],
            }),
            "lane_connectors": pd.DataFrame({
                "fid": [c.id for c in conns], "exit_lane_fid": [c.predecessors[0] for c in conns],
                "entry_lane_fid": [c.successors[0] for c in conns],
                "lane_group_connector_fid": [c.roadblock_id for c in conns],
                "speed_limit_mps": [c.speed_limit for c in conns],
                "traffic_light_stop_line_fids": [",".join(map(str, c.stop_line_ids)) for c in conns],
                "geometry": [LineString(c.centerline) for c in conns],
            }),
            "gen_lane_connectors_scaled_width_polygons": pd.DataFrame({
                "fid": [c.id for c in conns], "lane_connector_fid": [c.id for c in conns],
                "geometry": [c.polygon() for c in conns],
            }),
            "lane_groups_polygons": pd.DataFrame({
                "fid": [rb.id for rb in blocks], "geometry": [rb.polygon for rb in blocks],
            }),
            "lane_group_connectors": pd.DataFrame({
                "fid": [rb.id for rb in rbcs], "from_lane_group_fid": [rb.from_id for rb in rbcs],
                "to_lane_group_fid": [rb.to_id for rb in rbcs],
                "intersection_fid": pd.array([rb.intersection_id for rb in rbcs], dtype="Int64"),
                "geometry": [rb.polygon for rb in rbcs],
            }),
            "baseline_paths": pd.DataFrame({
                "fid": np.arange(1, len(self.lanes) + 1),
                "lane_fid": pd.array([None if ln.is_connector else ln.id for ln in self.lanes.values()], dtype="Int64"),
                "lane_connector_fid": pd.array(
                    [ln.id if ln.is_connector else None for ln in self.lanes.values()], dtype="Int64"
                ),
                "geometry": [LineString(ln.centerline) for ln in self.lanes.values()],
            }),
            "boundaries": _area_table(self.boundaries),
            "intersections": _area_table(self.intersections),
            "stop_polygons": pd.DataFrame({
                "fid": list(self.stop_lines), "stop_polygon_type_fid": [t for _, t in self.stop_lines.values()],
                "geometry": [p for p, _ in self.stop_lines.values()],
            }),
            "crosswalks": _area_table(self.crosswalks),
            "walkways": _area_table(self.walkways),
            "carpark_areas": _area_table(self.carparks),
            "road_segments": _area_table({rb.id: rb.polygon for rb in blocks}),
            "generic_drivable_areas": _area_table(self.generic_drivable),
            "meta": pd.DataFrame({"key": ["projectedCoordSystem", "version"], "value": [crs, "synthetic"]}),
        }  # fmt: skip
        return layers


def _area_table(geoms: dict[int, object]) -> pd.DataFrame:
    return pd.DataFrame({"fid": np.array(list(geoms), dtype=np.int64), "geometry": list(geoms.values())})


def _slice(points: np.ndarray, s: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The part of a polyline between parameters `lo` and `hi` of `s` (e.g. the arclength of the reference line
    it was offset from), resampled at ~1 m."""
    inner = points[(s > lo) & (s < hi)]
    ends = g2.interpolate(points, s, np.array([lo, hi]))
    return g2.resample(np.concatenate([ends[:1], inner, ends[1:]]), 1.0)


def merge_layers(parts: list[dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """Concatenate the layer tables of several tiles of one map (ids are already disjoint)."""
    out: dict[str, pd.DataFrame] = {}
    for name in parts[0]:
        if name == "meta":
            out[name] = parts[0][name]
            continue
        frames = [p[name] for p in parts if len(p[name])]
        df = pd.concat(frames, ignore_index=True) if frames else parts[0][name]
        if name == "baseline_paths":
            df = df.assign(fid=np.arange(1, len(df) + 1))
        dup = df["fid"].duplicated()
        if dup.any():
            raise ValueError(f"layer {name!r}: duplicate fids across tiles: {df.loc[dup, 'fid'].tolist()[:5]}")
        out[name] = df
    return out


def in_memory_layers(layers: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Layer tables as the GPKG reader returns them (string fid index and column), for an in-memory NuPlanMap."""
    out = {}
    for name, df in layers.items():
        if "fid" in df.columns:
            fid = df["fid"].astype(str).to_numpy()
            df = df.assign(fid=fid).set_axis(pd.Index(fid), axis=0)
        out[name] = df
    return out
