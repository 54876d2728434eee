"""The nuPlan map as the scorer, simulator and observation builders query it (spec §3).

`NuPlanMap` turns the GPKG layer tables into a lane graph (lanes, lane connectors, roadblocks, roadblock
connectors with their edges), id → polygon tables for the area layers, one unioned drivable area, and one
STRtree per layer (built on first use, then kept) for proximity and point-in-polygon queries. Map object ids
are string fids, as in the devkit. Build it in memory with `NuPlanMap(layers, location)` (tests do) or from
disk with `load_map(location)`.
"""

from __future__ import annotations

import enum
import functools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import shapely
from shapely import STRtree
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry.base import BaseGeometry

from irlvla_env.navsim.dataclasses import MAP_LOCATIONS
from irlvla_env.navsim.map_io import (
    GEOMETRY_COLUMN,
    MAPS_INDEX_NAME,
    MapFormatError,
    gpkg_path,
    list_gpkg_layers,
    read_gpkg_layers,
    read_maps_index,
    reproject_layer,
)
from irlvla_env.paths import maps_root as default_maps_root

# navsim's metric caching accepts this short name for Las Vegas (spec §4.11).
LOCATION_ALIASES = {"las_vegas": "us-nv-las-vegas-strip"}


class SemanticMapLayer(enum.IntEnum):
    """Map layers by nuPlan's enum values, so ids printed in logs match the devkit."""

    LANE = 0
    INTERSECTION = 1
    STOP_LINE = 2
    CROSSWALK = 4
    DRIVABLE_AREA = 5
    LANE_CONNECTOR = 11
    BASELINE_PATHS = 12
    BOUNDARIES = 13
    WALKWAYS = 14
    CARPARK_AREA = 15
    ROADBLOCK = 17
    ROADBLOCK_CONNECTOR = 18


# Layers the lane graph cannot do without, and the columns read from each (spec §3.2).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "lanes_polygons": ("lane_group_fid", "lane_index"),
    "lane_connectors": ("exit_lane_fid", "entry_lane_fid", "lane_group_connector_fid"),
    "gen_lane_connectors_scaled_width_polygons": ("lane_connector_fid",),
    "lane_groups_polygons": (),
    "lane_group_connectors": ("from_lane_group_fid", "to_lane_group_fid"),
    "baseline_paths": ("lane_fid", "lane_connector_fid"),
}
# Area layers; a map without one of them simply has none of those objects.
AREA_LAYERS = {
    SemanticMapLayer.INTERSECTION: "intersections",
    SemanticMapLayer.STOP_LINE: "stop_polygons",
    SemanticMapLayer.CROSSWALK: "crosswalks",
    SemanticMapLayer.WALKWAYS: "walkways",
    SemanticMapLayer.CARPARK_AREA: "carpark_areas",
}
DRIVABLE_AREA_LAYERS = ("road_segments", "intersections", "generic_drivable_areas", "carpark_areas")
OPTIONAL_LAYERS = ("boundaries", "meta", *AREA_LAYERS.values(), *DRIVABLE_AREA_LAYERS)
MAP_LAYER_NAMES = (*REQUIRED_COLUMNS, *dict.fromkeys(OPTIONAL_LAYERS))


@dataclass
class Lane:
    """A lane: polygon, centerline, its roadblock and its place in the lane graph (edges are connector ids)."""

    layer: ClassVar[SemanticMapLayer] = SemanticMapLayer.LANE
    id: str
    polygon: Polygon
    baseline_path: LineString
    speed_limit_mps: float | None
    roadblock_id: str
    lane_index: int | None
    left_neighbour_id: str | None = None
    right_neighbour_id: str | None = None
    left_boundary_id: str | None = None
    right_boundary_id: str | None = None
    incoming_edges: list[str] = field(default_factory=list)
    outgoing_edges: list[str] = field(default_factory=list)


@dataclass
class LaneConnector:
    """A lane connector between an exit lane (incoming edge) and an entry lane (outgoing edge)."""

    layer: ClassVar[SemanticMapLayer] = SemanticMapLayer.LANE_CONNECTOR
    id: str
    polygon: Polygon
    baseline_path: LineString
    speed_limit_mps: float | None
    roadblock_id: str  # the roadblock connector
    incoming_edges: list[str] = field(default_factory=list)
    outgoing_edges: list[str] = field(default_factory=list)
    traffic_light_stop_line_ids: list[str] = field(default_factory=list)


