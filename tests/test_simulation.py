"""Ego simulation: footprint, bicycle model, LQR tracker, trajectory → reference states → rollouts, traffic policies."""

from __future__ import annotations

import numpy as np
import pytest

from irlvla_env.scoring.observation import Observation
from irlvla_env.simulation import traffic
from irlvla_env.simulation import vehicle as V
from irlvla_env.simulation.bicycle import BatchKinematicBicycleModel
from irlvla_env.simulation.lqr import fit_speed_and_curvature
from irlvla_env.simulation.simulator import local_trajectories_to_states, simulate

DT = 0.1


def ego_state(x: float = 0.0, y: float = 0.0, heading: float = 0.0, speed: float = 0.0) -> np.ndarray:
    state = np.zeros(V.STATE_SIZE)
    state[[V.X, V.Y, V.HEADING, V.VELOCITY_X]] = x, y, heading, speed
    return state


def straight_plan(speed: float, n: int = 8, interval: float = 0.5) -> np.ndarray:
    t = interval * np.arange(1, n + 1)
    return np.stack([speed * t, np.zeros(n), np.zeros(n)], axis=-1)


# ---------------------------------------------------------------------------------------------------- vehicle
def test_footprint_corners_follow_heading() -> None:
    coords = V.footprint_coords(np.array([10.0, 5.0, np.pi / 2]))
    center = [10.0, 5.0 + V.REAR_AXLE_TO_CENTER]
    assert np.allclose(coords[V.CENTER], center)
    assert np.allclose(coords[V.FRONT_LEFT], [10.0 - V.WIDTH / 2, 5.0 + V.FRONT_LENGTH])
    assert np.allclose(coords[V.REAR_RIGHT], [10.0 + V.WIDTH / 2, 5.0 - V.REAR_LENGTH])
    polygons = V.ego_polygons(np.zeros((2, 3, V.STATE_SIZE)))
    assert polygons.shape == (2, 3) and polygons[1, 2].area == pytest.approx(V.LENGTH * V.WIDTH)


# ---------------------------------------------------------------------------------------------------- bicycle
def test_bicycle_lags_match_hand_computed_step() -> None:
    state = ego_state(speed=2.0)[None]
    state[0, V.ANGULAR_VELOCITY] = 0.1
    out = BatchKinematicBicycleModel().propagate(state, np.array([1.0]), np.array([0.5]), DT)[0]
    accel = DT / (DT + 0.2) * 1.0  # 1/3
    steering = DT / (DT + 0.05) * (DT * 0.5)  # 1/30
    assert out[V.ACCELERATION_X] == pytest.approx(accel)
    assert out[V.STEERING_RATE] == pytest.approx(steering / DT)
    assert out[V.STEERING_ANGLE] == pytest.approx(steering / DT * DT)
    assert out[V.X] == pytest.approx(0.2)  # old speed, old heading
    assert out[V.HEADING] == pytest.approx(0.0)  # old steering angle (0)
    assert out[V.VELOCITY_X] == pytest.approx(2.0 + accel * DT)
    yaw_rate = (2.0 + accel * DT) * np.tan(steering) / V.WHEELBASE
    assert out[V.ANGULAR_VELOCITY] == pytest.approx(yaw_rate)
    assert out[V.ANGULAR_ACCELERATION] == pytest.approx((yaw_rate - 0.1) / DT)
    assert out[V.VELOCITY_Y] == 0.0 and out[V.ACCELERATION_Y] == 0.0


def test_bicycle_clips_steering_and_wraps_heading() -> None:
    state = ego_state(heading=np.pi - 0.01, speed=10.0)[None]
    state[0, V.STEERING_ANGLE] = 1.0
    out = BatchKinematicBicycleModel().propagate(state, np.zeros(1), np.array([100.0]), DT)[0]
    assert out[V.STEERING_ANGLE] == pytest.approx(np.pi / 3)
    assert -np.pi <= out[V.HEADING] < 0.0  # crossed +pi and wrapped


