"""PDM-Closed, the rule-based reference planner of the metric cache (spec §4.10; navsim's `PDMClosedPlanner`).

Three paths (the route centerline and parallels 1 m to its right and left) × five IDM policies (target speed
0.2 … 1.0 × the starting lane's speed limit, fallback 15 m/s) are unrolled 4 s at 10 Hz along their paths,
following the nearest obstacle in the path corridor (other agents forecast at constant velocity, red lights of
the corrected route). The 15 proposals are tracked by the LQR + bicycle simulator and scored by the EPDMS
proposal scorer; the best one is unrolled to 5 s and returned as 51 states at 0.1 s (poses along the path,
the other columns 0, as navsim's `InterpolatedTrajectory` of that plan holds them).

navsim quirks kept: the leading obstacle is refreshed on even steps only, so step 1 sees the zero-initialised
"obstacle at progress 0" and brakes; within one path the per-proposal leading-obstacle row is reused across
proposals, so fields a proposal does not set keep the previous proposal's values; the corridor is the path
vertices between the ego's progress and progress + max target speed × 5 s, buffered by half the ego width with
square caps; obstacles overlapping the ego at t0 are ignored (by the IDM and by the scorer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import shapely

from irlvla_env.scoring.observation import Observation, box_corners
from irlvla_env.scoring.route import PDMPath, RoutePlan, normalize_angle
from irlvla_env.simulation import vehicle as V
from irlvla_env.simulation.idm import idm_step
from irlvla_env.simulation.simulator import Simulator

STEP_S = 0.1
PROPOSAL_STEPS = 40  # 4 s
TRAJECTORY_STEPS = 50  # 5 s
LEAD_UPDATE_EVERY = 2  # steps
OBSERVATION_RESOLUTION = 2  # steps between forecast occupancy maps
MAP_RADIUS = 100.0  # [m]
LATERAL_OFFSETS = (-1.0, 1.0)  # [m] after the centerline itself
MAX_DYNAMIC = {"vehicle": 50, "pedestrian": 25, "bicycle": 10}
MAX_STATIC = 50
IDM_ACCELERATION_EXPONENT = 10
RED_LIGHT_PREFIX = "red_light_"


@dataclass(frozen=True)
class IDMPolicies:
    """The batch of IDM policies (navsim `BatchIDMPolicy` as configured by the metric cache)."""

    speed_limit_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    fallback_target_velocity: float = 15.0  # [m/s]
    min_gap_to_lead_agent: float = 1.0  # [m]
    headway_time: float = 1.5  # [s]
    accel_max: float = 1.5  # [m/s^2]
    decel_max: float = 3.0  # [m/s^2]

    def target_velocities(self, speed_limit_mps: float | None) -> np.ndarray:
        limit = self.fallback_target_velocity if speed_limit_mps is None else speed_limit_mps
        return np.asarray(self.speed_limit_fractions, dtype=np.float64) * limit


def parallel_path(path: PDMPath, offset: float) -> PDMPath:
    """The path shifted `offset` metres to its left (negative: right), per vertex along the vertex heading."""
    poses = path.poses.copy()
    poses[:, 0] += np.cos(path.poses[:, 2] + np.pi / 2) * offset
    poses[:, 1] += np.sin(path.poses[:, 2] + np.pi / 2) * offset
    return PDMPath(poses)


@dataclass
class ForecastObstacles:
    """Obstacles seen by PDM-Closed: t0 boxes moved at constant velocity, plus the red route connectors.

    :ivar tokens: `(N,)` track tokens, then `red_light_<id>` tokens.
    :ivar track_index: `(N_tracks,)` rows of the tracks in the source observation (static objects first).
    :ivar corners: `(N_tracks, 4, 2)` t0 box corners.
    :ivar displacement_rate: `(N_tracks, 2)` [m/s] forecast velocity (speed along the heading, or against it for
        agents driving backwards; 0 for static objects).
    :ivar lead_speeds: `(N_tracks,)` [m/s] speed projected in `track_headings` when followed (0 for static objects).
    :ivar track_headings: `(N_tracks,)` t0 headings.
    :ivar is_agent: `(N_tracks,)` vehicles, pedestrians and bicycles (followed with their projected speed).
    :ivar red_light_ids: `(L,)` red connector ids on the corrected route.
    :ivar red_light_polygons: `(L,)` polygons of the red connectors.
    :ivar ignored: `(N,)` bool, overlapping the ego at t0 (not followed; tracks also not scored).
    """

    tokens: np.ndarray
    track_index: np.ndarray
    corners: np.ndarray
    displacement_rate: np.ndarray
    lead_speeds: np.ndarray
    track_headings: np.ndarray
    is_agent: np.ndarray
    red_light_ids: np.ndarray
    red_light_polygons: np.ndarray
    ignored: np.ndarray

    @property
    def num_tracks(self) -> int:
        return len(self.corners)

    def polygons_at(self, step: int) -> np.ndarray:
        """All obstacle polygons `(N,)` at simulation step `step` (forecast held for 2 steps, as navsim)."""
        elapsed = (step // OBSERVATION_RESOLUTION) * OBSERVATION_RESOLUTION * STEP_S
        moved = self.corners + elapsed * self.displacement_rate[:, None, :]
        tracks = shapely.polygons(moved) if self.num_tracks else np.empty(0, dtype=object)
        return np.concatenate([tracks, self.red_light_polygons])

    def as_observation(self, source: Observation, num_steps: int = PROPOSAL_STEPS + 1) -> Observation:
        """The forecast in the scorer's `Observation` form (ignored tracks removed; red lights always on)."""
        keep = ~self.ignored[: self.num_tracks]
        rows = self.track_index[keep]
        elapsed = (np.arange(num_steps) // OBSERVATION_RESOLUTION) * OBSERVATION_RESOLUTION * STEP_S
        center0 = self.corners[keep].mean(axis=1)
        rate = self.displacement_rate[keep]
        n = len(rows)
        return Observation(
            tokens=source.tokens[rows], types=source.types[rows], sizes=source.sizes[rows],
            first_headings=self.track_headings[keep], first_speeds=source.first_speeds[rows],
            present=np.ones((num_steps, n), dtype=bool),
            centers=center0[None] + elapsed[:, None, None] * rate[None],
            headings=np.broadcast_to(self.track_headings[keep], (num_steps, n)).copy(),
            velocities=np.broadcast_to(rate, (num_steps, n, 2)).copy(),
            red_light_ids=self.red_light_ids, red_light_polygons=self.red_light_polygons,
            red_light_active=np.ones((num_steps, len(self.red_light_ids)), dtype=bool),
        )  # fmt: skip


def forecast_obstacles(
    observation: Observation, ego_state: np.ndarray, route_lane_ids: Sequence[str], map_api,
    red_connector_ids: Sequence[str] | None = None, t0_tracks: np.ndarray | None = None,
) -> ForecastObstacles:  # fmt: skip
    """PDM-Closed's view of the scene at t0 (navsim `PDMObservation.update` + `PDMObjectManager`).

    :param observation: the scene's interpolated observation; its step 0 gives the t0 boxes and velocities.
    :param red_connector_ids: lane connectors red at t0 (all of the frame's, filtered here to the corrected
        route); None takes the observation's red lights at step 0 (those of the uncorrected route).
    :param t0_tracks: `(T,)` bool, tracks annotated in the t0 frame; None takes `observation.present[0]`
        (which also holds tracks seen once later, navsim's single-observation quirk).
    """
    ego_center = V.centers(np.asarray(ego_state, dtype=np.float64)[:3])
    present = observation.present[0] if t0_tracks is None else np.asarray(t0_tracks, dtype=bool) & observation.present[0]
    centers0 = observation.centers[0]
    near = present & (np.linalg.norm(centers0 - ego_center, axis=1) <= MAP_RADIUS)
    distance = np.linalg.norm(centers0 - ego_center, axis=1)
    rows: list[int] = []
    for kind, cap in MAX_DYNAMIC.items():
        idx = np.nonzero(near & (observation.types == kind))[0]
        rows.extend(idx[np.argsort(distance[idx], kind="stable")][:cap].tolist())
    static = np.nonzero(near & ~np.isin(observation.types, tuple(MAX_DYNAMIC)))[0]
    static = static[np.argsort(distance[static], kind="stable")][:MAX_STATIC]
    rows = static.tolist() + rows  # navsim stacks static objects first
    rows_arr = np.asarray(rows, dtype=int)
    is_agent = np.zeros(len(rows_arr), dtype=bool)
    is_agent[len(static):] = True
    headings = observation.headings[0, rows_arr]
    velocity = observation.velocities[0, rows_arr] if len(rows_arr) else np.zeros((0, 2))
    speed = np.where(is_agent, np.linalg.norm(velocity, axis=-1), 0.0)
    forward = np.abs(normalize_angle(headings - np.arctan2(velocity[:, 1], velocity[:, 0]))) < np.pi / 2
    track_heading = np.where(forward, headings, normalize_angle(headings + np.pi))
    rate = np.where(is_agent[:, None], np.stack([np.cos(track_heading), np.sin(track_heading)], -1) * speed[:, None], 0.0)
    corners = box_corners(centers0[rows_arr], headings, observation.sizes[rows_arr, 0], observation.sizes[rows_arr, 1])

    route_lanes = set(route_lane_ids)
    if red_connector_ids is None:
        red_connector_ids = [i for i, on in zip(observation.red_light_ids, observation.red_light_active[0]) if on]
    red = [str(i) for i in dict.fromkeys(str(i) for i in red_connector_ids) if i in route_lanes and i in map_api.lane_connectors]
    red_polygons = np.array([map_api.lane_connectors[i].polygon for i in red], dtype=object)

    tokens = np.concatenate([observation.tokens[rows_arr], np.array([RED_LIGHT_PREFIX + i for i in red], dtype=object)])
    ego = V.ego_polygon(ego_state)
    polygons = np.concatenate([shapely.polygons(corners) if len(rows_arr) else np.empty(0, dtype=object), red_polygons])
    ignored = shapely.intersects(polygons, ego) if len(polygons) else np.zeros(0, dtype=bool)
    n_tracks = len(rows_arr)
    if len(red):
        ignored[n_tracks:] &= shapely.within(ego, red_polygons)  # a red light counts only when the ego is inside
    return ForecastObstacles(
        tokens=tokens, track_index=rows_arr, corners=corners, displacement_rate=rate,
        lead_speeds=speed, track_headings=headings, is_agent=is_agent, red_light_ids=np.array(red, dtype=object),
        red_light_polygons=red_polygons, ignored=np.asarray(ignored, dtype=bool),
    )  # fmt: skip


class _PathUnroller:
    """IDM unrolling of the proposals that share one path (navsim `PDMGenerator`, one lateral batch)."""

    def __init__(self, path: PDMPath, ego_state: np.ndarray, obstacles: ForecastObstacles, targets: np.ndarray,
                 policies: IDMPolicies, max_target_velocity: float, num_steps: int) -> None:  # fmt: skip
        self.path, self.obstacles, self.targets, self.policies = path, obstacles, targets, policies
        n = len(targets)
        self.progress = np.zeros((n, num_steps + 1))
        self.velocity = np.zeros((n, num_steps + 1))
        self.lead = np.zeros((n, num_steps + 1, 3))
        self.poses = np.zeros((n, num_steps + 1, 3))
        start = float(path.project(np.asarray(ego_state[:2])))
        self.progress[:, 0] = start
        self.velocity[:, 0] = ego_state[V.VELOCITY_X]
        self.poses[:, 0] = path.interpolate(start)
        reach = start + abs(max_target_velocity) * TRAJECTORY_STEPS * STEP_S
        self.corridor = path.substring(start, reach).buffer(V.WIDTH / 2.0, cap_style="square")

    def step(self, t: int, members: np.ndarray) -> None:
        """Advance proposals `members` (row indices) from step `t - 1` to `t`."""
        if t % LEAD_UPDATE_EVERY:
            self.lead[members, t] = self.lead[members, t - 1]
        else:
            self._update_leads(t, members)
        p = self.policies
        self.progress[members, t], self.velocity[members, t] = idm_step(
            self.progress[members, t - 1], self.velocity[members, t - 1], self.lead[members, t],
            self.targets[members], p.min_gap_to_lead_agent, p.headway_time, p.accel_max, p.decel_max, STEP_S,
            IDM_ACCELERATION_EXPONENT,
        )
        self.poses[members, t] = self.path.interpolate(self.progress[members, t])

    def _update_leads(self, t: int, members: np.ndarray) -> None:
        obstacles = self.obstacles
        polygons = obstacles.polygons_at(t)
        hit = np.nonzero(shapely.intersects(polygons, self.corridor) & ~obstacles.ignored)[0] if len(polygons) else []
        hit = np.asarray(hit, dtype=int)
        object_progress = self.path.project(shapely.get_coordinates(shapely.centroid(polygons[hit]))) if len(hit) else []
        row = np.zeros(3)  # [Q] reused across the proposals of this path
        for member in members:
            ego_progress = self.progress[member, t - 1]
            ahead = hit[np.asarray(object_progress) > ego_progress] if len(hit) else hit
            if len(ahead):
                ego = V.ego_polygon(self.poses[member, t - 1])
                distances = shapely.distance(ego, polygons[ahead])
                nearest = int(ahead[int(np.argmin(distances))])
                row[0] = ego_progress + float(np.min(distances))
                if nearest < obstacles.num_tracks:
                    heading = self.poses[member, t - 1, 2]
                    relative = normalize_angle(obstacles.track_headings[nearest] - heading)
                    row[1] = obstacles.lead_speeds[nearest] * np.cos(relative) if obstacles.is_agent[nearest] else 0.0
            else:
                row[0] = self.path.length
                row[2] = V.LENGTH / 2.0
            self.lead[member, t] = row


ScoreFunction = Callable[..., np.ndarray]


def _default_score(states, observation, centerline, route_lane_ids, drivable_map) -> np.ndarray:
    from irlvla_env.scoring.epdms import score_proposals

    return score_proposals(states, observation, centerline, route_lane_ids, drivable_map).pdm_score


def plan_pdm_closed(
    ego_state: np.ndarray, observation: Observation, route: RoutePlan, drivable_map, map_api,
    red_connector_ids: Sequence[str] | None = None, t0_tracks: np.ndarray | None = None,
    policies: IDMPolicies = IDMPolicies(), score_fn: ScoreFunction | None = None,
) -> np.ndarray:  # fmt: skip
    """The PDM-Closed plan: `(51, 11)` states at t0 … t0 + 5 s (x, y, heading set; the rest 0).

    :param ego_state: `(11,)` global rear-axle state at t0.
    :param observation: the scene's interpolated observation (t0 boxes are read from step 0).
    :param route: the corrected route and centerline (`route.plan_route`).
    :param drivable_map: the scorer's local map (passed to the scorer).
    :param map_api: the scene's map (red-light connector polygons).
    :param red_connector_ids: connectors red at t0 (see `forecast_obstacles`).
    :param t0_tracks: tracks annotated at t0 (see `forecast_obstacles`).
    :param score_fn: `(states (15, 41, 11), observation, centerline, route_lane_ids, drivable_map) -> (15,)`
        proposal scores; defaults to the EPDMS proposal scorer's `pdm_score`.
    """
    ego_state = np.asarray(ego_state, dtype=np.float64)
    if ego_state.shape != (V.STATE_SIZE,) or not np.all(np.isfinite(ego_state)):
        raise ValueError(f"ego_state must be a finite ({V.STATE_SIZE},) state, got shape {ego_state.shape}")
    obstacles = forecast_obstacles(observation, ego_state, route.lane_ids, map_api, red_connector_ids, t0_tracks)
    targets = policies.target_velocities(route.speed_limit_mps)
    paths = [route.centerline] + [parallel_path(route.centerline, offset) for offset in LATERAL_OFFSETS]
    unrollers = [
        _PathUnroller(path, ego_state, obstacles, targets, policies, float(np.max(targets)), TRAJECTORY_STEPS)
        for path in paths
    ]
    everyone = np.arange(len(targets))
    for unroller in unrollers:
        for t in range(1, PROPOSAL_STEPS + 1):
            unroller.step(t, everyone)
    proposals = np.zeros((len(paths) * len(targets), PROPOSAL_STEPS + 1, V.STATE_SIZE))
    proposals[..., :3] = np.concatenate([u.poses[:, : PROPOSAL_STEPS + 1] for u in unrollers])
    rollouts = Simulator(STEP_S).simulate(ego_state, proposals)
    scores = np.asarray(
        (score_fn or _default_score)(
            rollouts, obstacles.as_observation(observation), route.centerline, list(route.lane_ids), drivable_map
        ),
        dtype=np.float64,
    )
    best = int(np.argmax(scores))
    unroller, member = unrollers[best // len(targets)], np.array([best % len(targets)])
    for t in range(PROPOSAL_STEPS + 1, TRAJECTORY_STEPS + 1):
        unroller.step(t, member)
    plan = np.zeros((TRAJECTORY_STEPS + 1, V.STATE_SIZE))
    plan[:, :3] = unroller.poses[member[0]]
    return plan