@dataclass
class Roadblock:
    """A lane group; `interior_edges` are its lanes ordered by lane index, edges are roadblock connectors."""

    layer: ClassVar[SemanticMapLayer] = SemanticMapLayer.ROADBLOCK
    id: str
    polygon: Polygon
    interior_edges: list[str] = field(default_factory=list)
    incoming_edges: list[str] = field(default_factory=list)
    outgoing_edges: list[str] = field(default_factory=list)


@dataclass
class RoadblockConnector:
    """A lane-group connector; `interior_edges` are its lane connectors, edges are roadblocks."""

    layer: ClassVar[SemanticMapLayer] = SemanticMapLayer.ROADBLOCK_CONNECTOR
    id: str
    polygon: Polygon
    interior_edges: list[str] = field(default_factory=list)
    incoming_edges: list[str] = field(default_factory=list)
    outgoing_edges: list[str] = field(default_factory=list)
    intersection_id: str | None = None


def _id_or_none(value: object) -> str | None:
    """A map id as the devkit compares them: a string; ints stored as floats (NaN-padded columns) lose `.0`."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _float_or_none(value: object) -> float | None:
    if value is None or value is pd.NA:
        return None
    number = float(value)
    return None if np.isnan(number) else number


def _int_or_none(value: object) -> int | None:
    number = _float_or_none(value)
    return None if number is None else int(number)


def _split_ids(value: object) -> list[str]:
    """`traffic_light_stop_line_fids` is a comma-separated string (or one number, or empty)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    single = _id_or_none(value)
    return [] if single is None else [single]


def _fids(df: pd.DataFrame) -> list[str]:
    """Row ids: the `fid` column when present, else the index (in-memory tables), as strings."""
    values = df["fid"] if "fid" in df.columns else df.index
    return [_id_or_none(v) for v in values]


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    """An optional column, or all-None when the map does not carry it."""
    return df[name] if name in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)


