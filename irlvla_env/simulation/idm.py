"""IDM vehicles on lane rails, batched over K ego rollouts (navsim v2 `reactive` traffic, spec §4.3).

navsim's `NavsimIDMTrafficAgents` turns every vehicle of the t0 frame into a nuPlan `IDMAgent` that drives
along the baseline of the lane (or, inside an intersection, the lane connector) it stands on, and steps them
at 0.1 s against the simulated ego. What this module reproduces, quirks included:

- **Snapping** (`get_starting_segment`): the box centre must lie in a LANE polygon (then the candidate
  segments are the lanes containing it) or else in an INTERSECTION (then the lane connectors containing it);
  among them the one whose baseline heading at the nearest point differs least from the vehicle heading
  (raw difference, not wrapped). The vehicle is moved onto the baseline; it is skipped when it lies more than
  `snap_threshold` from it or its snapped box overlaps the t0 ego box or an earlier snapped vehicle.
- **Path**: only that one segment. Route extension (`plan_route`) runs only when traffic-light statuses are
  passed, which the metric cache never holds, so agents brake to a stop at the end of their lane. nuPlan's
  `create_path_from_se2` drops the baseline's last vertex (its `zip` runs one short), kept here.
- **Policy**: nuPlan `IDMPolicy` (acceleration exponent 4), forward Euler, speed clamped at 0, target speed
  = the lane's speed limit or the 10 m/s fallback (the setter that would update it does not assign).
- **Leader** (`IDMAgentManager.propagate_agents`, agents updated one after another in build order, each
  seeing the already-updated state of the earlier ones): the occupancy map holds the ego box and every
  agent's *projected footprint* (its box stretched `speed · headway` ahead along its path; the snapped box
  before its first update). Everything in it that intersects the agent's corridor (its path ahead of its
  centre, buffered by half its width, flat caps) is a leader candidate; the nearest one *to the agent's own
  projected footprint* is followed with that polygon distance as gap (0 when they overlap) and its speed
  projected on the agent heading; nothing → the end of the path is the leader.
- **Ego** (navsim's `build_ego_state_from_simulated_ego_states`): at step t the ego is rollout state t − 1,
  and its box is centred on the *rear axle* (the pose is passed as the footprint centre, §4.14 item 2).
- **Range**: before each step, agents farther than `radius` from that ego pose are removed for good.
- **Frozen vehicles**: vehicles that are not agents stay at their t0 box at a step when (stationary and
  off every lane and intersection) or (farther than `snap_threshold` from the snapped baseline), unless their
  t0 box overlaps an agent's box at that step; others vanish. They are no obstacles for the agents.

Geometry runs in each agent's rail frame (arc length s, signed lateral d): there the corridor and the agent's
own footprint are rectangles and obstacles are quads of their projected corners (another agent's footprint as
two quads along its rail), so separating-axis tests give overlap and distance for all K rollouts at once.
That is exact on straight lanes and off by the chord error of those quads on curves (centimetres for
car-sized boxes). A static sweep test first keeps, per agent, only the obstacles it could ever meet in 4 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from scipy.spatial import cKDTree
from shapely.geometry import LineString

from irlvla_env.navsim.map_api import SemanticMapLayer
from irlvla_env.scoring.observation import box_corners
from irlvla_env.scoring.route import discrete_path, normalize_angle
from irlvla_env.simulation import vehicle as V

STEP_S = 0.1
NUM_STEPS = 41  # rollout states 0 … 4 s
NUPLAN_IDM_EXPONENT = 4  # nuPlan `IDMPolicy.idm_model`
RAIL_SAMPLE_SPACING = 0.5  # [m] samples for the Frenet projection
RAIL_EXTENSION = 50.0  # [m] straight extension beyond each path end for the projection
SWEEP_MARGIN = 0.3  # [m] slack of the static "could ever meet" test (covers the quad chord error)


def idm_step(
    progress: np.ndarray, velocity: np.ndarray, lead: np.ndarray, target_velocity: np.ndarray,
    min_gap: float, headway: float, accel_max: float, decel_max: float, dt: float, exponent: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One explicit Euler step of the IDM; `lead` `(..., 3)` holds the leader's (progress, velocity, rear length).

    The acceleration is clipped to `[-decel_max, accel_max]`; the velocity is not clamped at zero (callers that
    need it, as nuPlan's agents do, clamp it). PDM-Closed uses exponent 10, nuPlan's agents 4."""
    lead_progress, lead_velocity, lead_rear = lead[..., 0], lead[..., 1], lead[..., 2]
    comfort = 2.0 * np.sqrt(accel_max * decel_max)
    s_star = min_gap + velocity * headway + velocity * (velocity - lead_velocity) / comfort
    s_alpha = np.maximum(lead_progress - progress - lead_rear, min_gap)
    accel = accel_max * (1.0 - (velocity / target_velocity) ** exponent - (s_star / s_alpha) ** 2)
    accel = np.clip(accel, -decel_max, accel_max)
    return progress + dt * velocity, velocity + dt * accel


