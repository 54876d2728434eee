"""Observations: shapes against the space, LiDAR BEV cells, camera stitching, prompt, cache, BEV targets."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import LineString, box

from irlvla_env.navsim.dataclasses import (
    AgentInput, Annotations, Camera, Cameras, EgoStatus, Frame, Lidar, Scene, SceneMetadata,
)  # fmt: skip
from irlvla_env.observations import (
    MissingSensorError, ObservationCache, ObservationConfig, batch_observations, build_observation, build_prompt,
    observation_space, required_sensors,
)  # fmt: skip
from irlvla_env.observations.lidar_bev import lidar_bev
from irlvla_env.observations.targets import BEV_CLASSES, agent_box_targets, bev_semantic_map

SOLID = {"cam_l0": (255, 0, 0), "cam_f0": (0, 255, 0), "cam_r0": (0, 0, 255)}


def make_agent_input(images: dict[str, np.ndarray] | None = None, points: np.ndarray | None = None,
                     command: int = 0, speed: float = 8.3) -> AgentInput:  # fmt: skip
    """4 frames driving straight along x at `speed`; sensors only at the current frame."""
    if images is None:
        images = {name: np.full((144, 256, 3), colour, dtype=np.uint8) for name, colour in SOLID.items()}
    if points is None:
        points = np.zeros((6, 10), dtype=np.float32)
    statuses, cameras, lidars = [], [], []
    for k in range(4):
        t = (k - 3) * 0.5
        command_one_hot = np.eye(4, dtype=int)[command]
        statuses.append(EgoStatus(ego_pose=[speed * t, 0.0, 0.0], ego_velocity=[speed, 0.0],
                                  ego_acceleration=[0.5, 0.0], driving_command=command_one_hot))  # fmt: skip
        current = k == 3
        cameras.append(Cameras(**{n: Camera(image=img if current else None) for n, img in images.items()}))
        lidars.append(Lidar(lidar_pc=points if current else None))
    return AgentInput(statuses, cameras, lidars)


def test_observation_matches_its_space():
    for config in (ObservationConfig(), ObservationConfig(include_prompt=True, image_height=32, lidar_bev_size=16)):
        obs = build_observation(make_agent_input(), config)
        space = observation_space(config)
        assert space.contains(obs), {k: (getattr(v, "shape", v), getattr(v, "dtype", None)) for k, v in obs.items()}
        assert set(obs) == set(space.spaces)
    obs = build_observation(make_agent_input(), ObservationConfig())
    assert obs["camera"].shape == (64, 256, 3) and obs["camera"].dtype == np.uint8
    assert obs["lidar_bev"].shape == (2, 64, 64) and obs["lidar_bev"].dtype == np.float32
    assert obs["ego_status"].shape == (4, 7)
    np.testing.assert_allclose(obs["ego_status"][:, 0], [-12.45, -8.3, -4.15, 0.0], atol=1e-5)
    np.testing.assert_allclose(obs["ego_status"][-1, 3:], [8.3, 0.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_array_equal(obs["command"], [1, 0, 0, 0])


def test_lidar_bev_counts_points_into_the_right_cells():
    config = ObservationConfig()  # 64 cells over +-32 m: 1 m cells
    cloud = np.array(
        [[10.2, 5.3, 0.0]] * 3  # low points: row floor(32 - 10.2) = 21, col floor(32 - 5.3) = 26
        + [[-20.5, -31.5, 1.0]] * 7  # high points: row 52, col 63, clipped at 5 -> 1.0
        + [[40.0, 0.0, 0.0], [0.0, 0.0, 150.0], [0.5, 0.5, 0.2]],  # out of range, too high, exactly at the split
    ).T
    bev = lidar_bev(np.vstack([cloud, np.zeros((3, cloud.shape[1]))]), config)
    assert bev[0, 21, 26] == pytest.approx(0.6)
    assert bev[1, 52, 63] == pytest.approx(1.0)
    assert bev[0, 31, 31] == pytest.approx(0.2)  # z == split height counts as low
    assert bev[0].sum() == pytest.approx(0.8) and bev[1].sum() == pytest.approx(1.0)


def test_cameras_are_stitched_left_front_right():
    obs = build_observation(make_agent_input(), ObservationConfig())
    strip = obs["camera"]
    columns = strip[strip.shape[0] // 2]
    dominant = np.argmax(columns, axis=1)  # 0 red (left), 1 green (front), 2 blue (right)
    assert dominant[0] == 0 and dominant[-1] == 2 and dominant[strip.shape[1] // 2] == 1
    assert np.all(np.diff(dominant) >= 0)  # red block, then green, then blue
    widths = np.bincount(dominant, minlength=3)
    assert widths[1] > widths[0] and widths[1] > widths[2]  # the front camera keeps its full width
    assert widths.sum() == 256


def test_missing_sensor_error_names_sensor_and_history_index():
    agent_input = make_agent_input()
    agent_input.cameras[3].cam_f0 = Camera()
    with pytest.raises(MissingSensorError, match=r"cam_f0 at history index 3"):
        build_observation(agent_input, ObservationConfig())
    agent_input = make_agent_input()
    agent_input.lidars[3] = Lidar()
    with pytest.raises(MissingSensorError, match=r"lidar_pc at history index 3"):
        build_observation(agent_input, ObservationConfig())


def test_required_sensors_are_the_current_frame_only():
    sensors = required_sensors(ObservationConfig())
    assert sensors.cam_l0 == sensors.cam_f0 == sensors.cam_r0 == sensors.lidar_pc == [3]
    assert sensors.cam_b0 is False and sensors.cam_l1 is False
    assert sensors.wants("cam_f0", 3) and not sensors.wants("cam_f0", 2)


def test_lidar_history_moves_past_sweeps_into_the_current_frame():
    """A parked car seen 0.5 s and 1 s ago (ego driving at 8 m/s) lands in the same cell as now; a car that drove
    with the ego lands behind its current cell by what it drove. Old configs keep their cache hash."""
    config = ObservationConfig(lidar_history=2)
    assert required_sensors(config).lidar_pc == [1, 2, 3]
    assert ObservationConfig().config_hash() == ObservationConfig(lidar_history=0).config_hash() != config.config_hash()
    assert "lidar_history" not in ObservationConfig().to_dict()
    agent_input = make_agent_input(speed=8.0)
    parked, leader = np.array([20.5, 4.5, 1.0]), np.array([10.5, -0.5, 1.0])  # in the current ego frame
    for k in (1, 2, 3):
        ego_x = agent_input.ego_statuses[k].ego_pose[0]  # -8, -4, 0
        leader_then = leader + [ego_x * 0.5, 0.0, 0.0]  # the leader drove 4 m/s: half the ego's displacement
        sweep = np.stack([parked - [ego_x, 0, 0], leader_then - [ego_x, 0, 0]], axis=1)  # in that frame's ego frame
        agent_input.lidars[k] = Lidar(lidar_pc=np.vstack([sweep, np.zeros((3, 2))]))
    obs = build_observation(agent_input, config)
    assert observation_space(config).contains(obs) and obs["lidar_history"].shape == (2, 64, 64)
    row, col = lambda xy: int(np.floor(32 - xy[0])), lambda xy: int(np.floor(32 - xy[1]))
    for index, back in ((0, 2.0), (1, 4.0)):  # newest first: 0.5 s ago the leader was 2 m behind, 1 s ago 4 m
        history = obs["lidar_history"][index]
        assert history[row(parked), col(parked)] > 0
        assert history[row(leader - [back, 0, 0]), col(leader)] > 0 and history[row(leader), col(leader)] == 0
        assert history.sum() == pytest.approx(0.4)  # two points, one per cell, each 1 / lidar_max_per_cell
    agent_input.lidars[1] = Lidar()
    with pytest.raises(MissingSensorError, match=r"history indices \[1\]"):
        build_observation(agent_input, config)
    with pytest.raises(ValueError, match="lidar_history"):
        ObservationConfig(lidar_history=4)


def test_prompt_says_command_and_speed():
    prompt = build_prompt(make_agent_input(command=0, speed=8.0))
    assert prompt.startswith("Command: turn left.")
    assert "Speed 8.0 m/s" in prompt and "accelerating at 0.5" in prompt and "drove 12.0 m" in prompt
    assert "turn right" in build_prompt(make_agent_input(command=2))
    obs = build_observation(make_agent_input(command=1), ObservationConfig(include_prompt=True))
    assert "go straight" in obs["prompt"]


def test_batch_observations_stacks_arrays_and_lists_prompts():
    config = ObservationConfig(include_prompt=True)
    batch = batch_observations([build_observation(make_agent_input(command=c), config) for c in (0, 2)])
    assert batch["camera"].shape == (2, 64, 256, 3) and batch["ego_status"].shape == (2, 4, 7)
    assert isinstance(batch["prompt"], list) and "turn right" in batch["prompt"][1]
    with pytest.raises(ValueError, match="keys"):
        batch_observations([{"a": np.zeros(1)}, {"b": np.zeros(1)}])


def test_cache_round_trip_and_atomic_write(tmp_path, monkeypatch):
    config = ObservationConfig(include_prompt=True)
    calls = []

    def loader(token: str) -> AgentInput:
        calls.append(token)
        return make_agent_input()

    cache = ObservationCache(tmp_path, config)
    first = cache.get_or_build("abc123", loader)
    second = cache.get_or_build("abc123", loader)
    assert calls == ["abc123"]
    path = tmp_path / config.config_hash() / "abc123.npz"
    assert path.is_file() and (tmp_path / config.config_hash() / "config.json").is_file()
    for key in first:
        if key == "prompt":
            assert second[key] == first[key] and isinstance(second[key], str)
        else:
            np.testing.assert_array_equal(second[key], first[key])
            assert second[key].dtype == first[key].dtype
    assert observation_space(config).contains(second)

    # A writer that dies half-way leaves the old file intact and no temporary file behind.
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError, match="disk full"):
        cache.put("abc123", first)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["abc123.npz", "config.json"]

    # preload keeps observations in memory; another config lives in another folder.
    cache.preload(["abc123"])
    path.unlink()
    assert "abc123" in cache and cache.get("abc123")["prompt"] == first["prompt"]
    other = ObservationCache(tmp_path, ObservationConfig(image_height=32))
    assert other.folder != cache.folder and "abc123" not in other
    with pytest.raises(KeyError, match="abc123"):
        other.preload(["abc123"])
    with pytest.raises(ValueError, match="not allowed"):
        cache.path("../escape")


# ---------------------------------------------------------------------------------------- BEV targets
ORIGIN = np.array([500_000.0, 4_000_000.0])


def _tiny_map():
    """One 3.5 m lane along global +x at y in [0, 3.5] (relative to ORIGIN), and a walkway beside it."""
    from irlvla_env.navsim.map_api import NuPlanMap

    ox, oy = ORIGIN

    def frame(rows: list[dict]) -> pd.DataFrame:
        return pd.DataFrame(rows).set_index(pd.Index([r["fid"] for r in rows]))

    empty = lambda cols: pd.DataFrame({c: pd.Series([], dtype=object) for c in cols + ["geometry"]})  # noqa: E731
    layers = {
        "lanes_polygons": frame([{"fid": "1", "lane_group_fid": "10", "lane_index": 0,
                                  "geometry": box(ox - 50, oy, ox + 50, oy + 3.5)}]),
        "lane_connectors": empty(["exit_lane_fid", "entry_lane_fid", "lane_group_connector_fid"]),
        "gen_lane_connectors_scaled_width_polygons": empty(["lane_connector_fid"]),
        "lane_groups_polygons": frame([{"fid": "10", "geometry": box(ox - 50, oy, ox + 50, oy + 3.5)}]),
        "lane_group_connectors": empty(["from_lane_group_fid", "to_lane_group_fid"]),
        "baseline_paths": pd.DataFrame({"lane_fid": ["1"], "lane_connector_fid": [None],
                                        "geometry": [LineString([(ox - 50, oy + 1.75), (ox + 50, oy + 1.75)])]}),
        "walkways": frame([{"fid": "5", "geometry": box(ox - 50, oy + 3.5, ox + 50, oy + 6.0)}]),
    }  # fmt: skip
    return NuPlanMap(layers, "us-nv-las-vegas-strip")


def _scene(boxes: np.ndarray, names: list[str]) -> Scene:
    ego = EgoStatus(ego_pose=[ORIGIN[0], ORIGIN[1] + 1.75, 0.0], ego_velocity=[5.0, 0.0], ego_acceleration=[0.0, 0.0],
                    driving_command=[0, 1, 0, 0], in_global_frame=True)  # fmt: skip
    n = len(boxes)
    annotations = Annotations(boxes, names, np.zeros((n, 3)), [f"i{k}" for k in range(n)], [f"t{k}" for k in range(n)])
    frames = [Frame(f"tok{k}", k, ["10"], [], annotations, ego, Lidar(), Cameras()) for k in range(4)]
    meta = SceneMetadata("log", "scene", "us-nv-las-vegas-strip", "tok3", 4, 0)
    return Scene(meta, _tiny_map(), frames)


def test_bev_semantic_map_puts_lane_walkway_and_boxes_in_the_right_pixels():
    boxes = np.array([[10.0, 0.0, 0.8, 4.0, 2.0, 1.5, 0.0], [20.0, -8.0, 0.9, 0.6, 0.6, 1.8, 0.0],
                      [5.0, -10.0, 0.5, 1.0, 1.0, 1.0, 0.0]])  # fmt: skip
    scene = _scene(boxes, ["vehicle", "pedestrian", "traffic_cone"])
    bev = bev_semantic_map(scene, size=(128, 256), resolution=0.25)  # x in [0, 32], y in [-32, 32]
    assert bev.shape == (128, 256) and bev.dtype == np.uint8

    def at(x: float, y: float) -> str:
        return BEV_CLASSES[bev[int((32 - x) / 0.25), int((32 - y) / 0.25)]]

    # The lane spans ego y in [-1.75, 1.75]; its centerline is y = 0; the walkway y in [1.75, 4.25].
    assert at(25.0, 1.2) == "road" and at(25.0, -1.2) == "road"
    assert at(25.0, 0.0) == "centerline"
    assert at(25.0, 3.0) == "walkway"
    assert at(25.0, -5.0) == "background" and at(25.0, 10.0) == "background"
    assert at(10.0, 0.5) == "vehicle" and at(11.5, -0.8) == "vehicle"
    assert at(20.0, -8.0) == "pedestrian" and at(5.0, -10.0) == "static_object"
    centred = bev_semantic_map(scene, size=(64, 64), resolution=1.0, x_min=None)  # x, y in [-32, 32]
    assert BEV_CLASSES[centred[int(32 - 10.0), int(32 - 0.5)]] == "vehicle"
    assert BEV_CLASSES[centred[int(32 + 20.0), int(32 - 1.2)]] == "road"  # behind the ego


def test_agent_box_targets_keep_nearest_vehicles_in_range():
    boxes = np.array([
        [20.0, 0.0, 0.8, 4.0, 2.0, 1.5, 2 * np.pi + 0.1],  # heading not wrapped, as in OpenScene
        [5.0, 1.0, 0.8, 4.5, 1.9, 1.5, 0.0],
        [3.0, 0.0, 0.8, 0.6, 0.6, 1.8, 0.0],  # pedestrian
        [40.0, 0.0, 0.8, 4.0, 2.0, 1.5, 0.0],  # out of range
    ])  # fmt: skip
    names = ["vehicle", "vehicle", "pedestrian", "vehicle"]
    annotations = Annotations(boxes, names, np.zeros((4, 3)), list("abcd"), list("abcd"))
    targets, valid = agent_box_targets(annotations, max_agents=3)
    assert targets.shape == (3, 5) and targets.dtype == np.float32
    np.testing.assert_array_equal(valid, [True, True, False])
    np.testing.assert_allclose(targets[0], [5.0, 1.0, 0.0, 4.5, 1.9], atol=1e-6)
    np.testing.assert_allclose(targets[1], [20.0, 0.0, 0.1, 4.0, 2.0], atol=1e-5)
    np.testing.assert_array_equal(targets[2], 0.0)
    assert agent_box_targets(annotations, max_agents=1)[1].tolist() == [True]


def test_observation_from_rendered_sensors():
    """The renderer's camera images and point cloud feed straight into the observation builder."""
    from irlvla_env.synthetic.render import RenderMap, SensorRenderer

    renderer = SensorRenderer(RenderMap.from_map_api(_tiny_map()))
    pose = np.array([ORIGIN[0], ORIGIN[1] + 1.75, 0.0])
    car = np.array([[12.0, 0.0, 0.8, 4.5, 2.0, 1.6, 0.0]])
    images = renderer.render_cameras(pose, car, ["vehicle"], cameras=["CAM_L0", "CAM_F0", "CAM_R0"])
    points = renderer.render_lidar(pose, car, ["vehicle"])
    config = ObservationConfig()
    obs = build_observation(make_agent_input({k.lower(): v for k, v in images.items()}, points), config)
    assert observation_space(config).contains(obs)
    row, col = int((32 - 10) / config.lidar_bev_resolution), int(32 / config.lidar_bev_resolution)
    assert obs["lidar_bev"][1, row - 1 : row + 2, col - 2 : col + 2].sum() > 0  # the car's rear face, above 0.2 m
    assert obs["lidar_bev"][0].sum() > obs["lidar_bev"][1].sum()  # mostly ground
