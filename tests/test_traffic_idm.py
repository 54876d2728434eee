"""Reactive IDM traffic (navsim `reactive`, spec §4.3) on a hand-built in-memory map.

The map: roadblock 1 is a straight eastbound road along y = 0 (lane 11) and y = 3.5 (lane 12) from x = -100 to
300, 15 m/s. South of it, lane 21 (y = -60, x < 0) leads through connector 201 (x = 0 … 30, inside an
intersection) onto lane 31. North of it, lane 41 (y = 60) has an unusually wide polygon (5 m each side), so a
vehicle can stand inside it yet more than the 3 m snap threshold away from its baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import LineString, box

from irlvla_env.navsim.map_api import NuPlanMap
from irlvla_env.scoring.observation import Observation, box_corners
from irlvla_env.simulation import idm
from irlvla_env.simulation import vehicle as V
from irlvla_env.simulation.traffic import idm_reactive, idm_reactive_batch

STEPS = 41
DT = 0.1


def _lane(fid: str, group: str, coords: list, half_width: float = 1.75, speed: float | None = 15.0) -> tuple:
    line = shapely.segmentize(LineString(coords), 1.0)
    polygon = line.buffer(half_width, cap_style="flat")
    row = {"fid": fid, "lane_group_fid": group, "lane_index": 0, "speed_limit_mps": speed, "geometry": polygon}
    return row, {"fid": f"b{fid}", "lane_fid": fid, "lane_connector_fid": None, "geometry": line}


def road_map() -> NuPlanMap:
    lanes, baselines = zip(
        _lane("11", "1", [(-100, 0), (300, 0)]), _lane("12", "1", [(-100, 3.5), (300, 3.5)]),
        _lane("21", "2", [(-100, -60), (0, -60)]), _lane("31", "3", [(30, -60), (200, -60)]),
        _lane("41", "4", [(-100, 60), (100, 60)], half_width=5.0),
    )  # fmt: skip
    lanes, baselines = list(lanes), list(baselines)
    lanes[1]["lane_index"] = 1
    connector = shapely.segmentize(LineString([(0, -60), (30, -60)]), 1.0)
    groups = {}
    for lane in lanes:
        groups.setdefault(lane["lane_group_fid"], []).append(lane["geometry"])
    layers = {
        "lanes_polygons": pd.DataFrame(lanes),
        "lane_connectors": pd.DataFrame([{"fid": "201", "exit_lane_fid": "21", "entry_lane_fid": "31",
                                          "lane_group_connector_fid": "200", "speed_limit_mps": 10.0,
                                          "geometry": connector}]),
        "gen_lane_connectors_scaled_width_polygons": pd.DataFrame(
            [{"fid": "p201", "lane_connector_fid": "201", "geometry": connector.buffer(1.75, cap_style="flat")}]),
        "lane_groups_polygons": pd.DataFrame([{"fid": g, "geometry": shapely.union_all(p)} for g, p in groups.items()]),
        "lane_group_connectors": pd.DataFrame([{"fid": "200", "from_lane_group_fid": "2", "to_lane_group_fid": "3",
                                                "geometry": connector.buffer(1.75, cap_style="flat")}]),
        "baseline_paths": pd.DataFrame(baselines + [{"fid": "b201", "lane_fid": None, "lane_connector_fid": "201",
                                                     "geometry": connector}]),
        "intersections": pd.DataFrame([{"fid": "i0", "geometry": box(0, -66, 30, -54)}]),
    }  # fmt: skip
    return NuPlanMap(layers, "us-ma-boston")


@pytest.fixture(scope="module")
def road() -> NuPlanMap:
    return road_map()


def observation(tracks: list[tuple[str, str, float, float, float, float]], red_light_on: str | None = None,
                road_map_api: NuPlanMap | None = None) -> Observation:  # fmt: skip
    """Logged tracks `(token, type, x, y, heading, speed)` at constant velocity; optionally one red connector."""
    n = len(tracks)
    t = DT * np.arange(STEPS)[:, None, None]
    heading = np.array([tr[4] for tr in tracks], dtype=float)
    speed = np.array([tr[5] for tr in tracks], dtype=float)
    velocity = np.stack([speed * np.cos(heading), speed * np.sin(heading)], axis=-1)
    start = np.array([[tr[2], tr[3]] for tr in tracks], dtype=float)
    lights = [red_light_on] if red_light_on else []
    polygons = [road_map_api.lane_connectors[red_light_on].polygon] if red_light_on else []
    return Observation(
        tokens=np.array([tr[0] for tr in tracks], dtype=object), types=np.array([tr[1] for tr in tracks], dtype=object),
        sizes=np.tile([4.5, 2.0], (n, 1)), first_headings=heading, first_speeds=speed,
        present=np.ones((STEPS, n), dtype=bool), centers=start[None] + t * velocity[None],
        headings=np.broadcast_to(heading, (STEPS, n)).copy(),
        velocities=np.broadcast_to(velocity, (STEPS, n, 2)).copy(),
        red_light_ids=np.array(lights, dtype=object), red_light_polygons=np.array(polygons, dtype=object),
        red_light_active=np.ones((STEPS, len(lights)), dtype=bool),
    )  # fmt: skip


def ego_rollout(x0: float, speed: float, y: float = 0.0) -> np.ndarray:
    """`(41, 11)` ego states driving east at constant speed."""
    states = np.zeros((STEPS, V.STATE_SIZE))
    states[:, V.X] = x0 + speed * DT * np.arange(STEPS)
    states[:, V.Y] = y
    states[:, V.VELOCITY_X] = speed
    return states


def test_follower_brakes_behind_a_stopped_ego_but_not_behind_one_driving_away(road: NuPlanMap) -> None:
    obs = observation([("follower", "vehicle", -10.0, 0.3, 0.02, 8.0)])
    stopped, leaving = ego_rollout(20.0, 0.0), ego_rollout(20.0, 15.0)
    futures = idm_reactive_batch(obs, stopped[0], np.stack([stopped, leaving]), road)
    follower_stopped, follower_free = futures[0].centers[:, 0], futures[1].centers[:, 0]
    assert np.allclose(futures[0].centers[0, 0], [-10.0, 0.3])  # step 0 is the log
    assert np.allclose(follower_stopped[1:, 1], 0.0, atol=1e-9) and np.allclose(futures[0].headings[1:, 0], 0.0)
    speed_stopped = np.linalg.norm(futures[0].velocities[:, 0], axis=-1)
    speed_free = np.linalg.norm(futures[1].velocities[:, 0], axis=-1)
    assert speed_stopped[-1] < 2.5 and np.all(np.diff(speed_stopped[1:]) < 0) and speed_free[-1] > 8.0
    assert follower_free[-1, 0] > follower_stopped[-1, 0] + 10.0
    real_ego = V.ego_polygons(stopped)
    agent_boxes = shapely.polygons(box_corners(follower_stopped, 0.0, 4.5, 2.0))
    assert not shapely.intersects(real_ego, agent_boxes).any()  # it stopped short of the ego


def test_vehicles_kept_frozen_or_dropped_off_the_lanes(road: NuPlanMap) -> None:
    obs = observation([
        ("parked", "vehicle", 50.0, 12.0, 0.5, 0.0),  # off every lane, stationary: frozen
        ("roaming", "vehicle", 50.0, -12.0, 0.5, 3.0),  # off every lane, moving: dropped
        ("wide", "vehicle", 0.0, 64.0, 0.0, 5.0),  # inside lane 41 but 4 m off its baseline: frozen though moving
        ("on_ego", "vehicle", 21.0, 0.0, 0.0, 5.0),  # snapped box overlaps the ego at t0: dropped
    ])  # fmt: skip
    ego = ego_rollout(20.0, 0.0)
    out = idm_reactive(obs, ego[0], ego, road)
    assert out.present[:, 0].all() and out.present[:, 2].all()
    assert np.allclose(out.centers[:, 0], [50.0, 12.0]) and np.allclose(out.centers[:, 2], [0.0, 64.0])
    assert np.allclose(out.velocities[1:, 2], [5.0, 0.0])  # frozen boxes keep their t0 velocity
    assert out.present[0, [1, 3]].all() and not out.present[1:, [1, 3]].any()
    assert np.isnan(out.centers[1:, 1]).all()


def test_agents_farther_than_100_m_are_dropped(road: NuPlanMap) -> None:
    obs = observation([("far", "vehicle", 170.0, 0.0, 0.0, 5.0), ("near", "vehicle", 70.0, 3.5, 0.0, 5.0)])
    ego = ego_rollout(20.0, 0.0)
    out = idm_reactive(obs, ego[0], ego, road)
    assert out.present[0].all() and not out.present[1:, 0].any() and out.present[1:, 1].all()
    assert out.centers[-1, 1, 0] > 70.0 + 15.0


def test_pedestrians_and_static_objects_follow_the_log(road: NuPlanMap) -> None:
    obs = observation([("ped", "pedestrian", 30.0, 2.0, 1.0, 1.4), ("cone", "traffic_cone", 40.0, 0.0, 0.0, 0.0),
                       ("car", "vehicle", -30.0, 0.0, 0.0, 5.0)])  # fmt: skip
    obs.present[30:, 0] = False
    obs.centers[30:, 0], obs.headings[30:, 0], obs.velocities[30:, 0] = np.nan, np.nan, np.nan
    ego = ego_rollout(20.0, 5.0)
    out = idm_reactive(obs, ego[0], ego, road)
    for name in ("present", "centers", "headings", "velocities"):
        assert np.array_equal(getattr(out, name)[:, :2], getattr(obs, name)[:, :2], equal_nan=True), name
    assert not np.allclose(out.centers[1:, 2], obs.centers[1:, 2])  # the vehicle is simulated


def test_agents_ignore_red_lights(road: NuPlanMap) -> None:
    tracks = [("crossing", "vehicle", 5.0, -60.0, 0.0, 6.0)]
    red, green = observation(tracks, red_light_on="201", road_map_api=road), observation(tracks)
    ego = ego_rollout(20.0, 0.0)
    with_red, without = idm_reactive(red, ego[0], ego, road), idm_reactive(green, ego[0], ego, road)
    assert np.allclose(with_red.centers, without.centers)
    assert with_red.centers[-1, 0, 0] > 5.0 + 10.0  # it drove on through its red connector
    assert len(with_red.red_light_ids) == 1 and with_red.red_light_active.all()  # lights still reach the scorer


def test_agents_stop_at_the_end_of_their_lane(road: NuPlanMap) -> None:
    """No route extension without traffic-light statuses: a connector agent brakes before the connector ends."""
    obs = observation([("crossing", "vehicle", 5.0, -60.0, 0.0, 8.0)])
    ego = ego_rollout(20.0, 0.0)
    out = idm_reactive(obs, ego[0], ego, road)
    speed = np.linalg.norm(out.velocities[:, 0], axis=-1)
    assert speed[-1] < speed[1] and out.centers[-1, 0, 0] < 30.0


def test_one_rollout_equals_its_row_of_a_batch(road: NuPlanMap) -> None:
    obs = observation([
        ("a", "vehicle", -20.0, 0.0, 0.0, 9.0), ("b", "vehicle", -35.0, 0.0, 0.0, 11.0),
        ("c", "vehicle", 5.0, 3.5, 0.0, 7.0), ("d", "vehicle", -5.0, 3.4, 0.0, 12.0),
        ("e", "vehicle", 5.0, -60.0, 0.0, 6.0), ("ped", "pedestrian", 30.0, 2.0, 1.0, 1.4),
    ])  # fmt: skip
    rollouts = np.stack([ego_rollout(12.0, speed, y) for speed in (0.0, 3.0, 6.0, 9.0) for y in (0.0, 2.0)])
    batch = idm_reactive_batch(obs, rollouts[0, 0], rollouts, road)
    assert len(batch) == 8
    for k in (0, 3, 7):
        single = idm_reactive(obs, rollouts[0, 0], rollouts[k], road)
        for name in ("present", "centers", "headings", "velocities"):
            assert np.array_equal(getattr(single, name), getattr(batch[k], name), equal_nan=True), (k, name)
    assert not np.allclose(batch[0].centers[-1, :2], batch[6].centers[-1, :2])  # the followers react


def test_bad_rollout_shapes_are_rejected(road: NuPlanMap) -> None:
    obs = observation([("a", "vehicle", -20.0, 0.0, 0.0, 9.0)])
    ego = ego_rollout(0.0, 0.0)
    with pytest.raises(ValueError, match="ego_rollouts"):
        idm_reactive_batch(obs, ego[0], ego[:20][None], road)
    with pytest.raises(ValueError, match="ego_rollout"):
        idm_reactive(obs, ego[0], ego[None], road)


# ---------------------------------------------------------------------------------------------- geometry
def test_quad_overlap_and_distance_match_shapely() -> None:
    rng = np.random.default_rng(0)
    a = box_corners(rng.uniform(-5, 5, (200, 2)), rng.uniform(-np.pi, np.pi, 200), 4.0, 2.0)
    b = box_corners(rng.uniform(-5, 5, (200, 2)), rng.uniform(-np.pi, np.pi, 200), 5.0, 1.5)
    pa, pb = shapely.polygons(a), shapely.polygons(b)
    assert np.array_equal(idm.quads_overlap(a, b), shapely.intersects(pa, pb))
    assert np.allclose(idm.quads_distance(a, b), shapely.distance(pa, pb), atol=1e-9)


def test_rail_frenet_projection_on_a_curve() -> None:
    angles = np.linspace(-np.pi / 2, 0.0, 60)
    rail = idm.Rail(LineString(np.stack([20 * np.cos(angles), 20 + 20 * np.sin(angles)], axis=1)))
    rng = np.random.default_rng(1)
    s = rng.uniform(0, rail.length, 100)
    d = rng.uniform(-3, 3, 100)
    frames = rail.frames(s)
    points = frames[:, :2] + d[:, None] * np.stack([-np.sin(frames[:, 2]), np.cos(frames[:, 2])], axis=1)
    sd = rail.to_frenet(points)
    line = LineString(rail.poses[:, :2])
    foot = shapely.line_interpolate_point(line, shapely.line_locate_point(line, shapely.points(points)))
    assert np.allclose(sd[:, 0], shapely.line_locate_point(line, shapely.points(points)), atol=0.1)
    assert np.allclose(np.abs(sd[:, 1]), shapely.distance(shapely.points(points), foot), atol=0.02)
    assert np.array_equal(np.sign(sd[:, 1]), np.sign(d))
    end = rail.frames(np.array([rail.length + 30.0]))[0]  # past the end: straight on, keeping the offsets
    beyond = rail.to_frenet(end[:2] - 3.0 * np.array([-np.sin(end[2]), np.cos(end[2])]))
    assert np.allclose(beyond, [rail.length + 30.0, -3.0])


def test_idm_step_is_shared_with_pdm_closed() -> None:
    from irlvla_env.scoring import pdm_closed

    progress, velocity = idm.idm_step(np.zeros(2), np.array([5.0, 5.0]), np.array([[50.0, 5.0, 2.0], [6.0, 0.0, 0.0]]),
                                      np.array([10.0, 10.0]), 1.0, 1.5, 1.0, 2.0, 0.1, 4)  # fmt: skip
    assert np.allclose(progress, 0.5) and velocity[0] > 5.0 and np.isclose(velocity[1], 5.0 - 0.2)
    assert pdm_closed.idm_step is idm.idm_step


def test_quad_rectangle_tests_match_shapely() -> None:
    rng = np.random.default_rng(2)
    quads = box_corners(rng.uniform(-8, 8, (300, 2)), rng.uniform(-np.pi, np.pi, 300), 4.5, 2.0)
    s0, length, half_width = rng.uniform(-5, 5, 300), rng.uniform(0.5, 10, 300), rng.uniform(0.5, 1.5, 300)
    rects = shapely.box(s0, -half_width, s0 + length, half_width)
    assert np.array_equal(idm.quad_rect_overlap(quads, s0, s0 + length, half_width),
                          shapely.intersects(shapely.polygons(quads), rects))  # fmt: skip
    assert np.allclose(idm.quad_rect_distance(quads, s0, s0 + length, half_width),
                       shapely.distance(shapely.polygons(quads), rects), atol=1e-9)  # fmt: skip