@dataclass(frozen=True)
class IDMParameters:
    """navsim's `navsim_IDM_traffic_agents.yaml` (reactive traffic)."""

    fallback_target_velocity: float = 10.0  # [m/s] when the lane has no speed limit
    min_gap: float = 1.0  # [m]
    headway: float = 1.5  # [s]
    accel_max: float = 1.0  # [m/s^2]
    decel_max: float = 2.0  # [m/s^2]
    snap_threshold: float = 3.0  # [m] `idm_snap_threshold`
    radius: float = 100.0  # [m] agents farther from the ego are removed
    stationary_speed: float = 0.1  # [m/s] below it a vehicle off the lanes is kept frozen


# --------------------------------------------------------------------------------------------------- rails
class Rail:
    """A lane (connector) baseline as an IDM path: pose interpolation and Frenet projection.

    :ivar baseline: the map baseline (snapping projects on it, as nuPlan does).
    :ivar poses: `(M, 3)` nuPlan path vertices (headings unwrapped), `progress` `(M,)` their arc lengths.
    """

    def __init__(self, baseline: LineString) -> None:
        self.baseline = baseline
        poses = discrete_path(baseline)
        progress = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1))])
        kept = poses[:-1][~np.isclose(np.diff(progress), 0.0)]  # create_path_from_se2: repeats and the last go
        if len(kept) < 2:  # a two-vertex baseline; nuPlan could not build this path at all
            kept = poses[np.append(~np.isclose(np.diff(progress), 0.0), True)]
        kept[:, 2] = np.unwrap(kept[:, 2])
        self.poses = kept
        self.progress = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(kept[:, :2], axis=0), axis=1))])
        self.length = float(self.progress[-1])
        self.last_segment = float(self.progress[-1] - self.progress[-2])
        s = np.arange(-RAIL_EXTENSION, self.length + RAIL_EXTENSION + RAIL_SAMPLE_SPACING, RAIL_SAMPLE_SPACING)
        frames = self.frames(s)
        self._sample_s = s
        self._sample_xy = frames[:, :2]
        self._sample_tangent = _tangents(frames[:, :2], frames[:, 2])
        self._tree = cKDTree(self._sample_xy)

    def poses_at(self, s: np.ndarray) -> np.ndarray:
        """Poses `(..., 3)` at arc lengths `s` clamped to the path (nuPlan `InterpolatedPath`); heading wrapped."""
        s = np.clip(s, 0.0, self.length)
        out = np.stack([np.interp(s, self.progress, self.poses[:, i]) for i in range(3)], axis=-1)
        out[..., 2] = normalize_angle(out[..., 2])
        return out

    def frames(self, s: np.ndarray) -> np.ndarray:
        """Poses `(..., 3)` at any arc length, continued straight along the end headings beyond the path."""
        s = np.asarray(s, dtype=np.float64)
        out = self.poses_at(s)
        beyond = s - np.clip(s, 0.0, self.length)
        out[..., 0] += beyond * np.cos(out[..., 2])
        out[..., 1] += beyond * np.sin(out[..., 2])
        return out

    def to_frenet(self, points: np.ndarray) -> np.ndarray:
        """`(..., 2)` arc length and signed lateral offset (left positive) of global points `(..., 2)`."""
        points = np.asarray(points, dtype=np.float64)
        flat = points.reshape(-1, 2)
        _, nearest = self._tree.query(flat)
        offset = flat - self._sample_xy[nearest]
        s = self._sample_s[nearest] + np.sum(offset * self._sample_tangent[nearest], axis=1)
        frame = self.frames(s)  # one refinement step: re-project from the first estimate's tangent
        tangent = np.stack([np.cos(frame[:, 2]), np.sin(frame[:, 2])], axis=1)
        offset = flat - frame[:, :2]
        s = s + np.sum(offset * tangent, axis=1)
        d = tangent[:, 0] * offset[:, 1] - tangent[:, 1] * offset[:, 0]
        return np.stack([s, d], axis=-1).reshape(points.shape)

    def snap(self, xy: np.ndarray) -> tuple[float, np.ndarray]:
        """Arc length and pose of the nearest baseline point (nuPlan `get_nearest_pose_from_position`: the
        heading is the baseline direction there)."""
        progress = float(self.baseline.project(shapely.Point(xy)))
        coords = np.asarray(self.baseline.coords)[:, :2]
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(coords, axis=0), axis=1))])
        seg = int(np.clip(np.searchsorted(arc, progress, side="right") - 1, 0, len(coords) - 2))
        while seg > 0 and np.allclose(coords[seg + 1], coords[seg]):
            seg -= 1
        direction = coords[seg + 1] - coords[seg]
        point = self.baseline.interpolate(progress)
        return progress, np.array([point.x, point.y, np.arctan2(direction[1], direction[0])])

    def polygon(self, start: float, end: float, half_width: float) -> shapely.Geometry:
        """The band `[start, end]` (extended beyond the ends) buffered by `half_width` with flat caps."""
        inner = self.progress[(self.progress > start) & (self.progress < end)]
        s = np.concatenate([[start], inner, [end]]) if end > start else np.array([start, start + 1e-3])
        return shapely.buffer(LineString(self.frames(s)[:, :2]), half_width, cap_style="flat")


