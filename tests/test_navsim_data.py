"""The NAVSIM data layer: safe pickles, point clouds, GPKG maps, the map API and the SceneLoader.

Every fixture is hand-made in `tmp_path`: a tiny two-roadblock map written with our own `write_gpkg`, and two
OpenScene-style log pickles with tiny JPEGs and PCDs, so these tests do not depend on the synthetic world.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from PIL import Image
from shapely.geometry import LineString, box

from irlvla_env.navsim import map_api
from irlvla_env.navsim.dataclasses import CAMERA_KEYS, SceneFilter, SensorConfig
from irlvla_env.navsim.geometry import quaternion_from_yaw
from irlvla_env.navsim.loader import LogFormatError, SceneLoader, load_split
from irlvla_env.navsim.map_api import NuPlanMap, SemanticMapLayer as L, load_map
from irlvla_env.navsim.map_io import (
    MapFormatError,
    lonlat_to_utm,
    read_gpkg_layers,
    write_gpkg,
    write_maps_index,
)
from irlvla_env.navsim.pcd import PCDFormatError, read_pcd, write_pcd
from irlvla_env.navsim.safe_pickle import CorruptLogError, UnsafePickleError, dump_pickle_atomic, load_pickle

LOCATION = "us-ma-boston"
VERSION = "9.12.1817"
CRS = "EPSG:32619"


# ------------------------------------------------------------------------------------------------- map fixture
def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows) if rows else pd.DataFrame({"geometry": pd.Series([], dtype=object)})


def tiny_map_layers() -> dict[str, pd.DataFrame]:
    """Two 50 m roadblocks (2 lanes each, lane index 0 on the left, driving +x) joined by a roadblock connector
    inside an intersection, with a crosswalk, walkway, carpark, stop line and boundaries."""
    lane = lambda fid, group, idx, y0: {  # noqa: E731
        "fid": fid, "lane_fid": fid, "lane_group_fid": group, "lane_index": idx, "speed_limit_mps": 13.4,
        "left_boundary_fid": 900 + fid, "right_boundary_fid": 950 + fid, "extra_column": "ignored",
        "geometry": box(0 if group == 1 else 60, y0, 50 if group == 1 else 110, y0 + 3.5),
    }  # fmt: skip
    lanes = [lane(11, 1, 0, 0.0), lane(12, 1, 1, -3.5), lane(21, 2, 0, 0.0), lane(22, 2, 1, -3.5)]
    connectors = [
        {"fid": 51, "exit_lane_fid": 11, "entry_lane_fid": 21, "lane_group_connector_fid": "31",
         "speed_limit_mps": 8.0, "traffic_light_stop_line_fids": "91,92", "geometry": LineString([(50, 1.75), (60, 1.75)])},
        {"fid": 52, "exit_lane_fid": 12, "entry_lane_fid": 22, "lane_group_connector_fid": "31",
         "speed_limit_mps": None, "traffic_light_stop_line_fids": None, "geometry": LineString([(50, -1.75), (60, -1.75)])},
    ]  # fmt: skip
    baselines = [
        {"fid": 100 + i, "lane_fid": float(fid) if fid else np.nan, "lane_connector_fid": float(conn) if conn else np.nan,
         "geometry": LineString([(x0, y), (x1, y)])}
        for i, (fid, conn, x0, x1, y) in enumerate([
            (11, None, 0, 50, 1.75), (12, None, 0, 50, -1.75), (21, None, 60, 110, 1.75), (22, None, 60, 110, -1.75),
            (None, 51, 50, 60, 1.75), (None, 52, 50, 60, -1.75)])
    ]  # fmt: skip
    return {
        "lanes_polygons": _frame(lanes),
        "lane_connectors": _frame(connectors),
        "gen_lane_connectors_scaled_width_polygons": _frame([
            {"fid": 1, "lane_connector_fid": 51, "geometry": box(50, 0, 60, 3.5)},
            {"fid": 2, "lane_connector_fid": 52, "geometry": box(50, -3.5, 60, 0)}]),
        "lane_groups_polygons": _frame([
            {"fid": 1, "geometry": box(0, -3.5, 50, 3.5)}, {"fid": 2, "geometry": box(60, -3.5, 110, 3.5)}]),
        "lane_group_connectors": _frame([
            {"fid": 31, "from_lane_group_fid": 1, "to_lane_group_fid": 2, "intersection_fid": 41,
             "geometry": box(50, -3.5, 60, 3.5)}]),
        "baseline_paths": _frame(baselines),
        "boundaries": _frame([
            {"fid": 961, "geometry": LineString([(0, 3.5), (110, 3.5)])},
            {"fid": 962, "geometry": LineString([(0, -3.5), (110, -3.5)])}]),
        "intersections": _frame([{"fid": 41, "geometry": box(50, -5, 60, 5)}]),
        "stop_polygons": _frame([{"fid": 91, "stop_polygon_type_fid": 2, "geometry": box(48, 0, 50, 3.5)}]),
        "crosswalks": _frame([{"fid": 61, "geometry": box(52, -5, 54, 5)}]),
        "walkways": _frame([{"fid": 71, "geometry": box(0, 5, 110, 7)}]),
        "carpark_areas": _frame([{"fid": 81, "geometry": box(0, -20, 20, -10)}]),
        "road_segments": _frame([
            {"fid": 1, "geometry": box(0, -3.5, 50, 3.5)}, {"fid": 2, "geometry": box(60, -3.5, 110, 3.5)}]),
        "generic_drivable_areas": _frame([]),
        "meta": pd.DataFrame({"key": ["projectedCoordSystem", "version"], "value": [CRS, VERSION]}),
    }  # fmt: skip


@pytest.fixture(scope="module")
def maps_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("maps")
    write_gpkg(root / LOCATION / VERSION / "map.gpkg", tiny_map_layers(), CRS)
    write_maps_index(root, {LOCATION: VERSION})
    return root


@pytest.fixture(scope="module")
def tiny_map(maps_root: Path) -> NuPlanMap:
    return load_map(LOCATION, maps_root)


# ---------------------------------------------------------------------------------------------------- map io
def test_gpkg_round_trip_keeps_fids_geometry_and_meta(maps_root: Path) -> None:
    layers = read_gpkg_layers(maps_root / LOCATION / VERSION / "map.gpkg")
    lanes = layers["lanes_polygons"]
    assert list(lanes.index) == ["11", "12", "21", "22"] == list(lanes["fid"])
    assert lanes.attrs["crs"] == CRS
    assert shapely.equals(lanes.loc["21", "geometry"], box(60, 0, 110, 3.5))
    assert "geometry" not in layers["meta"].columns
    assert dict(zip(layers["meta"]["key"], layers["meta"]["value"]))["projectedCoordSystem"] == CRS
    index = json.loads((maps_root / "nuplan-maps-v1.0.json").read_text())
    assert index == {LOCATION: {"version": VERSION, "layers": {}}}
    assert not [p for p in (maps_root / LOCATION / VERSION).iterdir() if p.name != "map.gpkg"]  # no temp files left


def test_utm_projection_matches_a_published_point() -> None:
    easting, northing = lonlat_to_utm(-79.387139, 43.642567, 17, south=False)  # CN Tower, UTM 17T
    assert abs(easting - 630084) < 1.0 and abs(northing - 4833438) < 1.0


def test_wgs84_map_is_reprojected_to_the_meta_utm_zone(tmp_path: Path) -> None:
    """nuPlan stores lon/lat and names the UTM zone in `meta`; the reader projects without pyproj."""
    lon0, lat0 = -71.06, 42.36
    to_lonlat = lambda xy: np.column_stack(  # noqa: E731  (metres east/north of (lon0, lat0), roughly)
        [lon0 + xy[:, 0] / (111_320.0 * np.cos(np.radians(lat0))), lat0 + xy[:, 1] / 110_540.0])
    layers = {name: df.assign(geometry=shapely.transform(df["geometry"].to_numpy(dtype=object), to_lonlat))
              if "geometry" in df.columns else df for name, df in tiny_map_layers().items()}  # fmt: skip
    m = NuPlanMap.from_gpkg(write_gpkg(tmp_path / "wgs84.gpkg", layers, "EPSG:4326"), LOCATION)
    assert m.projected_crs == CRS
    assert m.lanes["11"].baseline_path.length == pytest.approx(50.0, rel=0.01)
    assert m.lanes["11"].polygon.area == pytest.approx(175.0, rel=0.02)
    easting, northing = lonlat_to_utm(lon0, lat0, 19, south=False)
    assert np.allclose(m.lanes["11"].baseline_path.coords[0], [easting, northing + 1.75], atol=0.5)
    layers["meta"] = pd.DataFrame({"key": ["projectedCoordSystem"], "value": ["EPSG:3857"]})
    with pytest.raises(MapFormatError, match=r"wgs84b\.gpkg.*pyproj"):
        NuPlanMap.from_gpkg(write_gpkg(tmp_path / "wgs84b.gpkg", layers, "EPSG:4326"), LOCATION)


# --------------------------------------------------------------------------------------------------- map api
def test_lane_graph_edges(tiny_map: NuPlanMap) -> None:
    m = tiny_map
    assert set(m.lanes) == {"11", "12", "21", "22"}
    assert m.lanes["11"].outgoing_edges == ["51"] and m.lanes["21"].incoming_edges == ["51"]
    assert m.lanes["11"].roadblock_id == "1" and m.lanes["11"].speed_limit_mps == pytest.approx(13.4)
    assert m.lanes["11"].right_neighbour_id == "12" and m.lanes["11"].left_neighbour_id is None
    assert m.lanes["12"].left_neighbour_id == "11" and m.lanes["12"].right_neighbour_id is None
    assert m.lanes["11"].baseline_path.length == pytest.approx(50.0)
    conn = m.lane_connectors["51"]
    assert conn.incoming_edges == ["11"] and conn.outgoing_edges == ["21"] and conn.roadblock_id == "31"
    assert conn.traffic_light_stop_line_ids == ["91", "92"] and conn.speed_limit_mps == 8.0
    assert m.lane_connectors["52"].speed_limit_mps is None
    assert m.roadblocks["1"].interior_edges == ["11", "12"] and m.roadblocks["1"].outgoing_edges == ["31"]
    assert m.roadblocks["2"].incoming_edges == ["31"]
    rbc = m.roadblock_connectors["31"]
    assert rbc.interior_edges == ["51", "52"] and rbc.incoming_edges == ["1"] and rbc.outgoing_edges == ["2"]
    assert rbc.intersection_id == "41"
    assert m.get_map_object("51", L.LANE_CONNECTOR) is conn
    assert m.get_map_object("51", L.LANE) is None
    assert m.projected_crs == CRS


def test_proximity_queries(tiny_map: NuPlanMap) -> None:
    near = tiny_map.get_proximal_map_objects((55.0, 1.0), 2.0, [L.LANE, L.LANE_CONNECTOR, L.INTERSECTION, L.CROSSWALK])
    assert near[L.LANE] == [] and sorted(near[L.LANE_CONNECTOR]) == ["51", "52"]
    assert near[L.INTERSECTION] == ["41"] and near[L.CROSSWALK] == ["61"]
    edge = tiny_map.get_proximal_map_objects((49.0, 1.0), 1.5, [L.LANE, L.ROADBLOCK, L.ROADBLOCK_CONNECTOR])
    assert sorted(edge[L.LANE]) == ["11", "12"] and edge[L.ROADBLOCK] == ["1"] and edge[L.ROADBLOCK_CONNECTOR] == ["31"]


def test_point_in_layer_and_drivable_area(tiny_map: NuPlanMap) -> None:
    points = np.array([[10.0, 1.0], [10.0, -1.0], [55.0, 0.5], [10.0, 6.0], [10.0, -15.0], [10.0, 3.5]])
    assert tiny_map.points_in_layer(points, L.LANE).tolist() == [True, True, False, False, False, False]
    assert tiny_map.points_in_layer(points, L.INTERSECTION).tolist() == [False, False, True, False, False, False]
    assert tiny_map.points_in_layer(points, L.DRIVABLE_AREA).tolist() == [True, True, True, False, True, False]
    assert tiny_map.is_in_layer((10.0, 6.0), L.WALKWAYS) and not tiny_map.is_in_layer((10.0, 3.5), L.LANE)
    assert tiny_map.objects_containing_points(points[:3], L.LANE) == [["11"], ["12"], []]
    # road segments + intersection + carpark, unioned: 50*7*2 + 10*10 + 20*10
    assert tiny_map.drivable_area.area == pytest.approx(700 + 100 + 200)
    assert tiny_map.drivable_area.contains(shapely.Point(55, 4.5))


def test_nearest_lanes(tiny_map: NuPlanMap) -> None:
    nearest = tiny_map.nearest_lanes((55.0, 1.5), k=2)
    assert [i for i, _ in nearest] == ["51", "52"] and nearest[0][1] == pytest.approx(0.25)
    assert tiny_map.nearest_lanes((55.0, 1.5), k=1, include_connectors=False)[0][0] in {"11", "21"}
    far = tiny_map.nearest_lanes((500.0, 300.0), k=3)  # the search square must grow to reach the map
    brute = sorted((lane.baseline_path.distance(shapely.Point(500, 300)), i)
                   for i, lane in {**tiny_map.lanes, **tiny_map.lane_connectors}.items())[:3]  # fmt: skip
    assert far == [(i, pytest.approx(d)) for d, i in brute]


def test_in_memory_map_normalises_int_and_str_ids() -> None:
    layers = tiny_map_layers()
    layers["lanes_polygons"] = layers["lanes_polygons"].assign(lane_group_fid=["1", "1", "2", "2"])
    m = NuPlanMap(layers, LOCATION)
    assert m.roadblocks["2"].interior_edges == ["21", "22"]


def test_map_errors_name_the_problem(tmp_path: Path, maps_root: Path) -> None:
    with pytest.raises(ValueError, match="us-nv-las-vegas-strip"):
        load_map("atlantis", maps_root)
    with pytest.raises(FileNotFoundError, match="nuplan-maps-v1.0.json"):
        load_map(LOCATION, tmp_path)
    write_maps_index(tmp_path, {"sg-one-north": "9.17.1964"})
    with pytest.raises(FileNotFoundError, match="sg-one-north/9.17.1964/map.gpkg"):
        load_map("sg-one-north", tmp_path)
    layers = tiny_map_layers()
    layers["lane_connectors"] = layers["lane_connectors"].drop(columns=["entry_lane_fid"])
    with pytest.raises(MapFormatError, match="lane_connectors.*entry_lane_fid"):
        NuPlanMap(layers, LOCATION)
    del layers["baseline_paths"]
    path = write_gpkg(tmp_path / "broken.gpkg", layers, CRS)
    with pytest.raises(MapFormatError, match=r"broken\.gpkg.*baseline_paths"):
        NuPlanMap.from_gpkg(path, LOCATION)
    assert map_api.canonical_location("las_vegas") == "us-nv-las-vegas-strip"


# ------------------------------------------------------------------------------------------------ safe pickle
class _Evil:
    def __reduce__(self):  # what a malicious log would do on plain pickle.load
        return (os.system, ("echo pwned",))


def test_safe_pickle_refuses_code_and_accepts_numpy(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps([{"token": _Evil()}]))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*system"):
        load_pickle(evil)
    data = {"a": np.arange(6.0).reshape(2, 3), "b": np.float32(1.5), "c": np.array(["x", "yz"]), "d": (1, None, "s"),
            "e": np.dtype("int16"), "f": {1, 2}, "g": np.array([True, False])}  # fmt: skip
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        path = tmp_path / f"ok{protocol}.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        back = load_pickle(path)
        assert np.array_equal(back["a"], data["a"]) and back["b"] == np.float32(1.5) and back["e"] == np.int16
        assert list(back["c"]) == ["x", "yz"] and back["d"] == (1, None, "s") and back["f"] == {1, 2}
    dump_pickle_atomic(data, tmp_path / "atomic.pkl")
    assert np.array_equal(load_pickle(tmp_path / "atomic.pkl")["g"], data["g"])


def test_truncated_pickle_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps([{"x": np.zeros(100)}] * 3)[:50])
    with pytest.raises(CorruptLogError, match=r"cut\.pkl"):
        load_pickle(path)


# ------------------------------------------------------------------------------------------------------- pcd
def test_pcd_binary_round_trip_and_ascii(tmp_path: Path) -> None:
    points = np.random.default_rng(0).normal(size=(6, 50)).astype(np.float32)
    back = read_pcd(write_pcd(tmp_path / "a.pcd", points))
    assert back.dtype == np.float32 and back.shape == (6, 50) and np.array_equal(back, points)
    ascii_pcd = tmp_path / "b.pcd"
    ascii_pcd.write_text(
        "VERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 1\nTYPE F F F U\nCOUNT 1 1 1 1\nWIDTH 2\nHEIGHT 1\n"
        "POINTS 2\nDATA ascii\n1 2 3 200\n4 5 6 7\n"
    )
    assert read_pcd(ascii_pcd).tolist() == [[1, 4], [2, 5], [3, 6], [200, 7], [0, 0], [0, 0]]
    bad = tmp_path / "bad.pcd"
    bad.write_text("VERSION 0.7\nFIELDS x y\nSIZE 4 4\nTYPE F F\nPOINTS 0\nDATA binary\n")
    with pytest.raises(PCDFormatError, match=r"bad\.pcd.*x, y or z"):
        read_pcd(bad)
    short = tmp_path / "short.pcd"
    short.write_bytes((tmp_path / "a.pcd").read_bytes()[:-10])
    with pytest.raises(PCDFormatError, match=r"short\.pcd"):
        read_pcd(short)


# ----------------------------------------------------------------------------------------------- log fixture
LOG_A = "2021.05.12.19.36.12_veh-35_00005_00204"
LOG_B = "2021.06.03.13.12.04_veh-26_00013_00133"
HEADING = 0.3  # the ego drives straight along this heading, 5 m per frame
NO_ROUTE_FRAME = 4  # frame of log A without roadblock ids: the current frame of window start 1


def _frame_dict(log: str, index: int, with_route: bool) -> dict:
    token = hashlib.sha1(f"{log}/{index}".encode()).hexdigest()[:16]
    position = np.array([600000.0 + 5.0 * index * np.cos(HEADING), 4700000.0 + 5.0 * index * np.sin(HEADING), 0.0])
    rotation = quaternion_from_yaw(HEADING)
    cams = {
        key: {"data_path": f"{log}/{key}/{token}.jpg", "sensor2lidar_rotation": np.eye(3),
              "sensor2lidar_translation": np.zeros(3), "cam_intrinsic": np.eye(3), "distortion": np.zeros(5)}
        for key in CAMERA_KEYS
    }  # fmt: skip
    return {
        "token": token, "frame_idx": index, "timestamp": 1_620_000_000_000_000 + 500_000 * index, "log_name": log,
        "log_token": f"log-{log}", "scene_name": f"log-0001-scene-{index // 40}", "scene_token": f"scene-{log[:4]}",
        "map_location": LOCATION, "roadblock_ids": ["1", "31", "2"] if with_route else [], "vehicle_name": "veh",
        "can_bus": np.concatenate([position, rotation, np.zeros(11)]), "lidar_path": f"{log}/MergedPointCloud/{token}.pcd",
        "lidar2ego_translation": np.zeros(3), "lidar2ego_rotation": [1.0, 0.0, 0.0, 0.0],
        "ego2global_translation": position, "ego2global_rotation": rotation, "ego2global": np.eye(4),
        "lidar2ego": np.eye(4), "lidar2global": np.eye(4), "ego_dynamic_state": [10.0, 0.1, 0.5, -0.2],
        "traffic_lights": [(51, index % 2 == 0)], "driving_command": np.array([0, 1, 0, 0]), "cams": cams,
        "sample_prev": None, "sample_next": None,
        "anns": {"gt_boxes": np.array([[10.0, 2.0, 0.0, 4.5, 2.0, 1.6, 0.1]]), "gt_names": np.array(["vehicle"]),
                 "gt_velocity_3d": np.array([[3.0, 0.0, 0.0]]), "instance_tokens": [f"inst{index}"],
                 "track_tokens": ["track-0"]},
    }  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, maps_root: Path) -> Path:
    """`navsim_logs/mini/` with log A (16 frames, sensors on disk) and log B (15 frames, no sensor files)."""
    root = tmp_path_factory.mktemp("dataset")
    logs = {
        LOG_A: [_frame_dict(LOG_A, i, with_route=i != NO_ROUTE_FRAME) for i in range(16)],
        LOG_B: [_frame_dict(LOG_B, i, with_route=True) for i in range(15)],
    }
    for log, frames in logs.items():
        dump_pickle_atomic(frames, root / "navsim_logs" / "mini" / f"{log}.pkl")
    blobs = root / "sensor_blobs" / "mini"
    for i, frame in enumerate(logs[LOG_A]):
        for key, cam in frame["cams"].items():
            (blobs / cam["data_path"]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((6, 8, 3), 10 * i, dtype=np.uint8)).save(blobs / cam["data_path"])
        write_pcd(blobs / frame["lidar_path"], np.full((6, 5), float(i), dtype=np.float32))
    return root


def _loader(dataset: Path, maps_root: Path | None = None, **filter_kwargs) -> SceneLoader:
    return SceneLoader(
        dataset / "navsim_logs" / "mini", dataset / "sensor_blobs" / "mini", SceneFilter(**filter_kwargs),
        maps_root=maps_root,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------- loader
def test_window_semantics(dataset: Path) -> None:
    # 14-frame windows. Non-overlapping: one full window per log. Stride 1: starts 0..2 in A, 0..1 in B.
    assert len(_loader(dataset)) == 2
    assert len(_loader(dataset, frame_interval=1, has_route=False)) == 5
    stride_one = _loader(dataset, frame_interval=1)  # A's window starting at 1 has a route-less current frame
    assert len(stride_one) == 4
    per_log = stride_one.get_tokens_list_per_log()
    assert {log: len(tokens) for log, tokens in per_log.items()} == {LOG_A: 2, LOG_B: 2}
    a_frames = load_pickle(dataset / "navsim_logs" / "mini" / f"{LOG_A}.pkl")
    assert per_log[LOG_A] == [a_frames[3]["token"], a_frames[5]["token"]]  # current frame = history - 1
    assert stride_one.tokens_stage_one == stride_one.tokens
    assert len(_loader(dataset, frame_interval=1, max_scenes=3)) == 3
    # spread_tokens takes a run from every log in turn; navsim's max_scenes takes a prefix of log A then B
    assert stride_one.spread_tokens(3) == [*per_log[LOG_A], per_log[LOG_B][0]]
    assert stride_one.spread_tokens(2) == per_log[LOG_A]  # two at a time, so that EC has a pair
    assert stride_one.spread_tokens(None) == stride_one.spread_tokens(9) == stride_one.tokens
    assert _loader(dataset, frame_interval=1, max_scenes=2).tokens == per_log[LOG_A]
    assert _loader(dataset, frame_interval=1, tokens=[a_frames[5]["token"], "nope"]).tokens == [a_frames[5]["token"]]
    assert _loader(dataset, frame_interval=1, log_names=[LOG_B]).get_tokens_list_per_log().keys() == {LOG_B}
    # 12-frame windows: starts 0..4 in A (minus the route-less one) and 0..3 in B
    assert len(_loader(dataset, num_history_frames=4, num_future_frames=8, frame_interval=1)) == 4 + 4


def test_scene_trajectories_and_agent_input(dataset: Path, maps_root: Path) -> None:
    loader = _loader(dataset, maps_root)
    token = loader.tokens[0]
    scene = loader.get_scene_from_token(token)
    meta = scene.scene_metadata
    assert meta.initial_token == token and meta.log_name == LOG_A and meta.map_name == LOCATION
    assert meta == loader.scene_metadata(token) and len(scene.frames) == 14
    assert scene.frames[3].ego_status.ego_pose[2] == pytest.approx(HEADING)
    assert scene.frames[3].ego_status.in_global_frame
    future = scene.get_future_trajectory(8).poses
    assert np.allclose(future[:, 0], 5.0 * np.arange(1, 9), atol=1e-4) and np.allclose(future[:, 1:], 0, atol=1e-5)
    history = scene.get_history_trajectory().poses
    assert np.allclose(history[:, 0], [-15, -10, -5, 0], atol=1e-4) and np.allclose(history[-1], 0)
    frame = scene.frames[0]
    assert frame.traffic_lights == [(51, True)] and frame.roadblock_ids == ["1", "31", "2"]
    assert frame.annotations.names == ["vehicle"] and frame.annotations.boxes.shape == (1, 7)
    assert frame.annotations.track_tokens == ["track-0"]
    agent_input = loader.get_agent_input_from_token(token)
    assert len(agent_input.ego_statuses) == 4
    assert np.allclose(agent_input.ego_statuses[-1].ego_pose, 0) and not agent_input.ego_statuses[-1].in_global_frame
    assert agent_input.ego_statuses[0].ego_pose[0] == pytest.approx(-15.0, abs=1e-4)
    assert np.allclose(agent_input.ego_statuses[-1].ego_velocity, [10.0, 0.1])
    assert np.allclose(agent_input.ego_statuses[-1].ego_acceleration, [0.5, -0.2])
    assert agent_input.cameras[0].cam_f0.image is None and agent_input.lidars[0].lidar_pc is None
    # the map is read only when the scene asks for it, then shared
    assert sorted(scene.map_api.lanes) == ["11", "12", "21", "22"]
    assert scene.map_api.load() is load_map(LOCATION, maps_root)
    assert pickle.loads(pickle.dumps(scene.map_api)).location == LOCATION


def test_sensors_loaded_only_when_asked(dataset: Path) -> None:
    config = SensorConfig(cam_f0=[3], cam_l0=True, lidar_pc=[0, 3])
    loader = SceneLoader(dataset / "navsim_logs" / "mini", dataset / "sensor_blobs" / "mini",
                         SceneFilter(log_names=[LOG_A]), config)  # fmt: skip
    agent_input = loader.get_agent_input_from_token(loader.tokens[0])
    front = agent_input.cameras[3].cam_f0
    assert front.image.dtype == np.uint8 and front.image.shape == (6, 8, 3) and front.image[0, 0, 0] == 30
    assert front.intrinsics.shape == (3, 3) and front.camera_path.name.endswith(".jpg")
    assert agent_input.cameras[2].cam_f0.image is None
    assert all(c.cam_l0.image is not None for c in agent_input.cameras)
    assert all(c.cam_b0.image is None for c in agent_input.cameras)
    assert [lidar.lidar_pc is not None for lidar in agent_input.lidars] == [True, False, False, True]
    assert agent_input.lidars[3].lidar_pc.shape == (6, 5) and agent_input.lidars[3].lidar_pc[0, 0] == 3.0
    scene = loader.get_scene_from_token(loader.tokens[0])
    assert all(f.lidar.lidar_pc is None and f.cameras.cam_l0.image is None for f in scene.frames[4:])
    missing = SceneLoader(dataset / "navsim_logs" / "mini", dataset / "sensor_blobs" / "mini",
                          SceneFilter(log_names=[LOG_B]), SensorConfig(lidar_pc=[3]))  # fmt: skip
    with pytest.raises(FileNotFoundError, match=rf"lidar_pc.*{LOG_B}/MergedPointCloud/.*\.pcd"):
        missing.get_agent_input_from_token(missing.tokens[0])


def test_bad_logs_raise_or_are_skipped(tmp_path: Path, dataset: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    good = (dataset / "navsim_logs" / "mini" / f"{LOG_A}.pkl").read_bytes()
    (logs / f"{LOG_A}.pkl").write_bytes(good)
    (logs / "broken.pkl").write_bytes(good[: len(good) // 3])
    with pytest.raises(CorruptLogError, match=r"broken\.pkl"):
        SceneLoader(logs, tmp_path, SceneFilter())
    with pytest.warns(UserWarning, match=r"broken\.pkl"):
        loader = SceneLoader(logs, tmp_path, SceneFilter(), skip_bad_logs=True)
    assert list(loader.get_tokens_list_per_log()) == [LOG_A]
    frames = load_pickle(logs / f"{LOG_A}.pkl")
    del frames[2]["ego_dynamic_state"]
    (logs / "broken.pkl").unlink()
    dump_pickle_atomic(frames, logs / "nokey.pkl")
    with pytest.raises(LogFormatError, match=r"nokey\.pkl: frame 2 lacks key\(s\) \['ego_dynamic_state'\]"):
        SceneLoader(logs, tmp_path, SceneFilter())


def test_load_split(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(load_split("navmini", dataset)) == 2
    assert len(load_split("mini", dataset, frame_interval=1)) == 4
    assert load_split("mini", dataset, frame_interval=1).scene_filter.num_future_frames == 10
    monkeypatch.setenv("OPENSCENE_DATA_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"navsim_logs/trainval.*OPENSCENE_DATA_ROOT"):
        load_split("navtrain")
    with pytest.raises(ValueError, match="navtest"):
        load_split("navhard")
    with pytest.raises(FileNotFoundError, match=r"sensor_blobs/test"):
        (tmp_path / "navsim_logs" / "test").mkdir(parents=True)
        load_split("navtest", sensor_config=SensorConfig(lidar_pc=True))
