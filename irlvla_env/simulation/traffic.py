"""Traffic-agent policies over the scorer's interpolated `Observation` (41 steps at 10 Hz; spec §4.3).

- `log_replay` (navsim `non_reactive`, the one-stage default): the logged future, minus every track whose box
  overlaps the ego box at t0.
- `constant_velocity` (debug): vehicles present at t0 keep their t0 velocity and heading; every other object type
  follows the log; vehicles that only appear later are absent, as in navsim (only t0 vehicles are simulated).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import shapely

from irlvla_env.scoring.observation import Observation, box_corners
from irlvla_env.simulation import vehicle as V

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
