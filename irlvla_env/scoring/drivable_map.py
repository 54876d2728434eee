"""The scorer's local map around the ego (spec §3.3) and the per-state ego-area flags (spec §4.4).

`PDMDrivableMap` holds the polygons navsim's `PDMDrivableMap` holds: roadblocks, their lanes, the lane
connectors of roadblock connectors, intersections and car parks within 100 m of the ego at caching time — and
nothing else (no `generic_drivable_areas`, no roadblock-connector polygons). One STRtree answers every
point-in-polygon question for all K × 41 ego states in a single query.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely import STRtree

from irlvla_env.navsim.map_api import SemanticMapLayer
from irlvla_env.scoring.observation import geometries_from_hex, geometries_to_hex

MAP_RADIUS_M = 100.0
LANE_LAYERS = (SemanticMapLayer.LANE, SemanticMapLayer.LANE_CONNECTOR)
# Polygons that count as drivable for DAC (DRIVABLE_AREA is never added, as in navsim).
DRIVABLE_LAYERS = (
    SemanticMapLayer.ROADBLOCK, SemanticMapLayer.INTERSECTION, SemanticMapLayer.DRIVABLE_AREA,
    SemanticMapLayer.CARPARK_AREA,
)  # fmt: skip


@dataclass
class EgoAreas:
    """Per-state flags `(K, S)` used by NC, DAC, DDC, TTC and LK."""

    multiple_lanes: np.ndarray
    non_drivable_area: np.ndarray
    oncoming_traffic: np.ndarray
    center_in_intersection: np.ndarray
    rear_axle_in_intersection: np.ndarray


@dataclass
class PDMDrivableMap:
    """Map polygons `(P,)` with string ids and `SemanticMapLayer` types; the STRtree is built on first use."""

    ids: np.ndarray
    layers: np.ndarray
    polygons: np.ndarray
    _tree: STRtree | None = field(default=None, init=False, repr=False)

    @property
    def tree(self) -> STRtree:
        if self._tree is None:
            self._tree = STRtree(self.polygons)
        return self._tree

    def __len__(self) -> int:
        return len(self.ids)

    def points_in_layers(self, points: np.ndarray, layers: tuple[SemanticMapLayer, ...]) -> np.ndarray:
        """Bool `(N,)`: whether each point `(N, 2)` lies strictly inside a polygon of one of `layers`."""
        point_idx, poly_idx = self._containing(points)
        inside = np.zeros(len(points), dtype=bool)
        inside[point_idx[np.isin(self.layers[poly_idx], [int(l) for l in layers])]] = True
        return inside

    def _containing(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs `(point index, polygon index)` with the point strictly inside the polygon."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(points) == 0 or len(self.ids) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        finite = np.isfinite(points).all(axis=1)
        hits = self.tree.query(shapely.points(np.where(finite[:, None], points, 0.0)), predicate="within")
        keep = finite[hits[0]]
        return hits[0][keep], hits[1][keep]

    def ego_areas(
        self, corners: np.ndarray, centers: np.ndarray, rear_axles: np.ndarray, route_lane_ids: set[str] | list[str]
    ) -> EgoAreas:
        """Flags for ego boxes `corners (K, S, 4, 2)`, `centers (K, S, 2)`, `rear_axles (K, S, 2)` (spec §4.4)."""
        k, s = centers.shape[:2]
        n = k * s
        points = np.concatenate([corners.reshape(n * 4, 2), centers.reshape(n, 2), rear_axles.reshape(n, 2)])
        point_idx, poly_idx = self._containing(points)
        layer = self.layers[poly_idx]

        is_corner = point_idx < 4 * n
        state_of_corner = point_idx // 4
        lane_hit = is_corner & np.isin(layer, [int(l) for l in LANE_LAYERS])
        # Corners per (state, lane polygon): >1 polygons touched and none holding all four → MULTIPLE_LANES.
        pair_keys, counts = np.unique(state_of_corner[lane_hit] * len(self.ids) + poly_idx[lane_hit], return_counts=True)
        pair_state = pair_keys // max(len(self.ids), 1)
        touched = np.bincount(pair_state, minlength=n)
        full = np.zeros(n, dtype=bool)
        full[pair_state[counts == 4]] = True
        multiple_lanes = (touched > 1) & ~full

        drivable_hit = is_corner & np.isin(layer, [int(l) for l in DRIVABLE_LAYERS])
        corner_ok = np.zeros(4 * n, dtype=bool)
        corner_ok[point_idx[drivable_hit]] = True
        non_drivable = ~corner_ok.reshape(n, 4).all(axis=1)

        is_center = (point_idx >= 4 * n) & (point_idx < 5 * n)
        on_route = np.isin(self.ids, list(route_lane_ids)) & np.isin(self.layers, [int(l) for l in LANE_LAYERS])
        center_on_route = np.zeros(n, dtype=bool)
        center_on_route[point_idx[is_center & on_route[poly_idx]] - 4 * n] = True

        in_intersection = layer == int(SemanticMapLayer.INTERSECTION)
        center_in_intersection = np.zeros(n, dtype=bool)
        center_in_intersection[point_idx[is_center & in_intersection] - 4 * n] = True
        is_rear = point_idx >= 5 * n
        rear_in_intersection = np.zeros(n, dtype=bool)
        rear_in_intersection[point_idx[is_rear & in_intersection] - 5 * n] = True

        shape = (k, s)
        return EgoAreas(
            multiple_lanes=multiple_lanes.reshape(shape),
            non_drivable_area=non_drivable.reshape(shape),
            oncoming_traffic=~center_on_route.reshape(shape),
            center_in_intersection=center_in_intersection.reshape(shape),
            rear_axle_in_intersection=rear_in_intersection.reshape(shape),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids.astype(str), "layers": self.layers, "polygons": geometries_to_hex(self.polygons)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "PDMDrivableMap":
        return cls(
            ids=np.asarray(arrays["ids"]).astype(object),
            layers=np.asarray(arrays["layers"], dtype=np.int64),
            polygons=geometries_from_hex(arrays["polygons"]),
        )


def build_drivable_map(map_api, center_xy: np.ndarray, radius: float = MAP_RADIUS_M) -> PDMDrivableMap:
    """The polygons of spec §3.3 within the square `center ± radius` (roadblock interiors come with their block)."""
    queried = (
        SemanticMapLayer.ROADBLOCK, SemanticMapLayer.ROADBLOCK_CONNECTOR, SemanticMapLayer.INTERSECTION,
        SemanticMapLayer.CARPARK_AREA,
    )  # fmt: skip
    nearby = map_api.get_proximal_map_objects(np.asarray(center_xy, dtype=np.float64), radius, list(queried))
    ids: list[str] = []
    layers: list[int] = []
    polygons: list = []

    def add(object_id: str, layer: SemanticMapLayer, polygon) -> None:
        ids.append(str(object_id))
        layers.append(int(layer))
        polygons.append(polygon)

    for rb_id in nearby[SemanticMapLayer.ROADBLOCK]:
        roadblock = map_api.roadblocks[rb_id]
        add(rb_id, SemanticMapLayer.ROADBLOCK, roadblock.polygon)
        for lane_id in roadblock.interior_edges:
            add(lane_id, SemanticMapLayer.LANE, map_api.lanes[lane_id].polygon)
    for rbc_id in nearby[SemanticMapLayer.ROADBLOCK_CONNECTOR]:
        for conn_id in map_api.roadblock_connectors[rbc_id].interior_edges:
            add(conn_id, SemanticMapLayer.LANE_CONNECTOR, map_api.lane_connectors[conn_id].polygon)
    for inter_id in nearby[SemanticMapLayer.INTERSECTION]:
        add(inter_id, SemanticMapLayer.INTERSECTION, map_api.intersections[inter_id])
    for park_id in nearby[SemanticMapLayer.CARPARK_AREA]:
        add(park_id, SemanticMapLayer.CARPARK_AREA, map_api.carpark_areas[park_id])
    polys = np.empty(len(polygons), dtype=object)
    polys[:] = polygons
    return PDMDrivableMap(ids=np.array(ids, dtype=object), layers=np.array(layers, dtype=np.int64), polygons=polys)
