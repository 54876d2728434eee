"""The synthetic world: maps through the real GPKG reader, complete log pickles, the loader, the expert.

Most tests read the session's tiny data set (`synthetic_root`, see conftest.py); determinism and the road
network are checked on single tiles and logs generated here.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest

from irlvla_env.cli import main as cli_main
from irlvla_env.navsim.dataclasses import CAMERA_KEYS, MAP_LOCATIONS
from irlvla_env.navsim.loader import load_split
from irlvla_env.navsim.map_api import NuPlanMap, SemanticMapLayer as L, load_map
from irlvla_env.navsim.map_io import gpkg_path, list_gpkg_layers, read_maps_index
from irlvla_env.navsim.pcd import read_pcd
from irlvla_env.navsim.safe_pickle import load_pickle
from irlvla_env.synthetic.config import MAP_VERSIONS, SPLITS, SynthConfig
from irlvla_env.synthetic.generate import ensure_dataset, generate_log, plan_logs, read_manifest
from irlvla_env.synthetic.road_network import in_memory_layers
from irlvla_env.synthetic.scenarios import FAMILIES, build_tile
from irlvla_env.synthetic.cli import scene_counts

FRAME_KEYS = {
    "token", "frame_idx", "timestamp", "log_name", "log_token", "scene_name", "scene_token", "map_location",
    "roadblock_ids", "vehicle_name", "can_bus", "lidar_path", "lidar2ego_translation", "lidar2ego_rotation",
    "ego2global_translation", "ego2global_rotation", "ego2global", "lidar2ego", "lidar2global",
    "ego_dynamic_state", "traffic_lights", "driving_command", "cams", "sample_prev", "sample_next", "anns",
}  # fmt: skip
GPKG_LAYERS = {
    "lanes_polygons", "lane_connectors", "gen_lane_connectors_scaled_width_polygons", "lane_groups_polygons",
    "lane_group_connectors", "baseline_paths", "boundaries", "intersections", "stop_polygons", "crosswalks",
    "walkways", "carpark_areas", "road_segments", "generic_drivable_areas", "meta",
}  # fmt: skip
REAR_AXLE_TO_FRONT, REAR_AXLE_TO_BACK, HALF_WIDTH = 4.049, 1.127, 1.1485


def _all_logs(root: Path) -> dict[str, list[dict]]:
    return {p.stem: load_pickle(p) for p in sorted((root / "navsim_logs").glob("*/*.pkl"))}


@pytest.fixture(scope="module")
def logs(synthetic_root: Path) -> dict[str, list[dict]]:
    return _all_logs(synthetic_root)


@pytest.fixture(scope="module")
def manifest(synthetic_root: Path) -> dict:
    data = read_manifest(synthetic_root)
    assert data is not None
    return data


def _short_spec(family: str = "lane_drop_merge", frames: int = 14):
    config = dataclasses.replace(SynthConfig.tiny(), families=(family,))
    spec = dataclasses.replace(plan_logs(config)[0], num_frames=frames)
    return spec, config


def test_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    spec, config = _short_spec()
    for name in ("a", "b"):
        generate_log((spec, config, str(tmp_path / name)))
    pkl = Path("navsim_logs") / spec.data_split / f"{spec.log_name}.pkl"
    assert (tmp_path / "a" / pkl).read_bytes() == (tmp_path / "b" / pkl).read_bytes()
    frame = load_pickle(tmp_path / "a" / pkl)[5]
    blobs = Path("sensor_blobs") / spec.data_split
    jpg = blobs / frame["cams"]["CAM_F0"]["data_path"]
    assert (tmp_path / "a" / jpg).read_bytes() == (tmp_path / "b" / jpg).read_bytes()
    pcd = blobs / frame["lidar_path"]
    assert np.array_equal(read_pcd(tmp_path / "a" / pcd), read_pcd(tmp_path / "b" / pcd))
    other = dataclasses.replace(spec, seed=spec.seed + 1)
    generate_log((other, config, str(tmp_path / "c")))
    assert (tmp_path / "c" / pkl).read_bytes() != (tmp_path / "a" / pkl).read_bytes()


def test_plan_keeps_splits_on_disjoint_maps_and_covers_families() -> None:
    specs = plan_logs(SynthConfig.default())
    by_split = {s: {spec.location for spec in specs if spec.split == s} for s in SPLITS}
    assert by_split["navtrain"] == {"us-nv-las-vegas-strip", "us-ma-boston"}
    assert by_split["navtest"].isdisjoint(by_split["navtrain"]) and by_split["navmini"].isdisjoint(by_split["navtest"])
    assert {spec.family for spec in specs if spec.split == "navtrain"} == set(FAMILIES)
    assert len({spec.log_name for spec in specs}) == len(specs)
    assert plan_logs(SynthConfig.default()) == specs


def test_every_frame_has_every_key_with_the_right_types(logs: dict[str, list[dict]]) -> None:
    assert len(logs) == 6
    for log_name, frames in logs.items():
        for i, frame in enumerate(frames):
            assert set(frame) == FRAME_KEYS
            assert len(frame["token"]) == 16 and int(frame["token"], 16) >= 0
            assert frame["log_name"] == log_name and frame["map_location"] in MAP_LOCATIONS
            assert frame["can_bus"].shape == (18,)
            assert np.allclose(frame["can_bus"][:3], frame["ego2global_translation"])
            assert np.allclose(frame["can_bus"][3:7], frame["ego2global_rotation"])
            assert frame["ego2global"].shape == (4, 4) and np.allclose(frame["ego2global"][:3, 3], frame["ego2global_translation"])
            assert np.allclose(frame["lidar2global"], frame["ego2global"] @ frame["lidar2ego"])
            assert len(frame["ego_dynamic_state"]) == 4 and all(isinstance(v, float) for v in frame["ego_dynamic_state"])
            assert frame["driving_command"].shape == (4,) and frame["driving_command"].sum() == 1
            assert all(isinstance(c, int) and isinstance(r, bool) for c, r in frame["traffic_lights"])
            assert set(frame["cams"]) == set(CAMERA_KEYS)
            for cam in frame["cams"].values():
                assert cam["cam_intrinsic"].shape == (3, 3) and cam["sensor2lidar_rotation"].shape == (3, 3)
                assert cam["data_path"].startswith(f"{log_name}/") and cam["data_path"].endswith(".jpg")
            assert frame["sample_prev"] == (frames[i - 1]["token"] if i else None)
            assert frame["sample_next"] == (frames[i + 1]["token"] if i + 1 < len(frames) else None)
            anns = frame["anns"]
            n = len(anns["gt_boxes"])
            assert anns["gt_boxes"].shape == (n, 7) and anns["gt_velocity_3d"].shape == (n, 3)
            assert len(anns["gt_names"]) == len(anns["instance_tokens"]) == len(anns["track_tokens"]) == n
            assert set(anns["gt_names"]) <= {"vehicle", "pedestrian", "bicycle", "traffic_cone", "barrier", "generic_object"}
            assert all(isinstance(r, str) for r in frame["roadblock_ids"]) and frame["roadblock_ids"]
        stamps = np.array([f["timestamp"] for f in frames])
        assert np.all(np.diff(stamps) == 500_000) and stamps[0] > 1.6e15  # µs in 2021


def test_sensor_blobs_exist_for_every_frame(synthetic_root: Path, logs: dict[str, list[dict]]) -> None:
    for frames in logs.values():
        split = next(p.parent.name for p in (synthetic_root / "navsim_logs").glob(f"*/{frames[0]['log_name']}.pkl"))
        blobs = synthetic_root / "sensor_blobs" / split
        for frame in frames:
            assert all((blobs / cam["data_path"]).is_file() for cam in frame["cams"].values())
            points = read_pcd(blobs / frame["lidar_path"])
            assert points.shape[0] == 6 and points.shape[1] > 50


def test_loader_scene_counts_match_the_filter_arithmetic(synthetic_root: Path, manifest: dict) -> None:
    counts = scene_counts(manifest)
    for split in ("navtrain", "navtest", "navmini"):
        loader = load_split(split, synthetic_root, maps_root=synthetic_root / "maps")
        frames = [e["num_frames"] for e in manifest["logs"] if e["split"] == split]
        expected = sum(f - 13 for f in frames) if split != "navmini" else sum(f // 14 for f in frames)
        assert len(loader) == expected == sum(counts[split].values())


def test_navtest_scene_reads_back_like_real_data(navtest_loader) -> None:
    scene = navtest_loader.get_scene_from_token(navtest_loader.tokens[3])
    assert len(scene.frames) == 14 and scene.scene_metadata.map_name == "us-pa-pittsburgh-hazelwood"
    future = scene.get_future_trajectory(8).poses
    assert future.shape == (8, 3) and np.all(np.diff(future[:, 0]) > -0.5)  # the human drives forwards
    assert scene.map_api.roadblocks  # the lazily loaded map is the GPKG written by the generator


def test_maps_load_through_the_gpkg_reader(synthetic_maps_root: Path, logs: dict[str, list[dict]]) -> None:
    index = read_maps_index(synthetic_maps_root)
    assert set(index) == {"us-nv-las-vegas-strip", "us-ma-boston", "us-pa-pittsburgh-hazelwood", "sg-one-north"}
    for location, entry in index.items():
        assert entry["version"] == MAP_VERSIONS[location]
        assert set(list_gpkg_layers(gpkg_path(synthetic_maps_root, location, entry["version"]))) >= GPKG_LAYERS
    sizes = np.zeros(5, dtype=int)
    for frames in logs.values():
        map_api = load_map(frames[0]["map_location"], synthetic_maps_root)
        assert map_api.projected_crs.startswith("EPSG:326") and map_api.lanes and map_api.walkways
        sizes += [len(m) for m in (map_api.intersections, map_api.crosswalks, map_api.stop_lines,
                                   map_api.carpark_areas, map_api.drivable_areas)]  # fmt: skip
        route = frames[0]["roadblock_ids"]
        assert all(rb in map_api.roadblocks or rb in map_api.roadblock_connectors for rb in route)
        x, y = frames[0]["ego2global_translation"][:2]
        assert x > 1e5 and y > 1e5  # real-looking UTM coordinates
    assert np.all(sizes > 0)


def test_traffic_lights_reference_signalised_connectors(synthetic_maps_root: Path, logs: dict[str, list[dict]]) -> None:
    seen_red = seen_green = 0
    for frames in logs.values():
        map_api = load_map(frames[0]["map_location"], synthetic_maps_root)
        for frame in frames:
            for connector, is_red in frame["traffic_lights"]:
                conn = map_api.lane_connectors[str(connector)]
                assert conn.traffic_light_stop_line_ids and all(s in map_api.stop_lines for s in conn.traffic_light_stop_line_ids)
                seen_red += is_red
                seen_green += not is_red
    assert seen_red > 0 and seen_green > 0


def test_expert_stays_on_drivable_area_within_comfort_bounds(synthetic_maps_root: Path, logs: dict[str, list[dict]]) -> None:
    for frames in logs.values():
        map_api = load_map(frames[0]["map_location"], synthetic_maps_root)
        pose = np.array([[*f["ego2global_translation"][:2], 2 * np.arctan2(f["ego2global_rotation"][3], f["ego2global_rotation"][0])] for f in frames])
        c, s = np.cos(pose[:, 2]), np.sin(pose[:, 2])
        corners = np.concatenate([
            np.column_stack([pose[:, 0] + c * fx - s * fy, pose[:, 1] + s * fx + c * fy])
            for fx in (REAR_AXLE_TO_FRONT, -REAR_AXLE_TO_BACK) for fy in (HALF_WIDTH, -HALF_WIDTH)
        ])  # fmt: skip
        drivable = np.zeros(len(corners), dtype=bool)
        for layer in (L.ROADBLOCK, L.INTERSECTION, L.CARPARK_AREA):
            drivable |= map_api.points_in_layer(corners, layer)
        assert drivable.all(), f"{frames[0]['log_name']}: ego corner off the drivable area"
        dynamics = np.array([f["ego_dynamic_state"] for f in frames])
        yaw_rate = np.array([f["can_bus"][15] for f in frames])
        assert np.all(dynamics[:, 0] >= 0) and np.all(dynamics[:, 0] < 20)
        assert np.all(np.abs(dynamics[:, 2]) < 3.6) and np.all(np.abs(yaw_rate) < 0.9)
        # Logged velocity agrees with the pose track (rear axle, 0.5 s apart).
        step = np.linalg.norm(np.diff(pose[:, :2], axis=0), axis=1) / 0.5
        mean_speed = 0.5 * (dynamics[1:, 0] + dynamics[:-1, 0])
        assert np.all(np.abs(step - mean_speed) < 0.6)


def test_driving_commands_take_several_values(logs: dict[str, list[dict]]) -> None:
    commands = {int(np.argmax(f["driving_command"])) for frames in logs.values() for f in frames}
    assert len(commands) > 1 and 1 in commands


def test_boxes_are_in_the_ego_frame_with_unwrapped_relative_heading(logs: dict[str, list[dict]]) -> None:
    still_tracks = 0
    for frames in logs.values():
        seen: dict[str, list[np.ndarray]] = {}
        for frame in frames:
            t, q = frame["ego2global_translation"], frame["ego2global_rotation"]
            yaw = 2 * np.arctan2(q[3], q[0])
            c, s = np.cos(yaw), np.sin(yaw)
            anns = frame["anns"]
            for box, vel, track in zip(anns["gt_boxes"], anns["gt_velocity_3d"], anns["track_tokens"]):
                global_pose = np.array([t[0] + c * box[0] - s * box[1], t[1] + s * box[0] + c * box[1], box[6] + yaw])
                seen.setdefault(track, []).append(np.append(global_pose, np.linalg.norm(vel)))
            assert np.all(np.abs(anns["gt_boxes"][:, 6]) < 2 * np.pi)  # relative to the ego, not wrapped
        for rows in seen.values():  # whatever stands still appears at one global pose in every frame
            rows = np.array(rows)
            if len(rows) >= 2 and np.all(rows[:, 3] == 0.0):
                assert np.ptp(rows[:, :2], axis=0).max() < 1e-6
                assert np.ptp(np.angle(np.exp(1j * rows[:, 2]))) < 1e-6
                still_tracks += 1
    assert still_tracks > 0


@pytest.mark.parametrize("left_hand", [False, True])
def test_road_network_layers_and_lane_order(left_hand: bool) -> None:
    rng = np.random.default_rng(3)
    tile = build_tile("intersection_unprotected", 100_000, (660_000.0, 3_990_000.0), rng, 300.0, left_hand)
    layers = tile.network.to_layers("EPSG:32611")
    assert set(layers) == GPKG_LAYERS
    assert {"lane_fid", "lane_group_fid", "lane_index", "speed_limit_mps", "left_boundary_fid", "right_boundary_fid"} <= set(layers["lanes_polygons"])
    assert {"exit_lane_fid", "entry_lane_fid", "lane_group_connector_fid", "traffic_light_stop_line_fids"} <= set(layers["lane_connectors"])
    map_api = NuPlanMap(in_memory_layers(layers), "us-nv-las-vegas-strip")
    checked = 0
    for lane in map_api.lanes.values():
        if lane.left_neighbour_id is None:
            continue
        # nuPlan numbers lanes from the left: the left neighbour lies to the left of the direction of travel.
        coords = np.asarray(lane.baseline_path.coords)
        heading = np.arctan2(*(coords[-1] - coords[0])[::-1])
        other = np.asarray(map_api.lanes[lane.left_neighbour_id].baseline_path.interpolate(0.5, normalized=True).coords)[0]
        mid = np.asarray(lane.baseline_path.interpolate(0.5, normalized=True).coords)[0]
        lateral = -np.sin(heading) * (other - mid)[0] + np.cos(heading) * (other - mid)[1]
        assert lateral > 2.0
        checked += 1
    assert checked > 0
    # Every lane connector of the ego route's intersection carries a light and yields where it must.
    conns = [map_api.lane_connectors[str(c)] for c in tile.ego_route if tile.network.lanes[c].is_connector]
    assert conns and all(c.incoming_edges and c.outgoing_edges for c in conns)
    assert map_api.drivable_area.area > 5000


def test_cli_info_reports_scenes_per_split_and_family(synthetic_root: Path, manifest: dict, capsys) -> None:
    assert cli_main(["data", "info", "--root", str(synthetic_root)]) == 0
    out = capsys.readouterr().out
    counts = scene_counts(manifest)
    for split, per_family in counts.items():
        assert split in out
        for family in per_family:
            assert family in out
    assert f"{sum(counts['navtest'].values()):10d}" in out


def test_ensure_dataset_reuses_a_matching_data_set(synthetic_root: Path) -> None:
    stamp = (synthetic_root / "synthetic_manifest.json").stat().st_mtime_ns
    assert ensure_dataset(synthetic_root, SynthConfig.tiny(), maps_root=synthetic_root / "maps") == synthetic_root
    assert (synthetic_root / "synthetic_manifest.json").stat().st_mtime_ns == stamp
    assert SynthConfig.tiny().config_hash() != SynthConfig.tiny(seed=1).config_hash()


def test_logs_hold_only_builtins_and_numpy(logs: dict[str, list[dict]]) -> None:
    frames = next(iter(logs.values()))
    payload = pickle.dumps(frames)
    assert b"irlvla" not in payload and b"shapely" not in payload


def test_config_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        SynthConfig(splits={"navhard": SynthConfig().splits["navtest"]})
    with pytest.raises(ValueError, match="families"):
        SynthConfig(families=("flying_cars",))