class NuPlanMap:
    """The lane graph and area layers of one map location, with STRtree-backed spatial queries."""

    def __init__(self, layers: dict[str, pd.DataFrame], location: str, source: str | Path | None = None) -> None:
        """:param layers: GPKG layer name → DataFrame (a shapely `geometry` column; `fid` column or index).
        :param location: map location name (one of `MAP_LOCATIONS` for real data).
        :param source: where the layers came from, used in error messages.
        """
        self.location = location
        self._source = str(source) if source is not None else "<in-memory map>"
        self._check_layers(layers)
        self.projected_crs = self._projected_crs(layers)
        layers = {name: reproject_layer(df, self.projected_crs, self._source, name) for name, df in layers.items()}
        empty = pd.DataFrame({GEOMETRY_COLUMN: pd.Series([], dtype=object)})
        self._tables = {name: layers.get(name, empty) for name in MAP_LAYER_NAMES}

        self.boundaries: dict[str, LineString] = self._geometries("boundaries")
        self.intersections: dict[str, Polygon] = self._geometries("intersections")
        self.stop_lines: dict[str, Polygon] = self._geometries("stop_polygons")
        self.crosswalks: dict[str, Polygon] = self._geometries("crosswalks")
        self.walkways: dict[str, Polygon] = self._geometries("walkways")
        self.carpark_areas: dict[str, Polygon] = self._geometries("carpark_areas")
        self.baseline_paths: dict[str, LineString] = self._geometries("baseline_paths")
        self.drivable_areas: dict[str, Polygon] = {
            f"{name}:{fid}": geom for name in DRIVABLE_AREA_LAYERS for fid, geom in self._geometries(name).items()
        }

        self.lanes: dict[str, Lane] = {}
        self.lane_connectors: dict[str, LaneConnector] = {}
        self.roadblocks: dict[str, Roadblock] = {}
        self.roadblock_connectors: dict[str, RoadblockConnector] = {}
        self._build_lane_graph()
        self._trees: dict[SemanticMapLayer, tuple[np.ndarray, np.ndarray, STRtree]] = {}
        self._baselines: dict[tuple[SemanticMapLayer, ...], tuple[np.ndarray, np.ndarray, STRtree]] = {}

    @functools.cached_property
    def drivable_area(self) -> BaseGeometry:
        """One (multi)polygon: road segments ∪ intersections ∪ generic drivable areas ∪ car parks (built once)."""
        return shapely.union_all(list(self.drivable_areas.values())) if self.drivable_areas else Polygon()

    def __getstate__(self) -> dict:
        """Pickle without the STRtrees and the union (rebuilt on demand), which are large and cheap to redo."""
        state = dict(self.__dict__)
        state.pop("drivable_area", None)
        state["_trees"], state["_baselines"] = {}, {}
        return state

    # ----------------------------------------------------------------------------------------------- building
    def _check_layers(self, layers: dict[str, pd.DataFrame]) -> None:
        for name, columns in REQUIRED_COLUMNS.items():
            if name not in layers:
                raise MapFormatError(f"{self._source}: missing map layer {name!r} (has {sorted(layers)})")
            needs_geometry = name != "lane_connectors"  # its lines are unused; polygons/paths live elsewhere
            wanted = (*columns, GEOMETRY_COLUMN) if needs_geometry else columns
            missing = [c for c in wanted if c not in layers[name].columns]
            if missing:
                raise MapFormatError(f"{self._source}: layer {name!r} lacks column(s) {missing}")
        for name in OPTIONAL_LAYERS:
            if name in layers and name != "meta" and GEOMETRY_COLUMN not in layers[name].columns:
                raise MapFormatError(f"{self._source}: layer {name!r} lacks column {GEOMETRY_COLUMN!r}")

    def _projected_crs(self, layers: dict[str, pd.DataFrame]) -> str | None:
        """The `projectedCoordSystem` of the `meta` table, else the CRS the layers already carry."""
        meta = layers.get("meta")
        if meta is not None and len(meta):
            if "key" not in meta.columns or "value" not in meta.columns:
                raise MapFormatError(f"{self._source}: layer 'meta' needs columns 'key' and 'value'")
            rows = meta.loc[meta["key"] == "projectedCoordSystem", "value"]
            if len(rows):
                return str(rows.iloc[0])
        return layers["lanes_polygons"].attrs.get("crs")

    def _geometries(self, name: str) -> dict[str, BaseGeometry]:
        df = self._tables[name]
        return dict(zip(_fids(df), df[GEOMETRY_COLUMN]))

    def _build_lane_graph(self) -> None:
        t = self._tables
        baselines = t["baseline_paths"]
        lane_paths = {_id_or_none(k): g for k, g in zip(baselines["lane_fid"], baselines[GEOMETRY_COLUMN])}
        conn_paths = {_id_or_none(k): g for k, g in zip(baselines["lane_connector_fid"], baselines[GEOMETRY_COLUMN])}
        polys = t["gen_lane_connectors_scaled_width_polygons"]
        conn_polys = {_id_or_none(k): g for k, g in zip(polys["lane_connector_fid"], polys[GEOMETRY_COLUMN])}

        lanes_df = t["lanes_polygons"]
        for lane_id, group, index, speed, left_b, right_b, poly in zip(
            _fids(lanes_df), lanes_df["lane_group_fid"], lanes_df["lane_index"], _column(lanes_df, "speed_limit_mps"),
            _column(lanes_df, "left_boundary_fid"), _column(lanes_df, "right_boundary_fid"), lanes_df[GEOMETRY_COLUMN],
        ):  # fmt: skip
            if lane_id not in lane_paths:
                raise MapFormatError(f"{self._source}: layer 'baseline_paths' has no row with lane_fid == {lane_id}")
            self.lanes[lane_id] = Lane(
                id=lane_id, polygon=poly, baseline_path=lane_paths[lane_id], speed_limit_mps=_float_or_none(speed),
                roadblock_id=_id_or_none(group), lane_index=_int_or_none(index),
                left_boundary_id=_id_or_none(left_b), right_boundary_id=_id_or_none(right_b),
            )  # fmt: skip

        conns_df = t["lane_connectors"]
        for conn_id, exit_lane, entry_lane, group, speed, stop_lines in zip(
            _fids(conns_df), conns_df["exit_lane_fid"], conns_df["entry_lane_fid"],
            conns_df["lane_group_connector_fid"], _column(conns_df, "speed_limit_mps"),
            _column(conns_df, "traffic_light_stop_line_fids"),
        ):  # fmt: skip
            for what, table in (("baseline_paths", conn_paths), ("gen_lane_connectors_scaled_width_polygons", conn_polys)):
                if conn_id not in table:
                    raise MapFormatError(f"{self._source}: layer {what!r} has no row with lane_connector_fid == {conn_id}")
            exit_id, entry_id = _id_or_none(exit_lane), _id_or_none(entry_lane)
            self.lane_connectors[conn_id] = LaneConnector(
                id=conn_id, polygon=conn_polys[conn_id], baseline_path=conn_paths[conn_id],
                speed_limit_mps=_float_or_none(speed), roadblock_id=_id_or_none(group),
                incoming_edges=[exit_id] if exit_id else [], outgoing_edges=[entry_id] if entry_id else [],
                traffic_light_stop_line_ids=_split_ids(stop_lines),
            )  # fmt: skip
            if exit_id in self.lanes:
                self.lanes[exit_id].outgoing_edges.append(conn_id)
            if entry_id in self.lanes:
                self.lanes[entry_id].incoming_edges.append(conn_id)

        groups_df = t["lane_groups_polygons"]
        for rb_id, poly in zip(_fids(groups_df), groups_df[GEOMETRY_COLUMN]):
            self.roadblocks[rb_id] = Roadblock(id=rb_id, polygon=poly)
        rbc_df = t["lane_group_connectors"]
        for rbc_id, src, dst, inter, poly in zip(
            _fids(rbc_df), rbc_df["from_lane_group_fid"], rbc_df["to_lane_group_fid"],
            _column(rbc_df, "intersection_fid"), rbc_df[GEOMETRY_COLUMN],
        ):  # fmt: skip
            src_id, dst_id = _id_or_none(src), _id_or_none(dst)
            self.roadblock_connectors[rbc_id] = RoadblockConnector(
                id=rbc_id, polygon=poly, incoming_edges=[src_id] if src_id else [],
                outgoing_edges=[dst_id] if dst_id else [], intersection_id=_id_or_none(inter),
            )  # fmt: skip
            if src_id in self.roadblocks:
                self.roadblocks[src_id].outgoing_edges.append(rbc_id)
            if dst_id in self.roadblocks:
                self.roadblocks[dst_id].incoming_edges.append(rbc_id)

        by_group: dict[str, list[Lane]] = defaultdict(list)
        for lane in self.lanes.values():
            by_group[lane.roadblock_id].append(lane)
        for group_id, members in by_group.items():
            # nuPlan numbers lanes from the left: the left neighbour has index - 1, the right one index + 1.
            by_index = {lane.lane_index: lane.id for lane in members if lane.lane_index is not None}
            for lane in members:
                if lane.lane_index is not None:
                    lane.left_neighbour_id = by_index.get(lane.lane_index - 1)
                    lane.right_neighbour_id = by_index.get(lane.lane_index + 1)
            if group_id in self.roadblocks:
                ordered = sorted(members, key=lambda lane: (lane.lane_index is None, lane.lane_index or 0, lane.id))
                self.roadblocks[group_id].interior_edges = [lane.id for lane in ordered]
        for conn in self.lane_connectors.values():
            if conn.roadblock_id in self.roadblock_connectors:
                self.roadblock_connectors[conn.roadblock_id].interior_edges.append(conn.id)

    # ------------------------------------------------------------------------------------------------ lookup
    def _layer_objects(self, layer: SemanticMapLayer) -> dict:
        """id → map object (graph layers) or geometry (area and line layers)."""
        graph = {
            SemanticMapLayer.LANE: self.lanes,
            SemanticMapLayer.LANE_CONNECTOR: self.lane_connectors,
            SemanticMapLayer.ROADBLOCK: self.roadblocks,
            SemanticMapLayer.ROADBLOCK_CONNECTOR: self.roadblock_connectors,
            SemanticMapLayer.BASELINE_PATHS: self.baseline_paths,
            SemanticMapLayer.BOUNDARIES: self.boundaries,
            SemanticMapLayer.DRIVABLE_AREA: self.drivable_areas,
        }
        if layer in graph:
            return graph[layer]
        return {
            SemanticMapLayer.INTERSECTION: self.intersections,
            SemanticMapLayer.STOP_LINE: self.stop_lines,
            SemanticMapLayer.CROSSWALK: self.crosswalks,
            SemanticMapLayer.WALKWAYS: self.walkways,
            SemanticMapLayer.CARPARK_AREA: self.carpark_areas,
        }[layer]

    def get_map_object(self, object_id: str, layer: SemanticMapLayer) -> object | None:
        """The object (or geometry) with this id in `layer`, or None when the layer has no such id (as nuPlan)."""
        return self._layer_objects(layer).get(str(object_id))

    def get_geometry(self, object_id: str, layer: SemanticMapLayer) -> BaseGeometry | None:
        """The polygon (or line) of one object, whatever its layer."""
        obj = self.get_map_object(object_id, layer)
        return getattr(obj, "polygon", obj)

    def _tree(self, layer: SemanticMapLayer) -> tuple[np.ndarray, np.ndarray, STRtree]:
        """`(ids, geometries, STRtree)` of a layer, built on first use and kept for the life of the map."""
        if layer not in self._trees:
            objects = self._layer_objects(layer)
            ids = np.array(list(objects), dtype=object)
            geoms = np.array([getattr(o, "polygon", o) for o in objects.values()], dtype=object)
            self._trees[layer] = (ids, geoms, STRtree(geoms))
        return self._trees[layer]

    def get_proximal_map_objects(
        self, xy: np.ndarray | tuple[float, float], radius: float, layers: list[SemanticMapLayer]
    ) -> dict[SemanticMapLayer, list[str]]:
        """Ids, per layer, of the objects whose geometry intersects the square `[x ± radius] × [y ± radius]`."""
        x, y = float(xy[0]), float(xy[1])
        square = shapely.box(x - radius, y - radius, x + radius, y + radius)
        out = {}
        for layer in layers:
            ids, _, tree = self._tree(layer)
            out[layer] = [str(i) for i in ids[np.sort(tree.query(square, predicate="intersects"))]]
        return out

    def is_in_layer(self, xy: np.ndarray | tuple[float, float], layer: SemanticMapLayer) -> bool:
        """Whether the point lies strictly within at least one polygon of `layer` (boundary is outside)."""
        _, _, tree = self._tree(layer)
        return len(tree.query(Point(float(xy[0]), float(xy[1])), predicate="within")) > 0

    def points_in_layer(self, points: np.ndarray, layer: SemanticMapLayer) -> np.ndarray:
        """Vectorised :meth:`is_in_layer`: bool `(N,)` for points `(N, 2)`."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        inside = np.zeros(len(points), dtype=bool)
        _, _, tree = self._tree(layer)
        if len(points) and len(tree):
            hits = tree.query(shapely.points(points), predicate="within")
            inside[hits[0]] = True
        return inside

    def objects_containing_points(self, points: np.ndarray, layer: SemanticMapLayer) -> list[list[str]]:
        """For each point `(N, 2)`, the ids of the `layer` polygons that strictly contain it."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        ids, _, tree = self._tree(layer)
        out: list[list[str]] = [[] for _ in range(len(points))]
        if len(points) and len(tree):
            point_idx, geom_idx = tree.query(shapely.points(points), predicate="within")
            for p, g in zip(point_idx, geom_idx):
                out[p].append(str(ids[g]))
        return out

    def nearest_lanes(
        self, xy: np.ndarray | tuple[float, float], k: int = 1, include_connectors: bool = True
    ) -> list[tuple[str, float]]:
        """The `k` lanes (and lane connectors) whose baseline path is closest to `xy`, as `(id, distance)`.

        Distance to the centerline rather than to the polygon, because inside overlapping connector polygons
        (intersections) every polygon distance is 0 and only the centerline tells them apart. The search square
        grows from 10 m until it holds `k` paths within its half-width, so a query touches only nearby lanes.
        """
        layers = [SemanticMapLayer.LANE] + ([SemanticMapLayer.LANE_CONNECTOR] if include_connectors else [])
        x, y = float(xy[0]), float(xy[1])
        point = Point(x, y)
        ids, paths, tree = self._baseline_tree(tuple(layers))
        k = min(k, len(ids))
        if k <= 0:
            return []
        radius = 10.0
        while True:
            idx = tree.query(shapely.box(x - radius, y - radius, x + radius, y + radius))
            distances = shapely.distance(point, paths[idx])
            order = np.lexsort((ids[idx], distances))[:k]
            # Every path within `radius` of the point meets the square, so the k-th hit is exact once it is inside.
            if (len(order) == k and distances[order[-1]] <= radius) or len(idx) == len(ids) or radius > 1e7:
                return [(str(ids[idx[i]]), float(distances[i])) for i in order]
            radius *= 4.0

    def _baseline_tree(self, layers: tuple[SemanticMapLayer, ...]) -> tuple[np.ndarray, np.ndarray, STRtree]:
        """`(ids, baseline paths, STRtree)` over the lanes/connectors of `layers`, built once."""
        if layers not in self._baselines:
            objects = [o for layer in layers for o in self._layer_objects(layer).values()]
            ids = np.array([o.id for o in objects], dtype=object)
            paths = np.array([o.baseline_path for o in objects], dtype=object)
            self._baselines[layers] = (ids, paths, STRtree(paths))
        return self._baselines[layers]

    def __repr__(self) -> str:
        return (
            f"NuPlanMap({self.location!r}, lanes={len(self.lanes)}, connectors={len(self.lane_connectors)}, "
            f"roadblocks={len(self.roadblocks)}, roadblock_connectors={len(self.roadblock_connectors)})"
        )

    @classmethod
    def from_gpkg(cls, path: str | Path, location: str) -> "NuPlanMap":
        """Read every known layer present in the GeoPackage at `path`."""
        available = set(list_gpkg_layers(path))
        missing = [name for name in REQUIRED_COLUMNS if name not in available]
        if missing:
            raise MapFormatError(f"{path}: missing map layer(s) {missing} (has {sorted(available)})")
        names = [name for name in MAP_LAYER_NAMES if name in available]
        return cls(read_gpkg_layers(path, names), location, source=path)


