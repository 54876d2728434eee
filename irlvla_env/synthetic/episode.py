"""One log's simulation: the expert ego and the traffic of its tile, stepped at 10 Hz, recorded at 2 Hz.

The ego is recorded at every step (its velocity, acceleration and yaw rate need the fine resolution); the
other objects and the lights only at the 2 Hz keyframes the log pickle stores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irlvla_env.synthetic.actors import Walker
from irlvla_env.synthetic.expert import ExpertDriver
from irlvla_env.synthetic.signals import RED
from irlvla_env.synthetic.tile import Tile
from irlvla_env.synthetic.traffic import DT, World

STEPS_PER_FRAME = 5  # 10 Hz steps per 2 Hz keyframe
PEDESTRIAN_SIZE = (0.6, 0.6, 1.75)


@dataclass
class FrameObjects:
    """Objects at one keyframe, global frame: boxes `(N, 6)` `x, y, heading, l, w, h`, velocities `(N, 2)`."""

    boxes: np.ndarray
    velocities: np.ndarray
    names: list[str]
    track_tokens: list[str]
    traffic_lights: list[tuple[int, bool]]


@dataclass
class Episode:
    """What the log writer needs.

    :param ego_states: `(T, 6)` at 10 Hz: rear-axle `x, y, heading`, speed, longitudinal accel, yaw rate.
    :param frames: objects at each keyframe (every `STEPS_PER_FRAME` steps of `ego_states`).
    :param route_roadblocks: the ego route as roadblock / roadblock-connector ids.
    """

    ego_states: np.ndarray
    frames: list[FrameObjects]
    route_roadblocks: list[int]
    lane_changes: int


def run_episode(tile: Tile, rng: np.random.Generator, num_frames: int, warmup_s: float, log_key: str) -> Episode:
    """Simulate `warmup_s` of settling, then `num_frames` keyframes 0.5 s apart."""
    world = World(tile, rng, log_key)
    driver = ExpertDriver(rng)
    first = tile.network.lanes[tile.ego_route[0]]
    v0 = first.speed_limit * driver.params.speed_factor * float(rng.uniform(0.6, 0.95))
    ego = world.new_agent(tile.ego_route, tile.ego_start_s, v0, driver.params, is_ego=True, size=(5.176, 2.297, 1.777))
    if tile.lead_brake:
        world.add_lead_brake(ego)
    world.populate(ego)

    warmup = int(round(warmup_s / DT))
    total = warmup + (num_frames - 1) * STEPS_PER_FRAME + 1
    ego_rows, frames = [], []
    for step in range(total):
        if step >= warmup:
            pose = driver.recorded_pose(ego)
            ego_rows.append([*pose, ego.v, ego.a])
            if (step - warmup) % STEPS_PER_FRAME == 0:
                frames.append(_snapshot(world))
        if step < total - 1:
            world.step(driver)
    ego_states = np.array(ego_rows)
    yaw_rate = np.gradient(np.unwrap(ego_states[:, 2]), DT)
    ego_states = np.column_stack([ego_states, yaw_rate])
    return Episode(ego_states, frames, tile.network.route_roadblocks(tile.ego_route), driver.lane_changes)


def _snapshot(world: World) -> FrameObjects:
    rows, vel, names, tokens = [], [], [], []
    for agent in world.agents:
        if agent.alive and not agent.is_ego:
            x, y, h = agent.pose()
            rows.append([x, y, h, *agent.size])
            vel.append([agent.v * np.cos(h), agent.v * np.sin(h)])
            names.append(agent.name)
            tokens.append(agent.track_token)
    for walker in world.walkers:
        if walker.alive and _visible(walker):
            x, y, h = walker.pose()
            rows.append([x, y, h, *PEDESTRIAN_SIZE])
            vel.append([walker.v * np.cos(h), walker.v * np.sin(h)])
            names.append("pedestrian")
            tokens.append(walker.track_token)
    for obj, tok in zip(world.statics, world.static_tokens):
        rows.append([*obj.pose, *obj.size])
        vel.append([0.0, 0.0])
        names.append(obj.name)
        tokens.append(tok)
    lights = [(int(c), state == RED) for c, state in sorted(world.light_state.items())]
    return FrameObjects(np.array(rows).reshape(-1, 6), np.array(vel).reshape(-1, 2), names, tokens, lights)


def _visible(walker: Walker) -> bool:
    """Walkers exist in the log from their start time on (before it they are somewhere off the map)."""
    return walker.plan.start_time <= 0.0 or walker.s > 0.0 or walker.v > 0.0

