"""The nine EPDMS sub-metrics, vectorised over K rollouts × 41 steps (spec §4.5).

navsim walks proposals, steps and shapely STRtree hits in Python loops. Here every box-box test is one
oriented-box separating-axis test in numpy on the candidate pairs that survive a bounding-circle filter, and the
order-dependent "ignore this track once it was found harmless" rules of NC and TTC become a first-occurrence
comparison per (proposal, track). Map questions are answered for all states at once by
`PDMDrivableMap.ego_areas`.

All functions take rear-axle states `(K, S, 11)` in the layout of `irlvla_env.simulation.vehicle`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import shapely
from scipy.signal import savgol_filter

from irlvla_env.scoring.drivable_map import EgoAreas
from irlvla_env.scoring.observation import Observation, box_corners
from irlvla_env.simulation import vehicle as V

STEP_S = 0.1
COLLISION_STOPPED_SPEED = 5e-2  # [m/s] nuPlan's stopped threshold for collision classification
AHEAD_ANGLE = np.deg2rad(30.0)
BEHIND_ANGLE = np.deg2rad(150.0)
AT_FAULT_AGENT_VALUE = 0.0  # vehicle, pedestrian, bicycle
AT_FAULT_STATIC_VALUE = 0.5  # traffic cone, barrier, czone sign, generic object
EGO_RADIUS = float(np.hypot(V.HALF_LENGTH, V.HALF_WIDTH))


@dataclass(frozen=True)
class ScorerConfig:
    """`PDMScorerConfig` of navsim v2 (`pdm_scorer.yaml`), units in brackets."""

    progress_weight: float = 5.0
    ttc_weight: float = 5.0
    lane_keeping_weight: float = 2.0
    history_comfort_weight: float = 2.0
    two_frame_extended_comfort_weight: float = 2.0
    driving_direction_horizon: float = 1.0  # [s]
    driving_direction_compliance_threshold: float = 2.0  # [m]
    driving_direction_violation_threshold: float = 6.0  # [m]
    stopped_speed_threshold: float = 5e-3  # [m/s] (ttc)
    future_collision_horizon_window: float = 1.0  # [s] (ttc)
    progress_distance_threshold: float = 5.0  # [m]
    lane_keeping_deviation_limit: float = 0.5  # [m]
    lane_keeping_horizon_window: float = 2.0  # [s]
    human_penalty_filter: bool = True
    # navsim before commit 359c7f7 (v2.0–v2.2) rewrote the filtered columns but not the score (spec §4.8).
    human_filter_prefix_bug: bool = False

    @property
    def weights(self) -> dict[str, float]:
        return {
            "EP": self.progress_weight, "TTC": self.ttc_weight, "LK": self.lane_keeping_weight,
            "HC": self.history_comfort_weight, "EC": self.two_frame_extended_comfort_weight,
        }  # fmt: skip


def speeds(states: np.ndarray) -> np.ndarray:
    return np.hypot(states[..., V.VELOCITY_X], states[..., V.VELOCITY_Y])


# ------------------------------------------------------------------------------------------------ geometry
def _axes(corners: np.ndarray) -> np.ndarray:
    """The two edge directions `(..., 2, 2)` of boxes given as corners `(..., 4, 2)` (FL, RL, RR, FR)."""
    return np.stack([corners[..., 0, :] - corners[..., 1, :], corners[..., 0, :] - corners[..., 3, :]], axis=-2)


def _separated_on(axes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether the point sets `a (..., n, 2)` and `b (..., m, 2)` are strictly separated on any of `axes (..., j, 2)`."""
    pa = np.einsum("...jd,...nd->...jn", axes, a)
    pb = np.einsum("...jd,...nd->...jn", axes, b)
    return ((pa.max(-1) < pb.min(-1)) | (pb.max(-1) < pa.min(-1))).any(-1)


