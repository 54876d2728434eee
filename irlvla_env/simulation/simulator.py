"""Planned trajectories → 10 Hz reference states → simulated ego rollouts (spec §4.2, navsim `PDMSimulator`).

`local_trajectories_to_states` reproduces navsim's `transform_trajectory` + `get_trajectory_as_array`: the
local poses go to the global frame with the t0 rear-axle pose, the current ego state is prepended, and the
resulting `InterpolatedTrajectory` is sampled every 0.1 s over 0 … 4 s (clipped to its end). Linear fields are
interpolated linearly, the heading through `np.unwrap`; steering rate and angular terms are 0, as nuPlan's
split-state interpolation leaves them. `simulate` rolls the LQR tracker and the bicycle model 40 steps from
the logged t0 state. Both are batched over `K` candidate trajectories.
"""

from __future__ import annotations

import numpy as np

from irlvla_env.simulation import vehicle as V
from irlvla_env.simulation.bicycle import BatchKinematicBicycleModel, principal_value
from irlvla_env.simulation.lqr import BatchLQRTracker

STEP_S = 0.1  # [s] simulation step
HORIZON_S = 4.0  # [s] scored horizon
NUM_STATES = 41  # 0.0 … 4.0 s
# Interpolated linearly by nuPlan's EgoState split state (the heading is the angular one).
_LINEAR_FIELDS = (V.X, V.Y, V.VELOCITY_X, V.VELOCITY_Y, V.ACCELERATION_X, V.ACCELERATION_Y, V.STEERING_ANGLE)


def _check_ego_state(ego_state: np.ndarray) -> np.ndarray:
    ego_state = np.asarray(ego_state, dtype=np.float64)
    if ego_state.shape != (V.STATE_SIZE,):
        raise ValueError(f"ego_state_t0 must have shape ({V.STATE_SIZE},), got {ego_state.shape}")
    if not np.all(np.isfinite(ego_state)):
        raise ValueError(f"ego_state_t0 contains NaN or inf: {ego_state}")
    return ego_state


