"""Route correction, centerline, driving command and PDM-Closed on hand-built in-memory maps.

The crossroads map: roadblock 1 drives east along y = 0 (lane 11 left at y = 1.75, lane 12 right at y = -1.75)
and ends at x = 0; connector 101 carries both lanes straight on to roadblock 2 (x = 20 … 120); connector 102
turns left from lane 11 onto roadblock 3 (north, x = 10); connector 103 turns right from lane 12 onto
roadblock 4 (south, x = 6). Roadblock 5 is an unconnected road far away.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import LineString, box

from irlvla_env.navsim.map_api import NuPlanMap
from irlvla_env.scoring import route
from irlvla_env.scoring.route import LEFT, RIGHT, STRAIGHT, UNKNOWN, PDMPath

LANE_HALF_WIDTH = 1.75


def _arc(center: tuple[float, float], radius: float, start: float, end: float, n: int = 12) -> list:
    angles = np.linspace(start, end, n)
    return [(center[0] + radius * np.cos(a), center[1] + radius * np.sin(a)) for a in angles]


def build_map(
    roadblocks: dict[str, list[tuple[str, list, float | None]]],
    connectors: dict[str, tuple[str, str, list[tuple[str, str, str, list]]]],
    intersections: list | None = None,
) -> NuPlanMap:
    """An in-memory `NuPlanMap` from baselines: lane polygons are the baselines buffered by 1.75 m.

    Baselines are densified to 1 m vertices, as nuPlan baselines are dense (the route code works on vertices).

    :param roadblocks: roadblock id → [(lane id, baseline coords, speed limit)], lanes listed left to right.
    :param connectors: roadblock-connector id → (from roadblock, to roadblock, [(connector id, exit lane,
        entry lane, baseline coords)]).
    """
    lanes, lane_groups, baselines, lane_conns, conn_polys, group_conns = [], [], [], [], [], []
    for rb_id, rb_lanes in roadblocks.items():
        polys = []
        for index, (lane_id, coords, speed) in enumerate(rb_lanes):
            line = shapely.segmentize(LineString(coords), 1.0)
            poly = line.buffer(LANE_HALF_WIDTH, cap_style="flat")
            polys.append(poly)
            lanes.append({"fid": lane_id, "lane_group_fid": rb_id, "lane_index": index, "speed_limit_mps": speed,
                          "geometry": poly})  # fmt: skip
            baselines.append({"fid": f"b{lane_id}", "lane_fid": lane_id, "lane_connector_fid": None, "geometry": line})
        lane_groups.append({"fid": rb_id, "geometry": shapely.union_all(polys)})
    for rbc_id, (src, dst, members) in connectors.items():
        polys = []
        for conn_id, exit_lane, entry_lane, coords in members:
            line = shapely.segmentize(LineString(coords), 1.0)
            poly = line.buffer(LANE_HALF_WIDTH, cap_style="flat")
            polys.append(poly)
            lane_conns.append({"fid": conn_id, "exit_lane_fid": exit_lane, "entry_lane_fid": entry_lane,
                               "lane_group_connector_fid": rbc_id, "speed_limit_mps": 8.0, "geometry": line})  # fmt: skip
            conn_polys.append({"fid": f"p{conn_id}", "lane_connector_fid": conn_id, "geometry": poly})
            baselines.append({"fid": f"b{conn_id}", "lane_fid": None, "lane_connector_fid": conn_id, "geometry": line})
        group_conns.append({"fid": rbc_id, "from_lane_group_fid": src, "to_lane_group_fid": dst,
                            "geometry": shapely.union_all(polys)})  # fmt: skip
    layers = {
        "lanes_polygons": pd.DataFrame(lanes),
        "lane_connectors": pd.DataFrame(lane_conns),
        "gen_lane_connectors_scaled_width_polygons": pd.DataFrame(conn_polys),
        "lane_groups_polygons": pd.DataFrame(lane_groups),
        "lane_group_connectors": pd.DataFrame(group_conns),
        "baseline_paths": pd.DataFrame(baselines),
        "intersections": pd.DataFrame([{"fid": f"i{i}", "geometry": g} for i, g in enumerate(intersections or [])])
        if intersections else pd.DataFrame({"geometry": pd.Series([], dtype=object)}),
    }  # fmt: skip
    return NuPlanMap(layers, "us-ma-boston")


def crossroads_map() -> NuPlanMap:
    return build_map(
        roadblocks={
            "1": [("11", [(-100, 1.75), (0, 1.75)], 15.0), ("12", [(-100, -1.75), (0, -1.75)], 15.0)],
            "2": [("21", [(20, 1.75), (120, 1.75)], 15.0), ("22", [(20, -1.75), (120, -1.75)], 15.0)],
            "3": [("31", [(10, 11.75), (10, 111.75)], 12.0)],
            "4": [("41", [(6, -7.75), (6, -107.75)], 12.0)],
            "5": [("51", [(500, 500), (600, 500)], 12.0)],
        },
        connectors={
            "101": ("1", "2", [("1011", "11", "21", [(0, 1.75), (20, 1.75)]),
                               ("1012", "12", "22", [(0, -1.75), (20, -1.75)])]),
            "102": ("1", "3", [("1021", "11", "31", _arc((0, 11.75), 10, -np.pi / 2, 0))]),
            "103": ("1", "4", [("1031", "12", "41", _arc((0, -7.75), 6, np.pi / 2, 0))]),
        },
        intersections=[box(0, -10, 20, 10)],
    )  # fmt: skip


@pytest.fixture(scope="module")
def crossroads() -> NuPlanMap:
    return crossroads_map()


# ------------------------------------------------------------------------------------------------------ PDMPath
def test_pdm_path_projects_and_interpolates() -> None:
    path = PDMPath(np.array([[0, 0, 0], [10, 0, 0], [10, 0, np.pi / 2], [10, 10, np.pi / 2]], dtype=float))
    assert path.length == pytest.approx(20.0)
    assert np.allclose(path.project(np.array([[5, 3], [12, 5]])), [5, 15])
    poses = path.interpolate(np.array([-1.0, 5.0, 10.0, 15.0, 99.0]))
    assert np.allclose(poses[0], [1e-5, 0, 0])
    assert np.allclose(poses[1], [5, 0, 0])
    assert np.allclose(poses[2], [10, 0, 0])  # duplicated vertex resolves to the earlier one (interp1d)
    assert np.allclose(poses[3], [10, 5, np.pi / 2])
    assert np.allclose(poses[4], [10, 10, np.pi / 2])
    assert np.allclose(np.asarray(path.substring(0, 15).coords), [[0, 0], [10, 0], [10, 0]])
    with pytest.raises(ValueError, match="shape"):
        PDMPath(np.zeros((1, 3)))


def test_pdm_path_unwraps_headings() -> None:
    path = PDMPath(np.array([[0, 0, np.pi - 0.1], [1, 0, -np.pi + 0.1]]))
    assert abs(path.interpolate(0.5)[2]) == pytest.approx(np.pi, abs=1e-9)


# --------------------------------------------------------------------------------------------- route correction
def test_route_already_connected_is_unchanged(crossroads: NuPlanMap) -> None:
    assert route.correct_route(crossroads, ["1", "101", "2"], np.array([-50, 1.75, 0.0])) == ["1", "101", "2"]


def test_route_gap_is_filled(crossroads: NuPlanMap) -> None:
    assert route.correct_route(crossroads, ["1", "3"], np.array([-50, 1.75, 0.0])) == ["1", "102", "3"]


def test_route_starting_off_route_is_extended_backwards(crossroads: NuPlanMap) -> None:
    ego = np.array([-50, 1.75, 0.0])
    assert route.correct_route(crossroads, ["3"], ego) == ["1", "102", "3"]
    assert route.correct_route(crossroads, ["102", "3"], ego) == ["1", "102", "3"]


def test_route_forward_fallback_only_for_pdm(crossroads: NuPlanMap) -> None:
    ego = np.array([-50, -1.75, 0.0])
    # roadblock 5 is unreachable: PDM searches forward to one of the first 3 route roadblocks instead.
    assert route.correct_route(crossroads, ["5", "2"], ego) == ["1", "101", "2"]
    assert route.correct_route(crossroads, ["5", "2"], ego, forward_fallback=False) is None
    assert route.driving_command(crossroads, ["5", "2"], ego) == UNKNOWN


def test_route_candidates_respect_heading(crossroads: NuPlanMap) -> None:
    # Driving west on roadblock 1 (wrong way): no lane passes the heading test, so the nearest roadblock is kept.
    start, candidates = route.roadblock_candidates(crossroads, np.array([-50, 1.75, np.pi]), {"1": None})
    assert start.id == "1" and [c.id for c in candidates] == ["1"]
    start, candidates = route.roadblock_candidates(crossroads, np.array([-50, 0.0, 0.0]), {"1": None})
    assert [c.id for c in candidates] == ["1", "1"]  # both lanes within 3 m: listed once per lane, as upstream
    _, candidates = route.roadblock_candidates(crossroads, np.array([-50, 1.75, 0.0]), {"1": None})
    assert [c.id for c in candidates] == ["1"]  # lane 12 is 3.5 m away


def test_route_loops_are_cut(crossroads: NuPlanMap) -> None:
    assert route.remove_route_loops(crossroads, ["101", "2", "102", "3"]) == ["101", "2"]
    assert route.remove_route_loops(crossroads, ["1", "102", "3"]) == ["1", "102", "3"]


def test_unknown_ids_are_ignored(crossroads: NuPlanMap) -> None:
    blocks, lanes = route.route_dicts(crossroads, ["1", "nope", "1", "101"])
    assert list(blocks) == ["1", "101"] and list(lanes) == ["11", "12", "1011", "1012"]
    assert route.correct_route(crossroads, ["nope"], np.array([0.0, 0.0, 0.0])) is None


# ---------------------------------------------------------------------------------------------------- centerline
def test_centerline_goes_through_the_connector(crossroads: NuPlanMap) -> None:
    plan = route.plan_route(crossroads, ["1", "3"], np.array([-50, 1.75, 0.0]))
    assert plan.roadblock_ids == ["1", "102", "3"]
    assert plan.starting_lane_id == "11" and plan.speed_limit_mps == 15.0
    assert set(plan.lane_ids) == {"11", "12", "1021", "31"}
    line = plan.centerline
    assert line.length == pytest.approx(100 + np.pi / 2 * 10 + 100, rel=2e-3)
    end = line.interpolate(line.length)
    assert np.allclose(end, [10, 111.75, np.pi / 2], atol=1e-6)
    assert line.project(np.array([5.0, 5.0])) > 100.0  # on the left-turn arc


def test_starting_lane_prefers_heading_then_falls_back(crossroads: NuPlanMap) -> None:
    plan = route.plan_route(crossroads, ["1", "101", "2"], np.array([-20, -1.75, 0.0]))
    assert plan.starting_lane_id == "12"
    assert np.allclose(plan.centerline.interpolate(plan.centerline.length)[:2], [120, -1.75])
    _, lanes = route.route_dicts(crossroads, ["2"])
    assert route.starting_lane(lanes, np.array([-20, -1.75, 0.0])).id == "22"  # nearest polygon to the box


def test_dijkstra_returns_deepest_cheapest_when_target_unreachable(crossroads: NuPlanMap) -> None:
    _, lanes = route.route_dicts(crossroads, ["1", "101", "2"])
    path, found = route.dijkstra_lanes(crossroads.lanes["11"], lanes, "5", crossroads)
    assert not found and [lane.id for lane in path] == ["11", "1011", "21"]


# ------------------------------------------------------------------------------------------------ driving command
@pytest.mark.parametrize(
    ("roadblocks", "pose", "expected"),
    [
        (["1", "102", "3"], (-5, 1.75, 0.0), LEFT),
        (["1", "103", "4"], (-5, -1.75, 0.0), RIGHT),
        (["1", "101", "2"], (-5, 1.75, 0.0), STRAIGHT),
        (["1", "102", "3"], (-60, 1.75, 0.0), STRAIGHT),  # the turn is more than 20 m ahead
        ([], (-5, 1.75, 0.0), UNKNOWN),
    ],
)
def test_driving_command(crossroads: NuPlanMap, roadblocks: list[str], pose: tuple, expected: int) -> None:
    assert route.driving_command(crossroads, roadblocks, np.array(pose)) == expected


def test_driving_command_on_the_target_road_and_one_hot(crossroads: NuPlanMap) -> None:
    # Already on roadblock 3 with route [3]: straight ahead along a straight lane.
    assert route.driving_command(crossroads, ["3"], np.array([10.0, 40.0, np.pi / 2])) == STRAIGHT
    assert np.array_equal(route.one_hot_command(LEFT), [1, 0, 0, 0])


def test_bad_pose_is_rejected(crossroads: NuPlanMap) -> None:
    with pytest.raises(ValueError, match="ego_pose"):
        route.driving_command(crossroads, ["1"], np.array([np.nan, 0.0, 0.0]))


# -------------------------------------------------------------------------------------------------- PDM-Closed
def _observation(cars: list[tuple[float, float, float]], steps: int = 41):
    """Vehicles `(x, y, speed)` heading east at constant speed."""
    from irlvla_env.scoring.observation import Observation

    n = len(cars)
    t = 0.1 * np.arange(steps)[:, None]
    centers = np.stack([np.array([c[0] for c in cars])[None] + t * np.array([c[2] for c in cars])[None],
                        np.broadcast_to(np.array([c[1] for c in cars], dtype=float), (steps, n))], axis=-1)  # fmt: skip
    speeds = np.array([c[2] for c in cars], dtype=float)
    return Observation(
        tokens=np.array([f"car{i}" for i in range(n)], dtype=object), types=np.array(["vehicle"] * n, dtype=object),
        sizes=np.tile([4.5, 2.0], (n, 1)).reshape(n, 2), first_headings=np.zeros(n), first_speeds=speeds,
        present=np.ones((steps, n), dtype=bool), centers=centers.reshape(steps, n, 2), headings=np.zeros((steps, n)),
        velocities=np.stack([np.broadcast_to(speeds, (steps, n)), np.zeros((steps, n))], axis=-1),
        red_light_ids=np.array([], dtype=object), red_light_polygons=np.array([], dtype=object),
        red_light_active=np.zeros((steps, 0), dtype=bool),
    )  # fmt: skip


def _pdm_setup(crossroads: NuPlanMap, roadblocks: list[str], x: float, speed: float):
    from irlvla_env.scoring.drivable_map import build_drivable_map
    from irlvla_env.simulation import vehicle as V

    ego = np.zeros(V.STATE_SIZE)
    ego[:4] = [x, 1.75, 0.0, speed]
    plan = route.plan_route(crossroads, roadblocks, ego[:3])
    return ego, plan, build_drivable_map(crossroads, V.centers(ego[:3]))


def test_pdm_closed_stops_behind_a_stopped_vehicle(crossroads: NuPlanMap) -> None:
    from irlvla_env.scoring.pdm_closed import plan_pdm_closed
    from irlvla_env.simulation import vehicle as V

    ego, plan, drivable = _pdm_setup(crossroads, ["1", "101", "2"], -80.0, 10.0)
    free = plan_pdm_closed(ego, _observation([]), plan, drivable, crossroads)
    assert free.shape == (51, V.STATE_SIZE) and np.allclose(free[:, 1], 1.75)
    assert free[-1, 0] - ego[0] > 45.0 and np.all(np.diff(free[:, 0]) >= 0)
    blocked = plan_pdm_closed(ego, _observation([(-50.0, 1.75, 0.0)]), plan, drivable, crossroads)
    front = blocked[:, 0] + V.FRONT_LENGTH
    assert front.max() < -50.0 - 2.25  # never reaches the rear of the stopped car
    assert front[-1] > -50.0 - 2.25 - 6.0  # but closes up to it
    assert np.abs(np.diff(blocked[-5:, 0])).max() < 0.1  # (nearly) at rest: IDM creeps up below 1 m/s


def test_pdm_closed_stops_for_a_red_light(crossroads: NuPlanMap) -> None:
    from irlvla_env.scoring.pdm_closed import plan_pdm_closed
    from irlvla_env.simulation import vehicle as V

    ego, plan, drivable = _pdm_setup(crossroads, ["1", "102", "3"], -30.0, 6.0)
    green = plan_pdm_closed(ego, _observation([]), plan, drivable, crossroads, red_connector_ids=[])
    assert green[-1, 1] > 5.0  # turned left into roadblock 3
    red = plan_pdm_closed(ego, _observation([]), plan, drivable, crossroads, red_connector_ids=["1021", "1012"])
    assert red[:, 0].max() + V.FRONT_LENGTH < 0.0 and np.allclose(red[:, 1], 1.75)
    assert np.all(np.diff(red[-10:, 0], n=2) < 0)  # still braking towards the stop at the connector


def test_pdm_closed_returns_the_best_scored_proposal(crossroads: NuPlanMap) -> None:
    from irlvla_env.scoring.pdm_closed import plan_pdm_closed

    ego, plan, drivable = _pdm_setup(crossroads, ["1", "101", "2"], -80.0, 10.0)
    calls = []

    def prefer(index: int):
        def score(states, observation, centerline, lane_ids, drivable_map):
            calls.append(states.shape)
            return np.eye(len(states))[index]
        return score

    left_slow = plan_pdm_closed(ego, _observation([]), plan, drivable, crossroads, score_fn=prefer(10))
    right_fast = plan_pdm_closed(ego, _observation([]), plan, drivable, crossroads, score_fn=prefer(9))
    assert calls == [(15, 41, 11), (15, 41, 11)]
    assert np.allclose(left_slow[1:, 1], 1.75 + 1.0) and np.allclose(right_fast[1:, 1], 1.75 - 1.0)
    assert left_slow[-1, 0] < right_fast[-1, 0]  # 0.2 vs 1.0 × the speed limit
