"""EPDMS sub-metrics on a hand-built road whose answers are known by construction.

The road: eastbound lane 11 (roadblock 1, x −60 … 0, centred on y = 0), lane connector 51 (roadblock
connector 101, x 0 … 20) and lane 21 (roadblock 2, x 20 … 160); the oncoming westbound lane 31 (roadblock 3)
lies alongside at y = 3.5. Lanes are 3.5 m wide. An intersection square sits far away at x = 200 unless a
test asks for one. Rollouts are written by hand (no simulation), so every distance is exact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import LineString, box

from irlvla_env.navsim.map_api import NuPlanMap
from irlvla_env.scoring import metrics as M
from irlvla_env.scoring.drivable_map import build_drivable_map
from irlvla_env.scoring.epdms import score_proposals, sub_metrics
from irlvla_env.scoring.observation import NUM_STEPS, Observation
from irlvla_env.simulation import vehicle as V

HALF = 1.75
ROUTE = ["1", "101", "2"]
ROUTE_LANES = ["11", "51", "21"]
TIMES = 0.1 * np.arange(NUM_STEPS)


def build_road(intersection: shapely.Polygon | None = None) -> NuPlanMap:
    def lane(line: LineString) -> shapely.Polygon:
        return line.buffer(HALF, cap_style="flat")

    l11, c51, l21 = LineString([(-60, 0), (0, 0)]), LineString([(0, 0), (20, 0)]), LineString([(20, 0), (160, 0)])
    l31 = LineString([(160, 3.5), (-60, 3.5)])
    layers = {
        "lanes_polygons": pd.DataFrame([
            {"fid": "11", "lane_group_fid": "1", "lane_index": 0, "speed_limit_mps": 15.0, "geometry": lane(l11)},
            {"fid": "21", "lane_group_fid": "2", "lane_index": 0, "speed_limit_mps": 15.0, "geometry": lane(l21)},
            {"fid": "31", "lane_group_fid": "3", "lane_index": 0, "speed_limit_mps": 15.0, "geometry": lane(l31)},
        ]),
        "lane_connectors": pd.DataFrame([{"fid": "51", "exit_lane_fid": "11", "entry_lane_fid": "21",
                                          "lane_group_connector_fid": "101", "geometry": c51}]),
        "gen_lane_connectors_scaled_width_polygons": pd.DataFrame(
            [{"fid": "p51", "lane_connector_fid": "51", "geometry": lane(c51)}]),
        "lane_groups_polygons": pd.DataFrame([
            {"fid": "1", "geometry": lane(l11)}, {"fid": "2", "geometry": lane(l21)},
            {"fid": "3", "geometry": lane(l31)},
        ]),
        "lane_group_connectors": pd.DataFrame([{"fid": "101", "from_lane_group_fid": "1", "to_lane_group_fid": "2",
                                                "geometry": lane(c51)}]),
        "baseline_paths": pd.DataFrame([
            {"fid": "b11", "lane_fid": "11", "lane_connector_fid": None, "geometry": l11},
            {"fid": "b21", "lane_fid": "21", "lane_connector_fid": None, "geometry": l21},
            {"fid": "b31", "lane_fid": "31", "lane_connector_fid": None, "geometry": l31},
            {"fid": "b51", "lane_fid": None, "lane_connector_fid": "51", "geometry": c51},
        ]),
        "intersections": pd.DataFrame([{"fid": "900", "geometry": intersection or box(200, -5, 220, 5)}]),
    }  # fmt: skip
    return NuPlanMap(layers, "us-ma-boston")


ROAD = build_road()
DRIVABLE = build_drivable_map(ROAD, np.array([0.0, 0.0]), radius=200.0)
CENTERLINE = LineString([(-60, 0), (160, 0)])


def rollout(x: np.ndarray, y: np.ndarray | float = 0.0, heading: np.ndarray | float | None = None) -> np.ndarray:
    """A hand-written `(41, 11)` rollout; velocity and acceleration from finite differences of x, y."""
    x = np.broadcast_to(np.asarray(x, dtype=np.float64), TIMES.shape)
    y = np.broadcast_to(np.asarray(y, dtype=np.float64), TIMES.shape)
    states = np.zeros((NUM_STEPS, V.STATE_SIZE))
    states[:, V.X], states[:, V.Y] = x, y
    vx, vy = np.gradient(x, 0.1), np.gradient(y, 0.1)
    states[:, V.HEADING] = np.arctan2(vy, vx) if heading is None else heading
    speed = np.hypot(vx, vy)
    states[:, V.VELOCITY_X] = speed
    states[:, V.ACCELERATION_X] = np.gradient(speed, 0.1)
    return states


def cruise(speed: float, x0: float = -40.0, y: float = 0.0) -> np.ndarray:
    return rollout(x0 + speed * TIMES, y, heading=0.0)


def observation(tracks: list[dict] | None = None, red: list[tuple[str, np.ndarray]] | None = None) -> Observation:
    """Tracks as dicts with `token, type, size (l, w), centers (41, 2), headings (41,), velocity (2,)`."""
    tracks = tracks or []
    red = red or []
    t = len(tracks)
    centers = np.stack([np.asarray(tr["centers"], float) for tr in tracks], axis=1) if t else np.zeros((NUM_STEPS, 0, 2))
    headings = np.stack([np.broadcast_to(tr.get("headings", 0.0), (NUM_STEPS,)) for tr in tracks], 1) if t \
        else np.zeros((NUM_STEPS, 0))
    velocity = np.array([tr.get("velocity", (0.0, 0.0)) for tr in tracks], float).reshape(t, 2)
    polygons = np.empty(len(red), dtype=object)
    polygons[:] = [ROAD.lane_connectors[c].polygon for c, _ in red]
    return Observation(
        tokens=np.array([tr["token"] for tr in tracks], dtype=object),
        types=np.array([tr["type"] for tr in tracks], dtype=object),
        sizes=np.array([tr.get("size", (4.5, 2.0)) for tr in tracks], float).reshape(t, 2),
        first_headings=headings[0].copy(), first_speeds=np.hypot(velocity[:, 0], velocity[:, 1]),
        present=np.ones((NUM_STEPS, t), dtype=bool), centers=centers, headings=headings,
        velocities=np.broadcast_to(velocity, (NUM_STEPS, t, 2)).copy(),
        red_light_ids=np.array([c for c, _ in red], dtype=object), red_light_polygons=polygons,
        red_light_active=np.stack([a for _, a in red], axis=1) if red else np.zeros((NUM_STEPS, 0), bool),
    )  # fmt: skip


def moving(token: str, x0: float, speed: float, kind: str = "vehicle", y: float = 0.0, size=(4.5, 2.0)) -> dict:
    centers = np.column_stack([x0 + speed * TIMES, np.full(NUM_STEPS, y)])
    return {"token": token, "type": kind, "size": size, "centers": centers, "velocity": (speed, 0.0)}


def score(states: np.ndarray | list, obs: Observation | None = None, past: np.ndarray | None = None,
          drivable=DRIVABLE) -> dict[str, np.ndarray]:  # fmt: skip
    states = np.asarray(states)
    states = states[None] if states.ndim == 2 else states
    metrics, _ = sub_metrics(states, obs or observation(), CENTERLINE, ROUTE_LANES, drivable, past)
    return metrics


# --------------------------------------------------------------------------------------------- the tests
def test_driving_straight_in_lane_scores_one_everywhere():
    metrics = score(cruise(8.0))
    assert {n: float(v[0]) for n, v in metrics.items()} == {n: 1.0 for n in metrics}


def test_swerving_off_road_fails_drivable_area():
    y = np.where(TIMES < 1.0, 0.0, -8.0 * np.minimum(TIMES - 1.0, 1.0))
    assert score(rollout(-40 + 8.0 * TIMES, y))["DAC"][0] == 0.0
    assert score(cruise(8.0))["DAC"][0] == 1.0


def test_hitting_a_slower_lead_car_is_at_fault():
    obs = observation([moving("lead", -20.0, 2.0)])
    metrics = score(cruise(10.0), obs)
    assert metrics["NC"][0] == 0.0
    assert metrics["TTC"][0] == 0.0


def test_rear_ended_while_stopped_is_not_at_fault():
    obs = observation([moving("chaser", -60.0, 8.0)])  # reaches the ego at (−40, 0) after ~2 s
    metrics = score(cruise(0.0), obs)
    assert metrics["NC"][0] == 1.0
    assert metrics["TTC"][0] == 1.0  # a stopped ego is never blamed for TTC


def test_collision_with_static_object_scores_half():
    cone = {"token": "cone", "type": "traffic_cone", "size": (0.5, 0.5), "centers": np.tile([-20.0, 0.0], (NUM_STEPS, 1))}
    assert score(cruise(10.0), observation([cone]))["NC"][0] == 0.5
    wall = {**moving("parked", -20.0, 0.0), "velocity": (0.0, 0.0)}
    assert score(cruise(10.0), observation([cone, wall]))["NC"][0] == 0.0  # minimum over collisions


def test_side_swipe_in_own_lane_is_not_at_fault_but_between_lanes_is():
    # A car alongside drifts from the oncoming lane into the ego's flank (a lateral collision).
    centers = np.column_stack([-40 + V.REAR_AXLE_TO_CENTER + 8.0 * TIMES, 3.5 - 1.0 * TIMES])
    swipe = {"token": "swipe", "type": "vehicle", "size": (4.5, 2.0), "velocity": (8.0, -1.0), "centers": centers}
    assert score(cruise(8.0), observation([swipe]))["NC"][0] == 1.0
    # The same contact while the ego straddles both lanes (y = 1.0) is at fault.
    assert score(cruise(8.0, y=1.0), observation([swipe]))["NC"][0] == 0.0


@pytest.mark.parametrize(("speed", "expected"), [(1.5, 1.0), (4.0, 0.5), (8.0, 0.0)])
def test_driving_in_the_oncoming_lane_thresholds(speed, expected):
    # Centre travel in the oncoming lane over the worst 1 s window equals the speed (10 steps of 0.1 s).
    assert score(cruise(speed, y=3.5))["DDC"][0] == expected


def test_oncoming_travel_inside_an_intersection_is_free():
    drivable = build_drivable_map(build_road(box(-60, -5, 0, 8)), np.zeros(2), radius=200.0)
    states = cruise(8.0, x0=-55.0, y=3.5)[:10]  # only the steps inside the intersection
    full = np.concatenate([states, np.repeat(states[-1:], NUM_STEPS - 10, axis=0)])
    full[10:, V.VELOCITY_X] = 0.0
    assert score(full, drivable=drivable)["DDC"][0] == 1.0
    assert score(full)["DDC"][0] == 0.0  # 7.2 m of oncoming travel without the intersection


def test_running_a_red_light_fails_traffic_light_compliance():
    always_red = np.ones(NUM_STEPS, dtype=bool)
    assert score(cruise(12.0), observation(red=[("51", always_red)]))["TLC"][0] == 0.0
    green_then_red = TIMES > 3.0  # the ego (from x = −10) has left the connector (x 0 … 20) by then
    assert score(cruise(12.0, x0=-10.0), observation(red=[("51", green_then_red)]))["TLC"][0] == 1.0
    assert score(cruise(12.0, x0=-10.0), observation(red=[("51", TIMES > 2.0)]))["TLC"][0] == 0.0
    assert score(cruise(12.0), observation(red=[("51", always_red)]))["NC"][0] == 1.0  # lights are not objects


def test_stopping_short_of_the_reference_lowers_progress():
    braking = rollout(-40 + np.minimum(8.0 * TIMES - 1.0 * TIMES**2, 16.0))
    reference = cruise(8.0)
    result = score_proposals(np.stack([reference, braking]), observation(), CENTERLINE, ROUTE_LANES, DRIVABLE)
    assert result.metrics["EP"][0] == 1.0
    assert result.metrics["EP"][1] == pytest.approx(16.0 / 32.0)
    # Below 5 m of best progress everybody gets EP 1.
    slow = score_proposals(np.stack([cruise(1.0), cruise(0.0)]), observation(), CENTERLINE, ROUTE_LANES, DRIVABLE)
    assert slow.metrics["EP"].tolist() == [1.0, 1.0]


def test_progress_normalisation_masks_failed_references():
    ep = M.normalise_progress(np.array([10.0, 20.0]), np.array([1.0, 1.0]), np.array([40.0, 0.0]), 5.0)
    assert ep.tolist() == [0.25, 1.0]


def test_weaving_off_the_centerline_fails_lane_keeping():
    assert score(cruise(8.0, y=1.0))["LK"][0] == 0.0  # 1.0 m > 0.5 m for all 41 steps
    short = rollout(-40 + 8 * TIMES, np.where(TIMES < 1.5, 1.0, 0.0), heading=0.0)
    assert score(short)["LK"][0] == 1.0  # only 15 steps off
    weave = rollout(-40 + 8 * TIMES, 1.0 * np.sin(2 * np.pi * TIMES / 4.0), heading=0.0)
    assert score(weave)["LK"][0] == 1.0  # |y| > 0.5 m for runs of 17 steps only


def test_lane_keeping_skips_intersection_steps_without_resetting():
    drivable = build_drivable_map(build_road(box(-29.9, -5, -19.9, 5)), np.zeros(2), radius=200.0)
    states = cruise(8.0, y=1.0)
    # The centre is inside the intersection for ~12 steps; the remaining 29 off-centre steps still reach 20.
    assert score(states, drivable=drivable)["LK"][0] == 0.0
    short = rollout(-40 + 8 * TIMES, np.where(TIMES < 2.5, 1.0, 0.0), heading=0.0)
    assert score(short)["LK"][0] == 0.0
    assert score(short, drivable=drivable)["LK"][0] == 1.0  # 26 steps minus the skipped ones < 20


def test_jerky_plans_fail_history_and_extended_comfort():
    smooth = cruise(8.0)
    jerky = smooth.copy()
    jerky[:, V.ACCELERATION_X] = 3.0 * np.sign(np.sin(2 * np.pi * TIMES))
    past = np.tile(smooth[0], (14, 1))
    assert score(smooth, past=past)["HC"][0] == 1.0
    assert score(jerky, past=past)["HC"][0] == 0.0
    assert score(jerky)["HC"][0] == 1.0  # no history → HC is not evaluated
    assert M.extended_comfort(smooth[None], smooth[None], 0.5)[0] == 1.0
    swerve = rollout(-40 + 8 * TIMES, 0.5 * np.sin(2 * np.pi * TIMES / 1.5))
    assert M.extended_comfort(swerve[None], smooth[None], 0.5)[0] == 0.0
    with pytest.raises(ValueError, match="0 < dt < 0.55"):
        M.extended_comfort(smooth[None], smooth[None], 0.6)


@pytest.mark.parametrize("length, window, poly, deriv", [(55, 8, 2, 0), (55, 15, 2, 1), (41, 5, 3, 2), (6, 6, 2, 0)])
def test_savgol_operator_equals_scipy(length, window, poly, deriv):
    from scipy.signal import savgol_filter

    signals = np.random.default_rng(length + deriv).normal(size=(3, length)) * 5.0
    operator = M.savgol_operator(length, window, poly, deriv, 0.1)
    expected = savgol_filter(signals, window_length=window, polyorder=poly, deriv=deriv, delta=0.1, axis=-1)
    np.testing.assert_allclose(signals @ operator, expected, rtol=0, atol=1e-9)
    assert M.savgol_operator(length, window, poly, deriv, 0.1) is operator  # built once per shape
    with pytest.raises(ValueError):
        operator[0, 0] = 1.0  # shared through the cache, so read-only


def test_ttc_catches_a_closing_gap_before_contact():
    # Lead car 12 m ahead (bumper gap ≈ 7 m) at standstill; the ego at 8 m/s is stopped before reaching it.
    x = -40 + np.minimum(8.0 * TIMES, 4.0)
    states = rollout(x, 0.0, heading=0.0)
    parked = {**moving("parked", -40 + V.REAR_AXLE_TO_CENTER + 9.9, 0.0)}
    metrics = score(states, observation([parked]))
    assert metrics["NC"][0] == 1.0
    assert metrics["TTC"][0] == 0.0


def test_batched_equals_one_by_one():
    obs = observation([moving("lead", -20.0, 2.0), moving("other", 20.0, -8.0, y=3.5)], red=[("51", TIMES > 2.0)])
    batch = np.stack([cruise(10.0), cruise(4.0), cruise(8.0, y=3.5), cruise(0.0), cruise(8.0, y=1.0)])
    together = score(batch, obs)
    for k in range(len(batch)):
        alone = score(batch[k], obs)
        assert {n: float(v[k]) for n, v in together.items()} == {n: float(v[0]) for n, v in alone.items()}


def test_box_geometry_matches_shapely():
    rng = np.random.default_rng(0)
    n = 600
    ego = np.zeros((n, V.STATE_SIZE))
    ego[:, :2] = rng.uniform(-4, 4, (n, 2))
    ego[:, V.HEADING] = rng.uniform(-np.pi, np.pi, n)
    track = {"token": "box", "type": "vehicle", "size": (3.0, 1.0), "centers": np.zeros((NUM_STEPS, 2))}
    obs = observation([track])
    obs.headings[:] = 0.7
    steps = np.zeros(n, dtype=int)
    coords = V.footprint_coords(ego)
    i, _ = M._overlapping_pairs(coords[:, V.CENTER], ego[:, V.HEADING], obs, steps)
    hit = np.zeros(n, dtype=bool)
    hit[i] = True
    other = shapely.polygons(M.box_corners_at(obs, np.array([0]), np.array([0])))[0]
    expected = shapely.intersects(shapely.polygons(coords[:, :4]), other)
    assert 50 < expected.sum() < n - 50 and np.array_equal(hit, expected)
    front = shapely.linestrings(np.stack([coords[:, V.FRONT_LEFT], coords[:, V.FRONT_RIGHT]], axis=1))
    corners = np.broadcast_to(M.box_corners_at(obs, np.array([0]), np.array([0])), (n, 4, 2))
    got = M.segment_intersects_box(coords[:, V.FRONT_LEFT], coords[:, V.FRONT_RIGHT], corners)
    assert np.array_equal(got, shapely.intersects(front, other))


def test_ego_area_flags():
    coords = V.footprint_coords(np.stack([cruise(8.0), cruise(8.0, y=1.75), cruise(8.0, y=-3.0), cruise(8.0, y=3.5)]))
    areas = DRIVABLE.ego_areas(coords[:, :, :4], coords[:, :, V.CENTER], np.zeros(coords.shape[:2] + (2,)), ROUTE_LANES)
    assert areas.multiple_lanes[:, 0].tolist() == [False, True, False, False]
    assert areas.non_drivable_area[:, 0].tolist() == [False, False, True, False]
    assert areas.oncoming_traffic[:, 0].tolist() == [False, True, True, True]  # centre on the boundary is outside