def segment_intersects_box(p: np.ndarray, q: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Whether segments `p–q (..., 2)` touch boxes `(..., 4, 2)` (axes: box edges, segment and its normal)."""
    d = q - p
    normal = np.stack([-d[..., 1], d[..., 0]], axis=-1)
    axes = np.concatenate([_axes(box), d[..., None, :], normal[..., None, :]], axis=-2)
    return ~_separated_on(axes, np.stack([p, q], axis=-2), box)


def relative_angle(origin: np.ndarray, heading: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Angle between `heading` and the vector origin → target (NaN when they coincide, as nuPlan's arccos)."""
    vec = target - origin
    norm = np.linalg.norm(vec, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (np.cos(heading) * vec[..., 0] + np.sin(heading) * vec[..., 1]) / norm
        return np.arccos(cos)


def _first_index(group: np.ndarray, order: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group id, the smallest `order` value among the entries (inf when none)."""
    first = np.full(n_groups, np.inf)
    np.minimum.at(first, group, order)
    return first


def _overlapping_pairs(ego_centers: np.ndarray, ego_headings: np.ndarray, obs: Observation, obs_steps: np.ndarray):
    """Indices `(i, t)` of ego boxes `i` (centres `(N, 2)`, headings `(N,)`) that intersect track `t` at
    observation step `obs_steps[i]`: a bounding-circle filter, then the exact oriented-box separating-axis test
    (touching counts, as shapely's `intersects`)."""
    centers = obs.centers[obs_steps]  # (N, T, 2)
    reach = EGO_RADIUS + 0.5 * np.hypot(obs.sizes[:, 0], obs.sizes[:, 1])  # (T,)
    dx = centers[..., 0] - ego_centers[:, None, 0]
    dy = centers[..., 1] - ego_centers[:, None, 1]
    with np.errstate(invalid="ignore"):
        near = (dx * dx + dy * dy) <= (reach * reach)[None, :] + 1e-9
    i, t = np.nonzero(near & obs.present[obs_steps])
    if len(i) == 0:
        return i, t
    he, ho = ego_headings[i], obs.headings[obs_steps[i], t]
    ce, se, co, so = np.cos(he), np.sin(he), np.cos(ho), np.sin(ho)
    c, s = np.abs(np.cos(ho - he)), np.abs(np.sin(ho - he))
    ae, be = V.HALF_LENGTH, V.HALF_WIDTH
    ao, bo = 0.5 * obs.sizes[t, 0], 0.5 * obs.sizes[t, 1]
    ddx, ddy = dx[i, t], dy[i, t]
    separated = (
        (np.abs(ddx * ce + ddy * se) > ae + ao * c + bo * s)
        | (np.abs(-ddx * se + ddy * ce) > be + ao * s + bo * c)
        | (np.abs(ddx * co + ddy * so) > ao + ae * c + be * s)
        | (np.abs(-ddx * so + ddy * co) > bo + ae * s + be * c)
    )
    return i[~separated], t[~separated]


def box_corners_at(obs: Observation, steps: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """Corners `(n, 4, 2)` of track `tracks[j]` at step `steps[j]`."""
    return box_corners(obs.centers[steps, tracks], obs.headings[steps, tracks], obs.sizes[tracks, 0], obs.sizes[tracks, 1])


# ---------------------------------------------------------------------------------------------- multipliers
def no_at_fault_collisions(states: np.ndarray, coords: np.ndarray, areas: EgoAreas, obs: Observation) -> np.ndarray:
    """NC `(K,)`: 1, or the minimum of 0 (agents) / 0.5 (static objects) over at-fault collisions."""
    k_n, s_n = states.shape[:2]
    steps = np.tile(np.arange(s_n), k_n)
    i, t = _overlapping_pairs(coords[:, :, V.CENTER].reshape(-1, 2), states[..., V.HEADING].reshape(-1), obs, steps)
    if len(i) == 0:
        return np.ones(k_n)
    k, s = np.divmod(i, s_n)
    state = states[k, s]
    ego_stopped = speeds(state) <= COLLISION_STOPPED_SPEED
    track_stopped = ~obs.is_agent[t] | (obs.first_speeds[t] <= COLLISION_STOPPED_SPEED)
    behind = relative_angle(state[:, :2], state[:, V.HEADING], obs.centers[s, t]) > BEHIND_ANGLE
    front = segment_intersects_box(coords[k, s, V.FRONT_LEFT], coords[k, s, V.FRONT_RIGHT], box_corners_at(obs, s, t))
    risky_area = areas.multiple_lanes[k, s] | areas.non_drivable_area[k, s]
    active = ~ego_stopped & ~track_stopped & ~behind
    at_fault = ~ego_stopped & (track_stopped | (active & front) | (active & ~front & risky_area))

    # A track found harmless once is ignored from then on: only at-fault hits before that step count.
    group = k * obs.num_tracks + t
    harmless_from = _first_index(group[~at_fault], s[~at_fault], k_n * obs.num_tracks)
    counted = at_fault & (s < harmless_from[group])
    value = np.where(obs.is_agent[t], AT_FAULT_AGENT_VALUE, AT_FAULT_STATIC_VALUE)
    scores = np.ones(k_n)
    np.minimum.at(scores, k[counted], value[counted])
    return scores


def drivable_area_compliance(areas: EgoAreas) -> np.ndarray:
    """DAC `(K,)`: 0 if any corner leaves the drivable polygons at any step."""
    return np.where(areas.non_drivable_area.any(axis=1), 0.0, 1.0)


def driving_direction_compliance(coords: np.ndarray, areas: EgoAreas, config: ScorerConfig) -> np.ndarray:
    """DDC `(K,)` from the largest 1 s window of centre travel against traffic (outside intersections)."""
    centers = coords[:, :, V.CENTER]
    travel = np.zeros(centers.shape[:2])
    travel[:, 1:] = np.linalg.norm(np.diff(centers, axis=1), axis=-1)
    travel[~areas.oncoming_traffic | areas.center_in_intersection] = 0.0
    horizon = int(config.driving_direction_horizon / STEP_S)
    cumulative = np.concatenate([np.zeros((len(travel), 1)), np.cumsum(travel, axis=1)], axis=1)
    upper = np.arange(1, travel.shape[1] + 1)
    windowed = cumulative[:, upper] - cumulative[:, np.maximum(0, upper - 1 - horizon)]
    worst = windowed.max(axis=1)
    return np.where(
        worst < config.driving_direction_compliance_threshold, 1.0,
        np.where(worst < config.driving_direction_violation_threshold, 0.5, 0.0),
    )  # fmt: skip


def traffic_light_compliance(coords: np.ndarray, obs: Observation) -> np.ndarray:
    """TLC `(K,)`: 0 if the ego box touches a red route connector while it is red."""
    k_n, s_n = coords.shape[:2]
    scores = np.ones(k_n)
    active_any = obs.red_light_active.any(axis=0)
    if not active_any.any():
        return scores
    centers = coords[:, :, V.CENTER].reshape(-1, 2)
    bounds = shapely.bounds(obs.red_light_polygons).reshape(-1, 4)
    lo = bounds[:, :2].min(axis=0) - EGO_RADIUS
    hi = bounds[:, 2:].max(axis=0) + EGO_RADIUS
    near = np.flatnonzero(((centers >= lo) & (centers <= hi)).all(axis=1))  # only these can touch a light
    if len(near) == 0:
        return scores
    tree = shapely.STRtree(obs.red_light_polygons)
    i, light = tree.query(shapely.polygons(coords[:, :, :4].reshape(-1, 4, 2)[near]), predicate="intersects")
    k, s = np.divmod(near[i], s_n)
    hit = obs.red_light_active[s, light]
    scores[k[hit]] = 0.0
    return scores


# ------------------------------------------------------------------------------------------ weighted terms
def progress_along(centerline: shapely.LineString, coords: np.ndarray) -> np.ndarray:
    """Raw progress `(K,)` [m]: projection of the last centre minus that of the first, floored at 0."""
    if centerline is None or centerline.is_empty:
        return np.zeros(len(coords))
    start = shapely.line_locate_point(centerline, shapely.points(coords[:, 0, V.CENTER]))
    end = shapely.line_locate_point(centerline, shapely.points(coords[:, -1, V.CENTER]))
    return np.maximum(end - start, 0.0)


def normalise_progress(raw: np.ndarray, multipliers: np.ndarray, reference: np.ndarray, threshold: float) -> np.ndarray:
    """EP: `raw / P` clipped to [0, 1], with `P` the largest multiplier-masked progress among the proposal and
    its `reference` group (broadcast `(K,)` or scalar); 1 when `P` is at most `threshold` metres."""
    best = np.maximum(raw * multipliers, reference)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.clip(raw / best, 0.0, 1.0)
    return np.where(best > threshold, ratio, 1.0)


def time_to_collision(
    states: np.ndarray, coords: np.ndarray, areas: EgoAreas, obs: Observation, config: ScorerConfig
) -> np.ndarray:
    """TTC `(K,)`: 0 if the ego box, projected 0/0.3/0.6/0.9 s ahead at constant velocity from steps 0…31,
    meets an object that is ahead, or that is not behind while the ego is between lanes, off-road or in an
    intersection."""
    k_n, s_n = states.shape[:2]
    offsets = np.arange(0, int(config.future_collision_horizon_window * 10), 3)  # [Q] hard-coded 10 Hz
    n_eval = s_n - 1 - int(offsets.max()) + 1
    speed = speeds(states[:, :n_eval])  # (K, E)
    heading = states[:, :n_eval, V.HEADING]
    step_vec = np.stack([np.cos(heading), np.sin(heading)], axis=-1) * speed[..., None] * STEP_S  # (K, E, 2)
    shift = step_vec[:, :, None, :] * offsets[None, None, :, None]  # (K, E, O, 2)
    centers = coords[:, :n_eval, None, V.CENTER] + shift
    headings = np.broadcast_to(heading[..., None], centers.shape[:-1])
    n_off = len(offsets)
    obs_steps = np.arange(n_eval)[:, None] + offsets[None, :]  # (E, O)
    obs_steps = np.broadcast_to(obs_steps, (k_n, n_eval, n_off)).reshape(-1)
    moving = np.broadcast_to((speed >= config.stopped_speed_threshold)[..., None], (k_n, n_eval, n_off)).reshape(-1)
    flat_idx = np.nonzero(moving)[0]
    if len(flat_idx) == 0:
        return np.ones(k_n)
    i, t = _overlapping_pairs(centers.reshape(-1, 2)[flat_idx], headings.reshape(-1)[flat_idx], obs, obs_steps[flat_idx])
    i = flat_idx[i]
    k, rest = np.divmod(i, n_eval * n_off)
    e, o = np.divmod(rest, n_off)
    rear = states[k, e, :2]
    angle = relative_angle(rear, states[k, e, V.HEADING], obs.centers[obs_steps[i], t])
    risky = areas.multiple_lanes[k, e] | areas.non_drivable_area[k, e] | areas.rear_axle_in_intersection[k, e]
    violation = (angle < AHEAD_ANGLE) | (risky & ~(angle > BEHIND_ANGLE))

    # Evaluation order is (step, offset); a track is ignored after its first harmless hit.
    order = e * n_off + o
    group = k * obs.num_tracks + t
    harmless_from = _first_index(group[~violation], order[~violation], k_n * obs.num_tracks)
    counted = violation & (order < harmless_from[group])
    scores = np.ones(k_n)
    scores[k[counted]] = 0.0
    return scores


def lane_keeping(centerline: shapely.LineString, coords: np.ndarray, areas: EgoAreas, config: ScorerConfig) -> np.ndarray:
    """LK `(K,)`: 0 once the centre stays > 0.5 m from the centerline for 20 counted steps; steps inside an
    intersection neither count nor reset the run [Q]."""
    k_n, s_n = coords.shape[:2]
    if centerline is None or centerline.is_empty:
        return np.ones(k_n)
    centers = coords[:, :, V.CENTER].reshape(-1, 2)
    # Only the centerline near the rollouts can be within the limit: clipping it to their bounding box (grown by
    # the limit) keeps every deviation <= limit exact and every larger one larger, at a fraction of the cost.
    margin = config.lane_keeping_deviation_limit + 0.01
    (x0, y0), (x1, y1) = centers.min(axis=0) - margin, centers.max(axis=0) + margin
    nearby = shapely.clip_by_rect(centerline, x0, y0, x1, y1)
    if nearby.is_empty:
        deviation = np.full((k_n, s_n), np.inf)
    else:
        deviation = shapely.distance(shapely.points(centers), nearby).reshape(k_n, s_n)
    counted = ~areas.center_in_intersection
    exceeds = (deviation > config.lane_keeping_deviation_limit) & counted
    resets = (deviation <= config.lane_keeping_deviation_limit) & counted
    # Counter = exceeding steps since the last reset (intersection steps change nothing).
    total = np.cumsum(exceeds, axis=1)
    at_last_reset = np.maximum.accumulate(np.where(resets, total, 0), axis=1)
    required = int(np.ceil(config.lane_keeping_horizon_window / STEP_S))
    return np.where((total - at_last_reset >= required).any(axis=1), 0.0, 1.0)


# ------------------------------------------------------------------------------------------------- comfort
HC_BOUNDS = {  # (lower, upper), strict
    "lon_acceleration": (-4.05, 2.40),
    "lat_acceleration": (-4.89, 4.89),
    "jerk": (-8.37, 8.37),
    "lon_jerk": (-4.13, 4.13),
    "yaw_rate": (-0.95, 0.95),
    "yaw_acceleration": (-1.93, 1.93),
}
EC_THRESHOLDS = {"acceleration": 0.7, "jerk": 0.5, "yaw_rate": 0.1, "yaw_acceleration": 0.1}


@functools.lru_cache(maxsize=64)
def savgol_operator(length: int, window: int, poly: int, deriv: int = 0, delta: float = 1.0) -> np.ndarray:
    """`(length, length)` matrix `R` with `savgol_filter(x, ..., axis=-1) == x @ R` for any `x` of that length.

    The filter is linear in `x`, edges included (mode "interp" fits a polynomial to the first and last windows),
    so `R` is its response to each unit impulse. Built once per signal length, it is one product per signal:
    calling scipy for every signal (coefficients and edge fits each time) had taken 4.5 of the 28.5 ms that
    scoring one plan of a navtest scene took, profiled on one core.
    """
    operator = savgol_filter(np.eye(length), window_length=window, polyorder=poly, deriv=deriv, delta=delta, axis=-1)
    operator.setflags(write=False)  # shared by every caller through the cache
    return operator


def _smooth(values: np.ndarray, window: int, poly: int = 2) -> np.ndarray:
    return values @ savgol_operator(values.shape[-1], min(window, values.shape[-1]), poly)


def _derivative(values: np.ndarray, window: int, poly: int, order: int, dt: float) -> np.ndarray:
    window = min(window, values.shape[-1])
    if poly >= window:
        raise ValueError(f"comfort: {values.shape[-1]} samples are too few for a poly-{poly} Savitzky-Golay filter")
    return values @ savgol_operator(values.shape[-1], window, poly, order, dt)


def _center_acceleration_x(states: np.ndarray) -> np.ndarray:
    """nuPlan's simplified rear-axle → centre shift `a + d ω² + d α` with d = (1.461, 0): only x changes."""
    omega = states[..., V.ANGULAR_VELOCITY]
    alpha = states[..., V.ANGULAR_ACCELERATION]
    return states[..., V.ACCELERATION_X] + V.REAR_AXLE_TO_CENTER * (omega**2 + alpha)


def _unwrap(headings: np.ndarray) -> np.ndarray:
    two_pi = 2.0 * np.pi
    steps = np.zeros_like(headings)
    steps[..., 1:] = np.cumsum(np.round(np.diff(headings, axis=-1) / two_pi), axis=-1)
    return headings - two_pi * steps


def comfort_signals(states: np.ndarray, dt: float = STEP_S, yaw_accel_poly: int = 3) -> dict[str, np.ndarray]:
    """The comfort signals `(K, N)` of states `(K, N, 11)` sampled `dt` apart (nuPlan's SG filter settings)."""
    lon = np.round(_smooth(_center_acceleration_x(states), 8), 8)
    lat = np.round(_smooth(states[..., V.ACCELERATION_Y], 8), 8)  # centre shift leaves y unchanged
    magnitude = np.round(_smooth(np.hypot(states[..., V.ACCELERATION_X], states[..., V.ACCELERATION_Y]), 8), 8)
    heading = _unwrap(states[..., V.HEADING])
    return {
        "lon_acceleration": lon,
        "lat_acceleration": lat,
        "acceleration": magnitude,
        "jerk": np.round(_derivative(magnitude, 15, 2, 1, dt), 8),
        "lon_jerk": np.round(_derivative(lon, 15, 2, 1, dt), 8),
        "yaw_rate": np.round(_derivative(heading, 5, 2, 1, dt), 8),
        "yaw_acceleration": np.round(_derivative(heading, 5, yaw_accel_poly, 2, dt), 8),
    }


def history_comfort(states: np.ndarray, past_states: np.ndarray | None) -> np.ndarray:
    """HC `(K,)`: all six comfort signals strictly inside their bounds over past (≈14 states) + rollout."""
    k_n = len(states)
    if past_states is None or len(past_states) == 0:
        return np.ones(k_n)
    padded = np.concatenate([np.broadcast_to(past_states, (k_n, *past_states.shape)), states], axis=1)
    signals = comfort_signals(padded, yaw_accel_poly=3)
    ok = np.ones(k_n, dtype=bool)
    for name, (low, high) in HC_BOUNDS.items():
        ok &= ((signals[name] > low) & (signals[name] < high)).all(axis=-1)
    return ok.astype(np.float64)


def extended_comfort(current: np.ndarray, previous: np.ndarray, time_delta_s: float) -> np.ndarray:
    """EC `(K,)` between rollouts `(K, 41, 11)` planned `time_delta_s` apart (0 < Δ < 0.55 s, else ValueError)."""
    if not 0.0 < time_delta_s < 0.55:
        raise ValueError(f"extended comfort needs two plans 0 < dt < 0.55 s apart, got dt = {time_delta_s:.3f} s")
    shift = int(round(time_delta_s / STEP_S))
    n = current.shape[1] - shift
    now = comfort_signals(current[:, :n], yaw_accel_poly=2)
    before = comfort_signals(previous[:, shift:], yaw_accel_poly=2)
    ok = np.ones(len(current), dtype=bool)
    for name, limit in EC_THRESHOLDS.items():
        rms = np.sqrt(np.mean((now[name] - before[name]) ** 2, axis=-1))
        ok &= rms <= limit
    return ok.astype(np.float64)
