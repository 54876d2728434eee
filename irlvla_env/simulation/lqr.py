"""Batched LQR trajectory tracker (nuPlan's LQR as batched by navsim's `BatchLQRTracker`, spec §4.2).

Before tracking, speed and curvature profiles are fitted to the reference poses by regularised least squares
(jerk penalty 1e-4 — with navsim's degenerate difference matrix, see `_speed_fit_operator` — and curvature-rate
penalty 1e-2). Each step then decouples into
- longitudinal: one-step LQR holding the acceleration over the 10-step horizon to reach the reference speed
  10 steps ahead (or a P controller when both speeds are below 0.2 m/s);
- lateral: one-step LQR on the Euler-discretised, linearised (lateral error, heading error, steering) dynamics
  over the same horizon, driven by the speed profile the chosen acceleration implies.

The speed fit needs no per-trajectory solve: with unit heading vectors its normal matrix does not depend on the
headings, so one precomputed matrix maps the displacements projected on the headings to (v0, accelerations).
The curvature fit depends on the fitted speeds and is solved per trajectory (a batched 40×40 solve, where
navsim uses `pinv`; the matrices are positive definite, so both give the same solution up to rounding).
"""

from __future__ import annotations

import functools

import numpy as np

from irlvla_env.simulation import vehicle as V

INITIAL_CURVATURE_PENALTY = 1e-10  # keeps the curvature fit well posed when the reference speed is zero


def normalize_angle(angle: np.ndarray) -> np.ndarray:
    return np.arctan2(np.sin(angle), np.cos(angle))


@functools.lru_cache(maxsize=8)
def _speed_fit_operator(num_displacements: int, dt: float, jerk_penalty: float) -> np.ndarray:
    """`(M, M)` matrix mapping the M heading-projected displacements to `(v0, a_0 … a_{M-2})`."""
    m = num_displacements
    lower = np.tril(np.full((m, m), dt**2))  # displacement i gets dt^2 per acceleration a_j with j < i
    lower[:, 0] = dt  # … and dt per unit of initial speed
    # [Q] navsim's batched `_make_banded_difference_matrix` writes the -1 diagonal over the +1 band, so its
    # "jerk" rows penalise a_r itself, except the last, which is a_{M-2} - a_{M-3}. We keep that regulariser
    # (nuPlan's unbatched tracker has the true difference matrix).
    difference = np.zeros((m - 2, m))
    difference[:, 1:-1] = -np.eye(m - 2)
    difference[-1, -1] = 1.0
    normal = lower.T @ lower + jerk_penalty * difference.T @ difference
    return np.linalg.pinv(normal) @ lower.T


def _integrate(initial: np.ndarray, derivatives: np.ndarray, dt: float) -> np.ndarray:
    """Profile `(K, N+1)` from initial values `(K,)` and derivatives `(K, N)`."""
    out = np.empty((derivatives.shape[0], derivatives.shape[1] + 1))
    out[:, 0] = 0.0
    np.cumsum(derivatives * dt, axis=1, out=out[:, 1:])
    return out + initial[:, None]