def canonical_location(location: str) -> str:
    """The devkit location name for `location` (accepts `las_vegas`); ValueError listing the four otherwise."""
    name = LOCATION_ALIASES.get(location, location)
    if name not in MAP_LOCATIONS:
        raise ValueError(f"unknown map location {location!r}; expected one of {list(MAP_LOCATIONS)} (or 'las_vegas')")
    return name


@functools.lru_cache(maxsize=8)
def _load_map_cached(root: str, location: str) -> NuPlanMap:
    index = read_maps_index(root)
    if location not in index or "version" not in index[location]:
        raise MapFormatError(f"{Path(root) / MAPS_INDEX_NAME}: no version entry for location {location!r}")
    path = gpkg_path(root, location, index[location]["version"])
    if not path.is_file():
        raise FileNotFoundError(f"map GeoPackage for {location!r} not found: {path}")
    return NuPlanMap.from_gpkg(path, location)


def load_map(location: str, maps_root: str | Path | None = None) -> NuPlanMap:
    """The map of `location` from `<maps_root>/<location>/<version>/map.gpkg` (version from the JSON index).

    `maps_root` defaults to `$NUPLAN_MAPS_ROOT`. Maps are cached per (root, location): building the graph and
    trees of a real city takes seconds and every scene of a location shares it.
    """
    root = Path(maps_root) if maps_root is not None else default_maps_root()
    return _load_map_cached(str(root.expanduser().resolve()), canonical_location(location))


class LazyMap:
    """A stand-in for `load_map(location, maps_root)` that reads the map on first attribute access.

    Scenes carry one, so building scenes (and pickling them to workers) never touches the GeoPackage; the
    first query loads the map once per process through `load_map`'s cache.
    """

    def __init__(self, location: str, maps_root: str | Path | None = None) -> None:
        self.location = canonical_location(location)
        self.maps_root = Path(maps_root) if maps_root is not None else None

    def load(self) -> NuPlanMap:
        return load_map(self.location, self.maps_root)

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):  # keep pickle/copy protocol lookups off the map
            raise AttributeError(name)
        return getattr(self.load(), name)

    def __repr__(self) -> str:
        return f"LazyMap({self.location!r}, maps_root={str(self.maps_root) if self.maps_root else None!r})"
