"""Traffic-agent policies over the scorer's interpolated `Observation` (41 steps at 10 Hz; spec §4.3).

- `log_replay` (navsim `non_reactive`, the one-stage default): the logged future, minus every track whose box
  overlaps the ego box at t0.
- `constant_velocity` (debug): vehicles present at t0 keep their t0 velocity and heading; every other object type
  follows the log; vehicles that only appear later are absent, as in navsim (only t0 vehicles are simulated).
- `idm_reactive` / `idm_reactive_batch` (navsim `reactive`, both stages of the two-stage benchmark): the t0
  vehicles become IDM agents on their lanes reacting to the simulated ego (`irlvla_env.simulation.idm`),
  some others stay frozen, the rest vanish; every other object type follows the log.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import shapely

from irlvla_env.scoring.observation import Observation, box_corners
from irlvla_env.simulation import vehicle as V
from irlvla_env.simulation.idm import IDMParameters, build_idm_agents, simulate_idm_agents

STEP_S = 0.1


def _track_polygons(observation: Observation, step: int) -> np.ndarray:
    """Polygons `(T,)` of the tracks at `step` (None where absent)."""
    corners = box_corners(
        observation.centers[step], observation.headings[step], observation.sizes[:, 0], observation.sizes[:, 1]
    )
    polygons = np.full(observation.num_tracks, None, dtype=object)
    present = observation.present[step]
    if present.any():
        polygons[present] = shapely.polygons(corners[present])
    return polygons


def overlapping_ego_at_t0(observation: Observation, ego_state_t0: np.ndarray) -> np.ndarray:
    """Bool `(T,)`: tracks whose box at step 0 intersects the ego box at t0."""
    polygons = _track_polygons(observation, 0)
    present = observation.present[0]
    out = np.zeros(observation.num_tracks, dtype=bool)
    if present.any():
        out[present] = shapely.intersects(polygons[present], V.ego_polygon(np.asarray(ego_state_t0)[:3]))
    return out


def log_replay(observation: Observation, ego_state_t0: np.ndarray) -> Observation:
    """The logged observation without the tracks that overlap the ego at t0 (navsim `LogReplayTrafficAgents`)."""
    drop = overlapping_ego_at_t0(observation, ego_state_t0)
    return observation.without_tracks(drop) if drop.any() else observation


def constant_velocity(observation: Observation, ego_state_t0: np.ndarray | None = None) -> Observation:
    """Vehicles present at t0 move with their t0 velocity at their t0 heading; others follow the log.

    `ego_state_t0` is accepted for a uniform policy signature; navsim's constant-velocity policy does not remove
    overlapping tracks (spec §4.14 item 4).
    """
    vehicles = observation.is_vehicle
    at_t0 = observation.present[0] & vehicles
    later_vehicles = vehicles & ~at_t0
    steps = np.arange(observation.num_steps)[:, None, None] * STEP_S
    present = observation.present.copy()
    present[1:, vehicles] = False
    present[1:, at_t0] = True
    centers = observation.centers.copy()
    headings = observation.headings.copy()
    velocities = observation.velocities.copy()
    centers[:, at_t0] = observation.centers[0, at_t0] + steps * observation.velocities[0, at_t0]
    headings[:, at_t0] = observation.headings[0, at_t0]
    velocities[:, at_t0] = observation.velocities[0, at_t0]
    centers[1:, later_vehicles] = np.nan
    headings[1:, later_vehicles] = np.nan
    velocities[1:, later_vehicles] = np.nan
    return replace(observation, present=present, centers=centers, headings=headings, velocities=velocities)


def idm_reactive(
    observation: Observation, ego_state_t0: np.ndarray, ego_rollout: np.ndarray, map_api,
    t0_tracks: np.ndarray | None = None, params: IDMParameters = IDMParameters(),
) -> Observation:  # fmt: skip
    """Reactive traffic for one simulated ego rollout `(41, 11)`; see :func:`idm_reactive_batch`."""
    rollout = np.asarray(ego_rollout, dtype=np.float64)
    if rollout.ndim != 2:
        raise ValueError(f"ego_rollout must have shape (steps, {V.STATE_SIZE}), got {rollout.shape}")
    return idm_reactive_batch(observation, ego_state_t0, rollout[None], map_api, t0_tracks, params)[0]


def idm_reactive_batch(
    observation: Observation, ego_state_t0: np.ndarray, ego_rollouts: np.ndarray, map_api,
    t0_tracks: np.ndarray | None = None, params: IDMParameters = IDMParameters(),
) -> list[Observation]:  # fmt: skip
    """The observation each of K simulated ego rollouts `(K, 41, 11)` would meet under navsim's IDM traffic.

    Step 0 holds the objects of the t0 frame as logged. At steps 1 … 40 vehicles come from the IDM simulation
    (agents on their lanes, frozen t0 boxes, the rest absent; vehicles first seen later stay absent) and all
    other objects from the log. Box sizes and the first-appearance heading/speed are unchanged (every vehicle
    kept first appears at t0). Tracks overlapping the ego at t0 are not removed (spec §4.14 item 4).

    :param ego_state_t0: `(11,)` the logged t0 ego state (its box blocks snapping; its speed replaces NaN
        vehicle speeds).
    :param map_api: the scene's `NuPlanMap` (lanes, lane connectors, intersections).
    :param t0_tracks: `(T,)` bool, tracks annotated in the t0 frame; None takes `observation.present[0]`
        (which also holds tracks seen once at a later frame, navsim's single-observation quirk).
    :return: K observations sharing the track metadata (and the red lights) of `observation`.
    """
    rollouts = np.asarray(ego_rollouts, dtype=np.float64)
    steps = observation.num_steps
    if rollouts.ndim != 3 or rollouts.shape[1:] != (steps, V.STATE_SIZE) or len(rollouts) == 0:
        raise ValueError(f"ego_rollouts must have shape (K>=1, {steps}, {V.STATE_SIZE}), got {rollouts.shape}")
    if not np.all(np.isfinite(rollouts[..., :5])):
        raise ValueError("ego_rollouts contain NaN or inf poses/velocities")
    ego_state_t0 = np.asarray(ego_state_t0, dtype=np.float64)
    at_t0 = observation.present[0].copy()
    if t0_tracks is not None:
        if np.shape(t0_tracks) != (observation.num_tracks,):
            raise ValueError(f"t0_tracks must have shape ({observation.num_tracks},), got {np.shape(t0_tracks)}")
        at_t0 &= np.asarray(t0_tracks, dtype=bool)
    vehicles = observation.is_vehicle
    rows = np.nonzero(at_t0 & vehicles)[0]
    agents = build_idm_agents(
        observation.centers[0, rows], observation.headings[0, rows], observation.velocities[0, rows],
        observation.sizes[rows], rows, ego_state_t0, map_api, params,
    )  # fmt: skip
    simulated = simulate_idm_agents(agents, rollouts, params)

    k = len(rollouts)
    present = np.broadcast_to(observation.present, (k,) + observation.present.shape).copy()
    present[:, 0] = at_t0
    present[:, 1:, vehicles] = False
    centers = np.broadcast_to(observation.centers, (k,) + observation.centers.shape).copy()
    headings = np.broadcast_to(observation.headings, (k,) + observation.headings.shape).copy()
    velocities = np.broadcast_to(observation.velocities, (k,) + observation.velocities.shape).copy()

    poses = simulated.poses[:, 1:]
    present[:, 1:, agents.rows] = simulated.active[:, 1:]
    centers[:, 1:, agents.rows] = poses[..., :2]
    headings[:, 1:, agents.rows] = poses[..., 2]
    direction = np.stack([np.cos(poses[..., 2]), np.sin(poses[..., 2])], axis=-1)
    velocities[:, 1:, agents.rows] = simulated.speeds[:, 1:, :, None] * direction

    frozen = agents.frozen_rows
    present[:, 1:, frozen] = simulated.frozen_visible[:, 1:]
    centers[:, 1:, frozen] = observation.centers[0, frozen]
    headings[:, 1:, frozen] = observation.headings[0, frozen]
    velocities[:, 1:, frozen] = observation.velocities[0, frozen]

    centers[~present] = np.nan
    headings[~present] = np.nan
    velocities[~present] = np.nan
    return [
        replace(observation, present=present[i], centers=centers[i], headings=headings[i], velocities=velocities[i])
        for i in range(k)
    ]
