"""The scorer's local map around the ego (spec §3.3) and the per-state ego-area flags (spec §4.4).

`PDMDrivableMap` holds the polygons navsim's `PDMDrivableMap` holds: roadblocks, their lanes, the lane
connectors of roadblock connectors, intersections and car parks within 100 m of the ego at caching time — and
nothing else (no `generic_drivable_areas`, no roadblock-connector polygons). Every point-in-polygon question of
all K × 41 ego states is answered in one pass over the polygons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from irlvla_env.navsim.map_api import SemanticMapLayer
from irlvla_env.scoring.observation import geometries_from_arrays, geometries_to_arrays

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
    """Map polygons `(P,)` with string ids and `SemanticMapLayer` types."""

    ids: np.ndarray
    layers: np.ndarray
    polygons: np.ndarray
    _bounds: np.ndarray | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def bounds(self) -> np.ndarray:
        """`(P, 4)` polygon bounding boxes (min x, min y, max x, max y)."""
        if self._bounds is None:
            self._bounds = shapely.bounds(self.polygons).reshape(-1, 4)
        return self._bounds

    def _containing(self, points: np.ndarray, polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs `(point index, polygon index)` with the point strictly inside the polygon, for the polygons
        flagged in the bool mask `polygons (P,)`.

        Points are sorted by x once; each polygon tests only the points of its bounding box with shapely's
        `contains_xy` (no Point objects are created, which is what dominates an STRtree query here)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        finite = np.flatnonzero(np.isfinite(points).all(axis=1))
        order = finite[np.argsort(points[finite, 0], kind="stable")]
        xs, ys = points[order, 0], points[order, 1]
        point_hits, poly_hits = [], []
        for p in np.flatnonzero(polygons):
            min_x, min_y, max_x, max_y = self.bounds[p]
            lo, hi = np.searchsorted(xs, min_x, side="left"), np.searchsorted(xs, max_x, side="right")
            if lo == hi:
                continue
            y = ys[lo:hi]
            band = np.flatnonzero((y >= min_y) & (y <= max_y)) + lo
            if len(band) == 0:
                continue
            inside = band[shapely.contains_xy(self.polygons[p], xs[band], ys[band])]
            point_hits.append(order[inside])
            poly_hits.append(np.full(len(inside), p, dtype=np.int64))
        if not point_hits:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(point_hits), np.concatenate(poly_hits)

    def _of_layers(self, layers: tuple[SemanticMapLayer, ...]) -> np.ndarray:
        return np.isin(self.layers, [int(layer) for layer in layers])

    def points_in_layers(self, points: np.ndarray, layers: tuple[SemanticMapLayer, ...]) -> np.ndarray:
        """`(N,)` bool: which points `(N, 2)` lie strictly inside some polygon of `layers`."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        inside = np.zeros(len(points), dtype=bool)
        inside[self._containing(points, self._of_layers(layers))[0]] = True
        return inside

    def ego_areas(
        self, corners: np.ndarray, centers: np.ndarray, rear_axles: np.ndarray, route_lane_ids: set[str] | list[str]
    ) -> EgoAreas:
        """Flags for ego boxes `corners (K, S, 4, 2)`, `centers (K, S, 2)`, `rear_axles (K, S, 2)` (spec §4.4).

        Each point set is tested only against the polygons its flags need: corners against lanes and drivable
        polygons, centres against on-route lanes and intersections, rear axles against intersections."""
        k, s = centers.shape[:2]
        n = k * s
        lanes = self._of_layers(LANE_LAYERS)
        drivable = self._of_layers(DRIVABLE_LAYERS)
        intersections = self._of_layers((SemanticMapLayer.INTERSECTION,))
        on_route = lanes & np.isin(self.ids, list(route_lane_ids))

        corner_idx, poly_idx = self._containing(corners.reshape(n * 4, 2), lanes | drivable)
        lane_hit = lanes[poly_idx]
        # Corners per (state, lane polygon): >1 polygons touched and none holding all four → MULTIPLE_LANES.
        pair_keys, counts = np.unique((corner_idx[lane_hit] // 4) * len(self.ids) + poly_idx[lane_hit], return_counts=True)
        pair_state = pair_keys // max(len(self.ids), 1)
        touched = np.bincount(pair_state, minlength=n)
        full = np.zeros(n, dtype=bool)
        full[pair_state[counts == 4]] = True
        multiple_lanes = (touched > 1) & ~full
        corner_ok = np.zeros(4 * n, dtype=bool)
        corner_ok[corner_idx[drivable[poly_idx]]] = True
        non_drivable = ~corner_ok.reshape(n, 4).all(axis=1)

        center_idx, poly_idx = self._containing(centers.reshape(n, 2), on_route | intersections)
        center_on_route = np.zeros(n, dtype=bool)
        center_on_route[center_idx[on_route[poly_idx]]] = True
        center_in_intersection = np.zeros(n, dtype=bool)
        center_in_intersection[center_idx[intersections[poly_idx]]] = True
        rear_in_intersection = np.zeros(n, dtype=bool)
        rear_in_intersection[self._containing(rear_axles.reshape(n, 2), intersections)[0]] = True

        shape = (k, s)
        return EgoAreas(
            multiple_lanes=multiple_lanes.reshape(shape),
            non_drivable_area=non_drivable.reshape(shape),
            oncoming_traffic=~center_on_route.reshape(shape),
            center_in_intersection=center_in_intersection.reshape(shape),
            rear_axle_in_intersection=rear_in_intersection.reshape(shape),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        wkb, offsets = geometries_to_arrays(self.polygons)
        return {"ids": self.ids.astype(str), "layers": self.layers, "wkb": wkb, "wkb_offsets": offsets}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "PDMDrivableMap":
        return cls(
            ids=np.asarray(arrays["ids"]).astype(object),
            layers=np.asarray(arrays["layers"], dtype=np.int64),
            polygons=geometries_from_arrays(arrays["wkb"], arrays["wkb_offsets"]),
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