def fit_speed_and_curvature(
    poses: np.ndarray, dt: float, jerk_penalty: float, curvature_rate_penalty: float
) -> tuple[np.ndarray, np.ndarray]:
    """Speed and curvature profiles `(K, N-1)` fitted to reference poses `(K, N, 3)` sampled every `dt`."""
    displacements = np.diff(poses[..., :2], axis=1)  # (K, M, 2)
    heading_steps = normalize_angle(np.diff(poses[..., 2], axis=1))  # (K, M)
    headings = poses[:, :-1, 2]
    projected = np.cos(headings) * displacements[..., 0] + np.sin(headings) * displacements[..., 1]
    m = projected.shape[1]
    solution = projected @ _speed_fit_operator(m, dt, jerk_penalty).T  # (K, M): v0, a_0 … a_{M-2}
    speed = _integrate(solution[:, 0], solution[:, 1:], dt)  # (K, M)

    # Normal equations of the curvature fit in closed form: row r of the design matrix is v_r·dt for the initial
    # curvature and v_r·dt² for every curvature rate j ≤ r, so its Gram entries are suffix sums of v_r².
    order = np.maximum.outer(np.arange(m), np.arange(m))
    scale = dt ** (2.0 + (np.arange(m) > 0)[:, None] + (np.arange(m) > 0)[None, :])
    suffix_v2 = np.cumsum((speed**2)[:, ::-1], axis=1)[:, ::-1]
    suffix_vy = np.cumsum((speed * heading_steps)[:, ::-1], axis=1)[:, ::-1]
    penalty = curvature_rate_penalty * np.eye(m)
    penalty[0, 0] = INITIAL_CURVATURE_PENALTY
    normal = suffix_v2[:, order] * scale + penalty
    rhs = suffix_vy * dt**2
    rhs[:, 0] = (speed * heading_steps).sum(axis=1) * dt
    curvature_solution = np.linalg.solve(normal, rhs[..., None])[..., 0]
    curvature = _integrate(curvature_solution[:, 0], curvature_solution[:, 1:], dt)
    return speed, curvature