# -------------------------------------------------------------------------------------------------------- LQR
def test_profile_fit_recovers_speed_and_curvature() -> None:
    t = DT * np.arange(41)
    straight = np.stack([8.0 * t, np.zeros_like(t), np.zeros_like(t)], axis=-1)
    radius = 20.0
    arc = 8.0 * t / radius
    circle = np.stack([radius * np.sin(arc), radius * (1 - np.cos(arc)), arc], axis=-1)
    speed, curvature = fit_speed_and_curvature(np.stack([straight, circle]), DT, 1e-4, 1e-2)
    assert speed.shape == (2, 40)
    assert np.allclose(speed[0], 8.0, atol=1e-6) and np.allclose(curvature[0], 0.0, atol=1e-9)
    assert np.allclose(speed[1, 5:-5], 8.0, atol=0.05) and np.allclose(curvature[1, 5:-5], 1 / radius, atol=2e-3)


# --------------------------------------------------------------------------------------------------- simulator
def test_reference_states_interpolate_the_plan() -> None:
    ego = ego_state(x=100.0, y=50.0, heading=np.pi / 2, speed=4.0)
    ref = local_trajectories_to_states(straight_plan(4.0)[None], 0.5, ego)
    assert ref.shape == (1, 41, V.STATE_SIZE)
    assert np.allclose(ref[0, 0, :4], ego[:4])
    assert np.allclose(ref[0, 5, :3], [100.0, 52.0, np.pi / 2])  # t = 0.5 s, 2 m ahead (north)
    assert np.allclose(ref[0, 7, :2], [100.0, 52.8])  # between knots
    assert ref[0, 5, V.VELOCITY_X] == 0.0 and ref[0, 2, V.VELOCITY_X] == pytest.approx(4.0 * 0.6)
    short = local_trajectories_to_states(straight_plan(4.0, n=4)[None], 0.5, ego)
    assert np.allclose(short[0, 20:, :3], short[0, 20, :3])  # clipped at the plan's last time (2 s)


def test_reference_heading_interpolates_across_pi() -> None:
    ego = ego_state(heading=np.pi - 0.05)
    plan = np.zeros((1, 8, 3))
    plan[0, :, 2] = 0.1 * np.arange(1, 9)
    ref = local_trajectories_to_states(plan, 0.5, ego)
    headings = np.unwrap(ref[0, :, 2])
    assert np.all(np.diff(headings) > 0) and np.all(np.abs(ref[0, :, 2]) <= np.pi)


def test_straight_line_is_tracked() -> None:
    ego = ego_state(x=10.0, y=-3.0, heading=0.3, speed=10.0)
    ref = local_trajectories_to_states(straight_plan(10.0)[None], 0.5, ego)
    rollout = simulate(ego, ref)[0]
    assert rollout.shape == (41, V.STATE_SIZE)
    assert np.allclose(rollout[0], ego)
    errors = np.linalg.norm(rollout[:, :2] - ref[0, :, :2], axis=1)
    assert errors.max() < 0.3
    assert np.abs(rollout[:, V.VELOCITY_X] - 10.0).max() < 0.2


def test_stop_trajectory_stops() -> None:
    ego = ego_state(speed=5.0)
    rollout = simulate(ego, local_trajectories_to_states(np.zeros((1, 8, 3)), 0.5, ego))[0]
    assert rollout[-1, V.VELOCITY_X] < 0.3
    assert np.abs(rollout[-10:, V.X] - rollout[-1, V.X]).max() < 0.3  # at rest for the last second
    assert rollout[-1, V.X] < 6.0


def test_curve_is_tracked() -> None:
    ego = ego_state(speed=6.0)
    t = 0.5 * np.arange(1, 9)
    arc = 6.0 * t / 25.0
    plan = np.stack([25.0 * np.sin(arc), 25.0 * (1 - np.cos(arc)), arc], axis=-1)[None]
    ref = local_trajectories_to_states(plan, 0.5, ego)
    rollout = simulate(ego, ref)[0]
    assert np.linalg.norm(rollout[-1, :2] - ref[0, -1, :2]) < 1.0
    assert rollout[-1, V.HEADING] == pytest.approx(arc[-1], abs=0.1)


def test_batch_equals_one_by_one() -> None:
    rng = np.random.default_rng(3)
    ego = ego_state(x=5.0, y=2.0, heading=-2.0, speed=7.0)
    plans = np.cumsum(rng.normal([3.0, 0.0, 0.0], [1.5, 0.5, 0.05], (6, 8, 3)), axis=1)
    ref = local_trajectories_to_states(plans, 0.5, ego)
    batch = simulate(ego, ref)
    alone = np.concatenate([simulate(ego, ref[i : i + 1]) for i in range(len(plans))])
    assert np.allclose(batch, alone, rtol=0, atol=1e-9)