def _tangents(xy: np.ndarray, headings: np.ndarray) -> np.ndarray:
    """Unit tangents of uniformly spaced samples (central differences; headings where samples coincide)."""
    diff = np.zeros_like(xy)
    diff[1:-1] = xy[2:] - xy[:-2]
    diff[0], diff[-1] = xy[1] - xy[0], xy[-1] - xy[-2]
    norm = np.linalg.norm(diff, axis=1)
    fallback = np.stack([np.cos(headings), np.sin(headings)], axis=1)
    return np.where(norm[:, None] > 1e-9, diff / np.maximum(norm, 1e-9)[:, None], fallback)


def starting_segment(map_api: Any, center: np.ndarray, heading: float) -> tuple[Any | None, bool]:
    """nuPlan `get_starting_segment`: the lane (connector) a vehicle drives on, or None; and whether its centre
    is on a lane or in an intersection at all (the frozen-vehicle test needs that)."""
    if map_api.is_in_layer(center, SemanticMapLayer.LANE):
        layer, table = SemanticMapLayer.LANE, map_api.lanes
    elif map_api.is_in_layer(center, SemanticMapLayer.INTERSECTION):
        layer, table = SemanticMapLayer.LANE_CONNECTOR, map_api.lane_connectors
    else:
        return None, False
    ids = map_api.objects_containing_points(np.asarray(center)[None], layer)[0]
    segments = [table[i] for i in ids if i in table]
    if not segments:
        return None, True
    point = shapely.Point(center)
    heading_diff = []
    for segment in segments:
        path = discrete_path(segment.baseline_path)
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path[:, :2], axis=0), axis=1))])
        along = segment.baseline_path.project(point)
        seg = int(np.clip(np.searchsorted(arc, along, side="right") - 1, 0, len(path) - 2))
        heading_diff.append(abs(path[seg, 2] - heading))  # [Q] not wrapped, as nuPlan
    return segments[int(np.argmin(heading_diff))], True


# -------------------------------------------------------------------------------------------------- agents
@dataclass
class IDMAgents:
    """The t0 vehicles of one scene sorted into IDM agents (N) and frozen candidates (F).

    :ivar rows: `(N,)` observation rows of the agents, in nuPlan's build (= update) order.
    :ivar rails: per agent, its path.
    :ivar progress0, speed0, target_speed, lengths, widths: `(N,)` initial state and constants.
    :ivar frozen_rows: `(F,)` rows of the vehicles kept frozen at their t0 box (while no agent overlaps them).
    :ivar frozen_corners: `(F, 4, 2)` their t0 boxes.
    """

    rows: np.ndarray
    rails: list[Rail]
    progress0: np.ndarray
    speed0: np.ndarray
    target_speed: np.ndarray
    lengths: np.ndarray
    widths: np.ndarray
    frozen_rows: np.ndarray
    frozen_corners: np.ndarray

    @property
    def num_agents(self) -> int:
        return len(self.rows)