class BatchLQRTracker:
    """Tracks `K` reference trajectories at once; call `update(reference_states)` then `track(k, states)` per step.

    :param q_longitudinal: weight on the speed error.
    :param r_longitudinal: weight on the acceleration.
    :param q_lateral: weights on (lateral error, heading error, steering angle).
    :param r_lateral: weight on the steering rate.
    :param discretization_time: [s] step of the reference and of the controller.
    :param tracking_horizon: steps looked ahead.
    :param jerk_penalty: regularisation of the speed fit.
    :param curvature_rate_penalty: regularisation of the curvature fit.
    :param stopping_proportional_gain: gain of the stopping P controller.
    :param stopping_velocity: [m/s] below this (reference and current) the stopping controller takes over.
    :param wheelbase: [m].
    """

    def __init__(
        self,
        q_longitudinal: float = 10.0,
        r_longitudinal: float = 1.0,
        q_lateral: tuple[float, float, float] = (1.0, 10.0, 0.0),
        r_lateral: float = 1.0,
        discretization_time: float = 0.1,
        tracking_horizon: int = 10,
        jerk_penalty: float = 1e-4,
        curvature_rate_penalty: float = 1e-2,
        stopping_proportional_gain: float = 0.5,
        stopping_velocity: float = 0.2,
        wheelbase: float = V.WHEELBASE,
    ) -> None:
        if tracking_horizon <= 1:
            raise ValueError(f"tracking_horizon must be > 1 (steering rate needs 2 Euler steps), got {tracking_horizon}")
        if discretization_time <= 0 or jerk_penalty <= 0 or curvature_rate_penalty <= 0:
            raise ValueError("discretization_time, jerk_penalty and curvature_rate_penalty must be positive")
        self.q_longitudinal = q_longitudinal
        self.r_longitudinal = r_longitudinal
        self.q_lateral = tuple(float(q) for q in q_lateral)
        self.r_lateral = r_lateral
        self.dt = discretization_time
        self.horizon = tracking_horizon
        self.jerk_penalty = jerk_penalty
        self.curvature_rate_penalty = curvature_rate_penalty
        self.stopping_gain = stopping_proportional_gain
        self.stopping_velocity = stopping_velocity
        self.wheelbase = wheelbase
        self._reference: np.ndarray | None = None
        self._speed: np.ndarray | None = None
        self._curvature: np.ndarray | None = None

    def update(self, reference_states: np.ndarray) -> None:
        """Load `(K, N, >=3)` reference states (only x, y, heading are used) and fit their profiles."""
        self._reference = np.asarray(reference_states, dtype=np.float64)
        self._speed, self._curvature = fit_speed_and_curvature(
            self._reference[..., :3], self.dt, self.jerk_penalty, self.curvature_rate_penalty
        )

    def track(self, index: int, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Commands `(acceleration (K,), steering rate (K,))` at reference index `index` for current states `(K, 11)`."""
        if self._reference is None:
            raise RuntimeError("BatchLQRTracker.track called before update()")
        reference = self._reference[:, index]
        dx = states[:, V.X] - reference[:, V.X]
        dy = states[:, V.Y] - reference[:, V.Y]
        ref_heading = reference[:, V.HEADING]
        lateral_error = -dx * np.sin(ref_heading) + dy * np.cos(ref_heading)
        heading_error = normalize_angle(states[:, V.HEADING] - ref_heading)
        speed = states[:, V.VELOCITY_X]
        steering = states[:, V.STEERING_ANGLE]

        last = self._speed.shape[1] - 1
        ref_index = min(index + self.horizon, last)
        ref_speed = self._speed[:, ref_index]
        curvature = np.empty((len(states), self.horizon))
        n = ref_index - index
        curvature[:, :n] = self._curvature[:, index:ref_index]
        curvature[:, n:] = self._curvature[:, ref_index, None]

        stop = (ref_speed <= self.stopping_velocity) & (speed <= self.stopping_velocity)
        b_long = self.horizon * self.dt
        lqr_accel = -(b_long * self.q_longitudinal * (speed - ref_speed)) / (
            b_long * self.q_longitudinal * b_long + self.r_longitudinal
        )
        accel = np.where(stop, -self.stopping_gain * (speed - ref_speed), lqr_accel)
        steering_rate = self._lateral(lateral_error, heading_error, steering, speed, accel, curvature)
        return accel, np.where(stop, 0.0, steering_rate)

    def _lateral(
        self, lateral_error: np.ndarray, heading_error: np.ndarray, steering: np.ndarray, speed: np.ndarray,
        accel: np.ndarray, curvature: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        """One-step lateral LQR: steering rate `(K,)`.

        The horizon's state-transition matrices M_t are unit upper-triangular [[1, v_t dt, 0], [0, 1, v_t dt / L],
        [0, 0, 1]], so A = Π M_t, B and g (navsim's recursion A ← M A, B ← M B + [0, 0, dt], g ← M g + [0, −v κ dt, 0])
        have closed forms in (exclusive) cumulative sums over the horizon.
        """
        dt, wheelbase = self.dt, self.wheelbase
        steps = np.arange(self.horizon)
        v = speed[:, None] + (steps * dt)[None, :] * accel[:, None]  # (K, H) speed implied by the acceleration
        v[:, 0] = speed
        m01 = v * dt
        m12 = v * dt / wheelbase
        affine = -v * curvature * dt

        def before(x: np.ndarray) -> np.ndarray:  # Σ_{s<t} x_s
            out = np.zeros_like(x)
            np.cumsum(x[:, :-1], axis=1, out=out[:, 1:])
            return out

        a01, a12 = m01.sum(axis=1), m12.sum(axis=1)
        a02 = (m01 * before(m12)).sum(axis=1)
        b2 = self.horizon * dt
        b1 = (m12 * steps * dt).sum(axis=1)
        b0 = (m01 * before(m12 * steps * dt)).sum(axis=1)
        g1 = affine.sum(axis=1)
        g0 = (m01 * before(affine)).sum(axis=1)
        g2 = 0.0
        err0 = lateral_error + a01 * heading_error + a02 * steering + g0
        err1 = normalize_angle(heading_error + a12 * steering + g1)
        err2 = normalize_angle(steering + g2)
        q0, q1, q2 = self.q_lateral
        gain = -1.0 / (b0 * q0 * b0 + b1 * q1 * b1 + b2 * q2 * b2 + self.r_lateral)
        return gain * (b0 * q0 * err0 + b1 * q1 * err1 + b2 * q2 * err2)