def local_to_global_poses(poses_local: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Rear-axle-local poses `(..., 3)` → global, headings wrapped (nuPlan `relative_to_absolute_poses`)."""
    c, s = np.cos(origin[2]), np.sin(origin[2])
    out = np.empty(poses_local.shape, dtype=np.float64)
    out[..., 0] = origin[0] + c * poses_local[..., 0] - s * poses_local[..., 1]
    out[..., 1] = origin[1] + s * poses_local[..., 0] + c * poses_local[..., 1]
    out[..., 2] = np.arctan2(np.sin(origin[2] + poses_local[..., 2]), np.cos(origin[2] + poses_local[..., 2]))
    return out


def interpolate_states(knot_times: np.ndarray, knot_states: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Sample `(K, n, 11)` knot states at `times` (within the knot range) like nuPlan's `InterpolatedTrajectory`.

    :param knot_times: `(n,)` strictly increasing [s].
    :param knot_states: `(K, n, 11)`.
    :param times: `(T,)` [s], clipped to `[knot_times[0], knot_times[-1]]`.
    :return: `(K, T, 11)`.
    """
    times = np.clip(times, knot_times[0], knot_times[-1])
    hi = np.clip(np.searchsorted(knot_times, times, side="left"), 1, len(knot_times) - 1)
    lo = hi - 1
    weight = (times - knot_times[lo]) / (knot_times[hi] - knot_times[lo])  # (T,)
    out = np.zeros(knot_states.shape[:1] + times.shape + (V.STATE_SIZE,), dtype=np.float64)
    fields = list(_LINEAR_FIELDS)
    low, high = knot_states[:, lo][..., fields], knot_states[:, hi][..., fields]
    out[..., fields] = low + weight[None, :, None] * (high - low)
    heading = np.unwrap(knot_states[..., V.HEADING], axis=1)
    out[..., V.HEADING] = principal_value(heading[:, lo] + weight[None, :] * (heading[:, hi] - heading[:, lo]))
    return out


def local_trajectories_to_states(
    poses_local: np.ndarray, sampling_interval: float, ego_state_t0: np.ndarray
) -> np.ndarray:
    """Reference states `(K, 41, 11)` at 0.0 … 4.0 s for `K` planned trajectories.

    :param poses_local: `(K, n, 3)` poses `(x, y, heading)` in the t0 rear-axle frame at times
        `sampling_interval · (1 … n)` (navsim: n = 8, interval 0.5 s).
    :param sampling_interval: [s] time between planned poses.
    :param ego_state_t0: `(11,)` the logged global ego state at t0 (rear axle).
    """
    ego_state_t0 = _check_ego_state(ego_state_t0)
    poses_local = np.asarray(poses_local, dtype=np.float64)
    if poses_local.ndim != 3 or poses_local.shape[2] != 3 or poses_local.shape[1] < 1:
        raise ValueError(f"poses_local must have shape (K, n>=1, 3), got {poses_local.shape}")
    if not np.all(np.isfinite(poses_local)):
        bad = np.unique(np.nonzero(~np.isfinite(poses_local))[0])
        raise ValueError(f"poses_local contains NaN or inf (trajectories {bad.tolist()})")
    if not (np.isfinite(sampling_interval) and sampling_interval > 0):
        raise ValueError(f"sampling_interval must be a positive number of seconds, got {sampling_interval}")
    k, n, _ = poses_local.shape
    knots = np.zeros((k, n + 1, V.STATE_SIZE), dtype=np.float64)
    knots[:, 0] = ego_state_t0
    knots[:, 1:, :3] = local_to_global_poses(poses_local, ego_state_t0[:3])
    knot_times = sampling_interval * np.arange(n + 1)
    times = STEP_S * np.arange(NUM_STATES)
    return interpolate_states(knot_times, knots, times)


class Simulator:
    """LQR tracker + kinematic bicycle, stepped at 0.1 s over the length of the reference (navsim `PDMSimulator`)."""

    def __init__(self, step_s: float = STEP_S) -> None:
        self.step_s = step_s
        self.tracker = BatchLQRTracker(discretization_time=step_s)
        self.motion_model = BatchKinematicBicycleModel()

    def simulate(self, ego_state_t0: np.ndarray, reference_states: np.ndarray) -> np.ndarray:
        """Simulated states `(K, N, 11)` tracking reference states `(K, N, 11)` (N = 41 for scoring) from t0."""
        ego_state_t0 = _check_ego_state(ego_state_t0)
        reference_states = np.asarray(reference_states, dtype=np.float64)
        if reference_states.ndim != 3 or reference_states.shape[2] != V.STATE_SIZE or reference_states.shape[1] < 3:
            raise ValueError(f"reference_states must have shape (K, N>=3, {V.STATE_SIZE}), got {reference_states.shape}")
        if not np.all(np.isfinite(reference_states[..., :3])):
            bad = np.unique(np.nonzero(~np.isfinite(reference_states[..., :3]))[0])
            raise ValueError(f"reference_states poses contain NaN or inf (trajectories {bad.tolist()})")
        k, n, _ = reference_states.shape
        self.tracker.update(reference_states)
        states = np.empty((k, n, V.STATE_SIZE), dtype=np.float64)
        states[:, 0] = ego_state_t0
        for index in range(1, n):
            accel, steering_rate = self.tracker.track(index - 1, states[:, index - 1])
            states[:, index] = self.motion_model.propagate(states[:, index - 1], accel, steering_rate, self.step_s)
        return states


def simulate(ego_state_t0: np.ndarray, reference_states: np.ndarray) -> np.ndarray:
    """Simulated rollouts `(K, 41, 11)` of reference states `(K, 41, 11)` from the t0 ego state `(11,)`."""
    return Simulator().simulate(ego_state_t0, reference_states)