def build_idm_agents(
    centers: np.ndarray, headings: np.ndarray, velocities: np.ndarray, sizes: np.ndarray, rows: np.ndarray,
    ego_state_t0: np.ndarray, map_api: Any, params: IDMParameters = IDMParameters(),
) -> IDMAgents:  # fmt: skip
    """nuPlan/navsim `build_idm_agents_on_map_rails` plus the frozen-vehicle test, for the t0 vehicles given
    by their observation `rows` and t0 `centers (V, 2)`, `headings (V,)`, `velocities (V, 2)`, `sizes (V, 2)`."""
    ego_speed = float(np.hypot(ego_state_t0[V.VELOCITY_X], ego_state_t0[V.VELOCITY_Y]))
    occupied = [V.ego_polygon(ego_state_t0)]
    rails: dict[str, Rail] = {}
    agent: dict[str, list] = {k: [] for k in ("rows", "rails", "progress0", "speed0", "target", "lengths", "widths")}
    frozen_rows, frozen_corners = [], []
    for index, row in enumerate(rows):
        center, heading, (length, width) = centers[index], float(headings[index]), sizes[index]
        corners = box_corners(center, heading, length, width)
        segment, on_lanes = starting_segment(map_api, center, heading)
        deviation = None
        if segment is not None:
            key = f"{segment.layer.name}:{segment.id}"
            if key not in rails:
                rails[key] = Rail(segment.baseline_path)
            rail = rails[key]
            progress, pose = rail.snap(center)
            deviation = float(np.hypot(*(pose[:2] - center)))
            if deviation <= params.snap_threshold:
                snapped = shapely.polygons(box_corners(pose[:2], pose[2], length, width))
                if not any(snapped.intersects(other) for other in occupied):
                    occupied.append(snapped)
                    speed = float(np.hypot(*velocities[index]))
                    limit = segment.speed_limit_mps
                    agent["rows"].append(row)
                    agent["rails"].append(rail)
                    agent["progress0"].append(progress)
                    agent["speed0"].append(ego_speed if np.isnan(speed) else speed)
                    agent["target"].append(limit if limit else params.fallback_target_velocity)
                    agent["lengths"].append(length)
                    agent["widths"].append(width)
                continue
        stationary = bool(np.hypot(*velocities[index]) < params.stationary_speed)
        if (stationary and not on_lanes) or (deviation is not None and deviation > params.snap_threshold):
            frozen_rows.append(row)
            frozen_corners.append(corners)
    as_array = lambda values: np.asarray(values, dtype=np.float64)  # noqa: E731
    return IDMAgents(
        rows=np.asarray(agent["rows"], dtype=int), rails=agent["rails"], progress0=as_array(agent["progress0"]),
        speed0=as_array(agent["speed0"]), target_speed=as_array(agent["target"]),
        lengths=as_array(agent["lengths"]), widths=as_array(agent["widths"]),
        frozen_rows=np.asarray(frozen_rows, dtype=int), frozen_corners=as_array(frozen_corners).reshape(-1, 4, 2),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------- polygon algebra
_NEXT = [1, 2, 3, 0]


def _fold(x: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
    """Reduce the last axis with `ufunc` by halving: numpy's own reductions over short trailing axes are
    several times slower than these slice-wise calls, and they dominate the per-step cost."""
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        folded = ufunc(x[..., :half], x[..., half : 2 * half])
        x = np.concatenate([folded, x[..., 2 * half :]], axis=-1) if x.shape[-1] % 2 else folded
    return x[..., 0]


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]


def _normals(quads: np.ndarray) -> np.ndarray:
    """`(..., 4, 2)` edge normals (unnormalised) of quads `(..., 4, 2)`."""
    edges = quads[..., _NEXT, :] - quads
    return np.stack([-edges[..., 1], edges[..., 0]], axis=-1)


def _separated(a: np.ndarray, b: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Bool `(...)`: some axis `(..., A, 2)` separates the point sets `a`, `b` `(..., P, 2)`."""
    proj_a = _dot(a[..., None, :, :], axes[..., :, None, :])  # (..., A, P)
    proj_b = _dot(b[..., None, :, :], axes[..., :, None, :])
    a_min, a_max = _fold(proj_a, np.minimum), _fold(proj_a, np.maximum)
    apart = (a_max < _fold(proj_b, np.minimum)) | (_fold(proj_b, np.maximum) < a_min)
    return _fold(apart, np.logical_or)


def quads_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bool `(...)`: convex quads `a`, `b` `(..., 4, 2)` intersect (touching counts), by separating axes."""
    a, b = np.broadcast_arrays(a, b)
    return ~_separated(a, b, np.concatenate([_normals(a), _normals(b)], axis=-2))


def _points_to_edges(points: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """`(...)` smallest distance from the points `(..., P, 2)` to the edges of the quads `(..., 4, 2)`."""
    start = quads[..., None, :, :]
    edge = quads[..., _NEXT, :][..., None, :, :] - start
    rel = points[..., :, None, :] - start
    t = np.clip(_dot(rel, edge) / np.maximum(_dot(edge, edge), 1e-12), 0.0, 1.0)
    foot = rel - t[..., None] * edge
    squared = _dot(foot, foot)
    return np.sqrt(_fold(squared.reshape(squared.shape[:-2] + (-1,)), np.minimum))


def quads_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`(...)` distance between convex quads `(..., 4, 2)`: 0 when they overlap, else the nearest vertex-edge gap."""
    a, b = np.broadcast_arrays(a, b)
    gap = np.minimum(_points_to_edges(a, b), _points_to_edges(b, a))
    return np.where(quads_overlap(a, b), 0.0, gap)


def quad_rect_overlap(quads: np.ndarray, s0: np.ndarray, s1: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """Bool `(...)`: quads `(..., 4, 2)` meet the axis-aligned rectangles `[s0, s1] × [−r, r]` (all `(...)`)."""
    s, d = quads[..., 0], quads[..., 1]
    apart = (_fold(s, np.maximum) < s0) | (_fold(s, np.minimum) > s1)
    apart |= (_fold(d, np.maximum) < -half_width) | (_fold(d, np.minimum) > half_width)
    return ~(apart | _separated(quads, _rects(s0, s1, half_width), _normals(quads)))


def quad_rect_distance(quads: np.ndarray, s0: np.ndarray, s1: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """`(...)` distance between quads `(..., 4, 2)` and axis-aligned rectangles `[s0, s1] × [−r, r]`."""
    s, d = quads[..., 0], quads[..., 1]
    ds = np.maximum(np.maximum(s0[..., None] - s, s - s1[..., None]), 0.0)
    dd = np.maximum(np.abs(d) - half_width[..., None], 0.0)
    vertex_gap = np.sqrt(_fold(ds**2 + dd**2, np.minimum))
    corner_gap = _points_to_edges(_rects(s0, s1, half_width), quads)
    return np.where(quad_rect_overlap(quads, s0, s1, half_width), 0.0, np.minimum(vertex_gap, corner_gap))


def _rects(s0: np.ndarray, s1: np.ndarray, half_width: np.ndarray | float) -> np.ndarray:
    """Frenet rectangles `(..., 4, 2)` spanning `[s0, s1] × [-half_width, half_width]`."""
    s0, s1, r = np.broadcast_arrays(s0, s1, half_width)
    return np.stack([np.stack([s0, -r], -1), np.stack([s1, -r], -1), np.stack([s1, r], -1), np.stack([s0, r], -1)], -2)


# ---------------------------------------------------------------------------------------------- simulation
@dataclass
class IDMRollout:
    """Agent and frozen-vehicle states for K ego rollouts; index 0 is t0 (before any update).

    :ivar poses: `(K, 41, N, 3)` box centre poses along the rails.
    :ivar speeds: `(K, 41, N)` [m/s] along the rail.
    :ivar active: `(K, 41, N)` still simulated (not yet removed for range).
    :ivar frozen_visible: `(K, 41, F)` frozen vehicles shown (no agent box overlaps them).
    """

    poses: np.ndarray
    speeds: np.ndarray
    active: np.ndarray
    frozen_visible: np.ndarray


class RailTable:
    """Several rails concatenated along one arc-length axis, so that poses of any mix of (rail, s) pairs come
    from one `np.interp` per coordinate."""

    GAP = 1.0  # [m] between consecutive rails on the common axis

    def __init__(self, rails: Sequence[Rail]) -> None:
        self.rails = list(rails)
        self.lengths = np.array([rail.length for rail in self.rails])
        self.offsets = np.concatenate([[0.0], np.cumsum(self.lengths + self.GAP)[:-1]])
        knots = [rail.progress + offset for rail, offset in zip(self.rails, self.offsets)]
        self._knots = np.concatenate(knots) if rails else np.zeros(0)
        self._values = np.concatenate([rail.poses for rail in self.rails]) if rails else np.zeros((0, 3))

    def poses(self, s: np.ndarray, rail: np.ndarray) -> np.ndarray:
        """`(..., 3)` poses at arc lengths `s` clamped to each rail (`rail` broadcasts against `s`)."""
        s, rail = np.broadcast_arrays(np.asarray(s, dtype=np.float64), rail)
        if s.size == 0:
            return np.zeros(s.shape + (3,))
        q = self.offsets[rail] + np.clip(s, 0.0, self.lengths[rail])
        out = np.stack([np.interp(q, self._knots, self._values[:, c]) for c in range(3)], axis=-1)
        out[..., 2] = normalize_angle(out[..., 2])
        return out

    def frames(self, s: np.ndarray, rail: np.ndarray) -> np.ndarray:
        """Like :meth:`poses`, continued straight along the end headings beyond each rail (`Rail.frames`)."""
        s, rail = np.broadcast_arrays(np.asarray(s, dtype=np.float64), rail)
        out = self.poses(s, rail)
        beyond = s - np.clip(s, 0.0, self.lengths[rail])
        out[..., 0] += beyond * np.cos(out[..., 2])
        out[..., 1] += beyond * np.sin(out[..., 2])
        return out

    def to_frenet(self, points: np.ndarray, rail: np.ndarray) -> np.ndarray:
        """`(..., 2)` (s, d) of points `(..., 2)` each in the frame of its rail (`rail` broadcasts to `(...)`)."""
        rail = np.broadcast_to(rail, points.shape[:-1])
        out = np.empty(points.shape)
        for r in np.unique(rail):
            mask = rail == r
            out[mask] = self.rails[r].to_frenet(points[mask])
        return out


def _candidates(
    agents: IDMAgents, ego_rollouts: np.ndarray, params: IDMParameters
) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Static pruning: per agent, the obstacles (other agents; `N` = the ego) that could ever enter its corridor
    within the horizon, and the (frozen, agent) pairs whose boxes could ever overlap. Bounds used: speed
    ≤ v0 + a_max·T, progress ≤ s0 + v0·T + a_max·T²/2, and corridors only shrink."""
    horizon = STEP_S * (ego_rollouts.shape[1] - 1)
    n = agents.num_agents
    corridors, sweeps = [], []
    for i, rail in enumerate(agents.rails):
        s0, half_l, half_w = agents.progress0[i], agents.lengths[i] / 2.0, agents.widths[i] / 2.0
        start = min(float(np.clip(s0, 0.0, rail.length)), rail.length - rail.last_segment)
        corridors.append(rail.polygon(start - SWEEP_MARGIN, rail.length, half_w + SWEEP_MARGIN))
        v_max = agents.speed0[i] + params.accel_max * horizon
        reach = agents.speed0[i] * horizon + 0.5 * params.accel_max * horizon**2 + half_l + v_max * params.headway
        end = max(min(rail.length + half_l, s0 + reach), min(s0, rail.length) + half_l)
        begin = min(s0, rail.length) - half_l - SWEEP_MARGIN
        sweeps.append(rail.polygon(begin, end + SWEEP_MARGIN, half_w + SWEEP_MARGIN))
    corridors_arr, sweeps_arr = np.array(corridors, dtype=object), np.array(sweeps, dtype=object)
    meets = np.zeros((n, n + 1), dtype=bool)
    if n:
        meets[:, :n] = shapely.intersects(corridors_arr[:, None], sweeps_arr[None, :])
        np.fill_diagonal(meets[:, :n], False)
        ego_boxes = shapely.polygons(box_corners(ego_rollouts[:, :-1, :2], ego_rollouts[:, :-1, 2], V.LENGTH, V.WIDTH))
        meets[np.unique(shapely.STRtree(ego_boxes.ravel()).query(corridors_arr, predicate="intersects")[0]), n] = True
    frozen_pairs: list[tuple[int, int]] = []
    if len(agents.frozen_rows) and n:
        frozen = shapely.polygons(agents.frozen_corners)
        f_idx, a_idx = np.nonzero(shapely.intersects(frozen[:, None], sweeps_arr[None, :]))
        frozen_pairs = list(zip(f_idx.tolist(), a_idx.tolist()))
    return [np.nonzero(row)[0] for row in meets], frozen_pairs


@dataclass
class _Level:
    """Agents updated together and their candidate obstacles.

    :ivar members: `(A,)` agent rows.
    :ivar candidates: `(A, C)` obstacle rows in occupancy order (agents by build order, then `N` = the ego),
        padded with -1.
    :ivar same_rail: `(A, C)` the candidate is an agent on the member's own rail (exact 1-D test).
    :ivar planar: `(A, P)` columns of `candidates` needing the 2-D test (other rails, the ego); rows are
        padded by repeating their first column (so scattered results agree), empty rows hold 0.
    :ivar has_planar: `(A,)` rows with at least one such column.
    """

    members: np.ndarray
    candidates: np.ndarray
    same_rail: np.ndarray
    planar: np.ndarray
    has_planar: np.ndarray


def _update_levels(candidates: list[np.ndarray], rail_of: np.ndarray) -> list[_Level]:
    """Batches that reproduce nuPlan's one-by-one update order exactly: an agent reads the new state of the
    candidates before it in build order, so it goes one level after the latest of them; agents of one level
    never read each other."""
    n = len(candidates)
    level = np.zeros(n, dtype=int)
    for i, cands in enumerate(candidates):
        earlier = cands[(cands < i)]
        level[i] = 1 + level[earlier].max() if len(earlier) else 0
    out = []
    for value in range(level.max() + 1 if n else 0):
        members = np.nonzero(level == value)[0]
        width = max(len(candidates[i]) for i in members)
        padded = np.full((len(members), width), -1, dtype=int)
        for row, i in enumerate(members):
            padded[row, : len(candidates[i])] = candidates[i]
        is_agent = (padded >= 0) & (padded < n)
        same = is_agent & (rail_of[np.clip(padded, 0, n - 1)] == rail_of[members][:, None])
        planar_cols = [np.nonzero((padded[row] >= 0) & ~same[row])[0] for row in range(len(members))]
        planar = np.zeros((len(members), max((len(c) for c in planar_cols), default=0)), dtype=int)
        for row, cols in enumerate(planar_cols):
            if len(cols):
                planar[row] = cols[0]
                planar[row, : len(cols)] = cols
        has_planar = np.array([len(cols) > 0 for cols in planar_cols], dtype=bool)
        out.append(_Level(members, padded, same, planar, has_planar))
    return out


def simulate_idm_agents(
    agents: IDMAgents, ego_rollouts: np.ndarray, params: IDMParameters = IDMParameters()
) -> IDMRollout:
    """Step the agents 40 × 0.1 s against each of the K ego rollouts `(K, 41, 11)` (rear-axle states)."""
    return _Stepper(agents, np.asarray(ego_rollouts, dtype=np.float64), params).run()


class _Stepper:
    """The agents' IDM state for K rollouts (arrays `(K, N)`), advanced level by level in nuPlan's order.

    `progress`/`speed`/`extension` hold the current values, `old_*` those at the start of the step; an agent
    reads candidates earlier in the build order after their update and later ones before it.
    """

    def __init__(self, agents: IDMAgents, ego_rollouts: np.ndarray, params: IDMParameters) -> None:
        self.agents, self.ego_rollouts, self.params = agents, ego_rollouts, params
        k, n = ego_rollouts.shape[0], agents.num_agents
        unique: dict[int, int] = {}
        for rail in agents.rails:
            unique.setdefault(id(rail), len(unique))
        self.table = RailTable(list({id(r): r for r in agents.rails}.values()))
        self.rail_of = np.array([unique[id(rail)] for rail in agents.rails], dtype=int)
        self.path_lengths = self.table.lengths[self.rail_of]
        self.last_segments = np.array([rail.last_segment for rail in agents.rails])
        candidates, self.frozen_pairs = _candidates(agents, ego_rollouts, params)
        self.levels = _update_levels(candidates, self.rail_of)
        self.progress = np.broadcast_to(agents.progress0, (k, n)).copy()
        self.speed = np.broadcast_to(agents.speed0, (k, n)).copy()
        self.extension = np.zeros((k, n))  # projected-footprint reach; 0 (the snapped box) until first updated
        self.active = np.ones((k, n), dtype=bool)
        self.old_progress, self.old_speed, self.old_extension = self.progress, self.speed, self.extension
        self.poses = self.table.poses(self.progress, self.rail_of)
        self.idm = dict(min_gap=params.min_gap, headway=params.headway, accel_max=params.accel_max,
                        decel_max=params.decel_max, dt=STEP_S, exponent=NUPLAN_IDM_EXPONENT)  # fmt: skip

    def run(self) -> IDMRollout:
        k, steps, _ = self.ego_rollouts.shape
        n, f = self.agents.num_agents, len(self.agents.frozen_rows)
        out = IDMRollout(
            poses=np.zeros((k, steps, n, 3)), speeds=np.zeros((k, steps, n)),
            active=np.zeros((k, steps, n), dtype=bool), frozen_visible=np.ones((k, steps, f), dtype=bool),
        )  # fmt: skip
        out.poses[:, 0], out.speeds[:, 0], out.active[:, 0] = self.poses, self.speed, self.active
        for t in range(1, steps):
            self.step(self.ego_rollouts[:, t - 1])
            out.poses[:, t], out.speeds[:, t], out.active[:, t] = self.poses, self.speed, self.active
            out.frozen_visible[:, t] = _frozen_visible(self.agents, self.frozen_pairs, self.poses, self.active)
        return out

    def step(self, ego: np.ndarray) -> None:
        """One 0.1 s update against the ego states `(K, 11)` (rollout state t − 1 for step t)."""
        self.active &= np.linalg.norm(self.poses[..., :2] - ego[:, None, :2], axis=-1) <= self.params.radius
        self.old_progress, self.old_speed, self.old_extension = (
            self.progress.copy(), self.speed.copy(), self.extension.copy()
        )
        ego_quad = box_corners(ego[:, :2], ego[:, V.HEADING], V.LENGTH, V.WIDTH)  # [Q] centred on the rear axle
        ego_speed = np.hypot(ego[:, V.VELOCITY_X], ego[:, V.VELOCITY_Y])
        for level in self.levels:
            self.advance(level.members, self.lead(level, ego_quad, ego[:, V.HEADING], ego_speed))
        self.poses = self.table.poses(self.progress, self.rail_of)

    def advance(self, index: np.ndarray, lead: np.ndarray) -> None:
        """IDM update of agents `index` `(A,)` (active ones only) given their leaders `(K, A, 3)`."""
        moved, speed = idm_step(
            np.zeros_like(self.old_speed[:, index]), self.old_speed[:, index], lead,
            self.agents.target_speed[index], **self.idm,
        )  # fmt: skip
        live = self.active[:, index]
        speed = np.maximum(speed, 0.0)
        self.progress[:, index] = np.where(live, self.old_progress[:, index] + moved, self.old_progress[:, index])
        self.speed[:, index] = np.where(live, speed, self.old_speed[:, index])
        self.extension[:, index] = np.where(live, speed * self.params.headway, self.old_extension[:, index])

    def span(self, progress: np.ndarray, extension: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(lo, hi)` arc-length span of agents' occupancy entries: the path band `[s − l/2, s + l/2 + ext]`
        clamped to the path, united with the box at the clamped progress (nuPlan `projected_footprint`; with
        ext = 0 it is the plain box)."""
        half, end = self.agents.lengths[index] / 2.0, self.path_lengths[index]
        bounded = np.clip(progress, 0.0, end)
        lo = np.minimum(np.clip(progress - half, 0.0, end), bounded - half)
        hi = np.maximum(np.clip(progress + half + extension, 0.0, end), bounded + half)
        return lo, hi

    def lead(self, level: _Level, ego_quad: np.ndarray, ego_heading: np.ndarray, ego_speed: np.ndarray) -> np.ndarray:
        """`(K, A, 3)` leaders (gap, projected speed, rear length) of the level's agents: the occupancy entry in
        each one's corridor nearest to its own projected footprint, else the end of its path."""
        agents, n, members, candidates = self.agents, self.agents.num_agents, level.members, level.candidates
        s_i = self.old_progress[:, members]
        length_i, to_go = self.path_lengths[members], self.path_lengths[members] - s_i
        free = np.stack(np.broadcast_arrays(to_go, 0.0, agents.lengths[members] / 2.0), axis=-1)
        if candidates.shape[1] == 0:
            return free
        k, a = s_i.shape
        bounded = np.clip(s_i, 0.0, length_i)
        corridor_start = np.where(bounded < length_i, bounded, length_i - self.last_segments[members])
        own_lo, own_hi = self.span(s_i, self.old_extension[:, members], members)
        heading_i = self.poses[:, members, 2][..., None]

        is_ego, padding = candidates == n, candidates < 0
        other = np.clip(candidates, 0, n - 1)  # (A, C) agent rows (placeholders where ego or padding)
        updated = other < members[:, None]
        s_c = np.where(updated, self.progress[:, other], self.old_progress[:, other])  # (K, A, C)
        v_c = np.where(updated, self.speed[:, other], self.old_speed[:, other])
        lo, hi = self.span(s_c, np.where(updated, self.extension[:, other], self.old_extension[:, other]), other)
        heading_c = np.where(is_ego, ego_heading[:, None, None], self.table.poses(s_c, self.rail_of[other])[..., 2])
        speed_c = np.where(is_ego, ego_speed[:, None, None], v_c) * np.cos(normalize_angle(heading_c - heading_i))

        # same rail: both are bands of the same path, so overlap and distance are interval arithmetic
        hit = (hi >= corridor_start[..., None]) & (lo <= length_i[:, None])
        gap = np.maximum.reduce([np.zeros_like(lo), lo - own_hi[..., None], own_lo[..., None] - hi])
        if level.planar.shape[1]:
            rows, cols, keep = np.arange(a)[:, None], level.planar, level.has_planar[:, None]
            planar_hit, planar_gap = self._planar(
                level, cols, lo[:, rows, cols], hi[:, rows, cols], corridor_start, own_lo, own_hi, ego_quad
            )
            hit[:, rows, cols] = np.where(keep, planar_hit, hit[:, rows, cols])
            gap[:, rows, cols] = np.where(keep, planar_gap, gap[:, rows, cols])
        hit &= ~padding & (is_ego | self.active[:, other])
        nearest = np.argmin(np.where(hit, gap, np.inf), axis=-1)[..., None]
        chosen = np.stack([np.take_along_axis(gap, nearest, -1)[..., 0],
                           np.take_along_axis(speed_c, nearest, -1)[..., 0], np.zeros((k, a))], -1)  # fmt: skip
        return np.where(hit.any(axis=-1)[..., None], chosen, free)

    def _planar(
        self, level: _Level, cols: np.ndarray, lo: np.ndarray, hi: np.ndarray, corridor_start: np.ndarray,
        own_lo: np.ndarray, own_hi: np.ndarray, ego_quad: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Overlap with the corridor and distance to the own footprint `(K, A, P)` of the candidates in columns
        `cols` `(A, P)` that are the ego or agents on other rails, in each member's rail frame: their footprints
        (spans `lo`, `hi` along their own rails) as two quads, the ego box as one."""
        agents, n, members = self.agents, self.agents.num_agents, level.members
        candidates = np.take_along_axis(level.candidates, cols, axis=1)
        other = np.clip(candidates, 0, n - 1)
        stations = self.table.frames(np.stack([lo, (lo + hi) / 2.0, hi], axis=-1), self.rail_of[other][..., None])
        normal = np.stack([-np.sin(stations[..., 2]), np.cos(stations[..., 2])], axis=-1)
        offset = (agents.widths[other] / 2.0)[..., None, None] * normal
        left, right = stations[..., :2] + offset, stations[..., :2] - offset  # (K, A, P, 3, 2)
        quads = np.stack([np.stack([right[..., a, :], right[..., a + 1, :], left[..., a + 1, :], left[..., a, :]], -2)
                          for a in (0, 1)], axis=-3)  # (K, A, P, 2, 4, 2)  # fmt: skip
        quads = np.where((candidates == n)[..., None, None, None], ego_quad[:, None, None, None], quads)
        obstacles = self.table.to_frenet(quads, self.rail_of[members][:, None, None, None])
        half_width = np.broadcast_to(agents.widths[members] / 2.0, own_lo.shape)[..., None, None]
        end = np.broadcast_to(self.path_lengths[members], own_lo.shape)[..., None, None]
        hit = _fold(quad_rect_overlap(obstacles, corridor_start[..., None, None], end, half_width), np.logical_or)
        gap = quad_rect_distance(obstacles, own_lo[..., None, None], own_hi[..., None, None], half_width)
        return hit, _fold(gap, np.minimum)


def _frozen_visible(
    agents: IDMAgents, pairs: list[tuple[int, int]], poses: np.ndarray, active: np.ndarray
) -> np.ndarray:
    """`(K, F)`: frozen vehicles whose t0 box overlaps no active agent box at this step."""
    visible = np.ones((poses.shape[0], len(agents.frozen_rows)), dtype=bool)
    if not pairs:
        return visible
    f_idx, a_idx = np.array(pairs).T
    boxes = box_corners(poses[:, a_idx, :2], poses[:, a_idx, 2], agents.lengths[a_idx], agents.widths[a_idx])
    overlap = quads_overlap(agents.frozen_corners[f_idx][None], boxes) & active[:, a_idx]  # (K, P)
    for column, frozen in enumerate(f_idx):
        visible[:, frozen] &= ~overlap[:, column]
    return visible