def test_bad_inputs_name_the_problem() -> None:
    ego = ego_state()
    with pytest.raises(ValueError, match="NaN"):
        local_trajectories_to_states(np.full((1, 8, 3), np.nan), 0.5, ego)
    with pytest.raises(ValueError, match="shape"):
        local_trajectories_to_states(np.zeros((8, 3)), 0.5, ego)
    with pytest.raises(ValueError, match="ego_state_t0"):
        simulate(np.zeros(3), np.zeros((1, 41, V.STATE_SIZE)))
    with pytest.raises(ValueError, match="ego_state_t0.*NaN"):
        simulate(np.full(V.STATE_SIZE, np.inf), np.zeros((1, 41, V.STATE_SIZE)))
    with pytest.raises(ValueError, match="reference_states"):
        simulate(ego, np.zeros((41, V.STATE_SIZE)))
    with pytest.raises(ValueError, match="sampling_interval"):
        local_trajectories_to_states(np.zeros((1, 8, 3)), 0.0, ego)


# ------------------------------------------------------------------------------------------------------ traffic
def make_observation(tracks: list[tuple[str, str, float, float, float, float]], steps: int = 41) -> Observation:
    """Tracks `(token, type, x, y, heading, speed)` moving straight at constant speed over `steps` steps."""
    n = len(tracks)
    t = DT * np.arange(steps)[:, None]
    x0 = np.array([[tr[2] for tr in tracks]]).reshape(1, n)
    y0 = np.array([[tr[3] for tr in tracks]]).reshape(1, n)
    heading = np.array([tr[4] for tr in tracks], dtype=float)
    speed = np.array([tr[5] for tr in tracks], dtype=float)
    vel = np.stack([speed * np.cos(heading), speed * np.sin(heading)], axis=-1)
    centers = np.stack([x0 + t * vel[:, 0], y0 + t * vel[:, 1]], axis=-1)
    return Observation(
        tokens=np.array([tr[0] for tr in tracks], dtype=object), types=np.array([tr[1] for tr in tracks], dtype=object),
        sizes=np.tile([4.5, 2.0], (n, 1)).reshape(n, 2), first_headings=heading, first_speeds=speed,
        present=np.ones((steps, n), dtype=bool), centers=centers.reshape(steps, n, 2),
        headings=np.broadcast_to(heading, (steps, n)).copy(), velocities=np.broadcast_to(vel, (steps, n, 2)).copy(),
        red_light_ids=np.array([], dtype=object), red_light_polygons=np.array([], dtype=object),
        red_light_active=np.zeros((steps, 0), dtype=bool),
    )  # fmt: skip


def test_log_replay_drops_tracks_overlapping_the_ego() -> None:
    obs = make_observation([("inside", "vehicle", 2.0, 0.5, 0.0, 3.0), ("ahead", "vehicle", 20.0, 0.0, 0.0, 3.0)])
    replay = traffic.log_replay(obs, ego_state())
    assert not replay.present[:, 0].any() and replay.present[:, 1].all()
    assert np.allclose(replay.centers[:, 1], obs.centers[:, 1])
    clear = make_observation([("ahead", "vehicle", 20.0, 0.0, 0.0, 3.0)])
    assert traffic.log_replay(clear, ego_state()) is clear


def test_constant_velocity_moves_t0_vehicles_only() -> None:
    obs = make_observation([("car", "vehicle", 20.0, 0.0, 0.0, 5.0), ("ped", "pedestrian", 5.0, 5.0, 1.0, 1.0)])
    obs.velocities[0, 0] = [0.0, 2.0]  # the t0 velocity is what counts
    obs.present[0, 1] = False
    cv = traffic.constant_velocity(obs)
    assert np.allclose(cv.centers[40, 0], [20.0, 8.0]) and np.allclose(cv.headings[:, 0], 0.0)
    assert np.allclose(cv.centers[1:, 1], obs.centers[1:, 1]) and not cv.present[0, 1]
