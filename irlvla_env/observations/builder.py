"""AgentInput -> the observation dict a policy or reward model sees, its Gymnasium space, and batching.

Keys (docs/interfaces.md): `camera` uint8 `(H, W, 3)`, `lidar_bev` float32 `(2, B, B)`, `ego_status` float32
`(num_history, 7)`, `command` float32 `(4,)`, `lidar_history` float32 `(n, B, B)` when `lidar_history = n > 0`,
and `prompt` (str) when `include_prompt`. Cameras come from the current frame only, the LiDAR from it and the
`lidar_history` frames before it, so `required_sensors` asks the loader for nothing else.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from irlvla_env.navsim.dataclasses import DRIVING_COMMANDS, AgentInput, SensorConfig
from irlvla_env.observations.camera import MissingSensorError, stitch_cameras
from irlvla_env.observations.config import CURRENT_FRAME_INDEX, ObservationConfig
from irlvla_env.observations.ego import EGO_STATUS_FIELDS, EGO_STATUS_HIGH, EGO_STATUS_LOW, build_prompt
from irlvla_env.observations.ego import driving_command, ego_status_history
from irlvla_env.observations.lidar_bev import lidar_bev, lidar_history_bev

# Characters a prompt may use: printable ASCII (gymnasium's Text space defaults to alphanumerics only).
PROMPT_CHARSET = string.printable


def required_sensors(config: ObservationConfig) -> SensorConfig:
    """The sensors `build_observation` reads: the configured cameras (current frame) and the LiDAR (current frame
    and `lidar_history` frames before it)."""
    current = [CURRENT_FRAME_INDEX]
    lidar = list(range(CURRENT_FRAME_INDEX - config.lidar_history, CURRENT_FRAME_INDEX + 1))
    return SensorConfig(**{name: current for name in config.cameras}, lidar_pc=lidar)


def observation_space(config: ObservationConfig) -> gym.spaces.Dict:
    """The exact space of :func:`build_observation`'s output (bounds, shapes, dtypes)."""
    history_low = np.tile(EGO_STATUS_LOW, (config.num_history, 1))
    history_high = np.tile(EGO_STATUS_HIGH, (config.num_history, 1))
    size = config.lidar_bev_size
    spaces = {
        "camera": gym.spaces.Box(0, 255, (config.image_height, config.image_width, 3), dtype=np.uint8),
        "lidar_bev": gym.spaces.Box(0.0, 1.0, (2, size, size), dtype=np.float32),
        "ego_status": gym.spaces.Box(history_low, history_high, dtype=np.float32),
        "command": gym.spaces.Box(0.0, 1.0, (len(DRIVING_COMMANDS),), dtype=np.float32),
    }
    if config.lidar_history:
        spaces["lidar_history"] = gym.spaces.Box(0.0, 1.0, (config.lidar_history, size, size), dtype=np.float32)
    if config.include_prompt:
        spaces["prompt"] = gym.spaces.Text(max_length=config.prompt_max_length, min_length=0, charset=PROMPT_CHARSET)
    return gym.spaces.Dict(spaces)


def build_observation(agent_input: AgentInput, config: ObservationConfig) -> dict[str, np.ndarray | str]:
    """Build the observation of one scene from what an agent may see (never from the future or the map).

    Raises :class:`MissingSensorError` naming the sensor and history index when a needed camera image or the
    point cloud was not loaded (load with ``required_sensors(config)``).
    """
    lengths = (len(agent_input.ego_statuses), len(agent_input.cameras), len(agent_input.lidars))
    if lengths[0] == 0 or len(set(lengths)) != 1:
        raise ValueError(f"agent input frames disagree: {lengths} ego statuses / camera frames / lidar frames")
    index = len(agent_input.ego_statuses) - 1
    cameras, lidar = agent_input.cameras[index], agent_input.lidars[index]
    images = {}
    for name in config.cameras:
        image = getattr(cameras, name).image
        if image is None:
            raise MissingSensorError(f"observation needs camera {name} at history index {index}, but it was not loaded")
        images[name] = image
    if lidar.lidar_pc is None:
        raise MissingSensorError(f"observation needs lidar_pc at history index {index}, but it was not loaded")
    observation: dict[str, np.ndarray | str] = {
        "camera": stitch_cameras(images, config),
        "lidar_bev": lidar_bev(lidar.lidar_pc, config),
        "ego_status": ego_status_history(agent_input, config.num_history),
        "command": driving_command(agent_input),
    }
    if config.lidar_history:
        past = range(index - 1, index - 1 - config.lidar_history, -1)  # newest first
        if min(past) < 0:
            raise ValueError(f"observation needs {config.lidar_history} past LiDAR sweeps, agent input holds {index + 1} frames")
        missing = [i for i in past if agent_input.lidars[i].lidar_pc is None]
        if missing:
            raise MissingSensorError(f"observation needs lidar_pc at history indices {missing}, but they were not loaded")
        observation["lidar_history"] = lidar_history_bev([agent_input.lidars[i].lidar_pc for i in past],
                                                         [agent_input.ego_statuses[i].ego_pose for i in past], config)
    if config.include_prompt:
        observation["prompt"] = build_prompt(agent_input)[: config.prompt_max_length]
    return observation


def batch_observations(observations: Sequence[dict[str, np.ndarray | str]]) -> dict[str, np.ndarray | list[str]]:
    """Stack observations along a new leading axis; text keys (`prompt`) become lists of strings."""
    if not observations:
        raise ValueError("batch_observations needs at least one observation")
    keys = set(observations[0])
    for i, obs in enumerate(observations):
        if set(obs) != keys:
            raise ValueError(f"observation {i} has keys {sorted(obs)}, observation 0 has {sorted(keys)}")
    batch: dict[str, np.ndarray | list[str]] = {}
    for key in observations[0]:
        values = [obs[key] for obs in observations]
        batch[key] = list(values) if isinstance(values[0], str) else np.stack(values)
    return batch


__all__ = [
    "EGO_STATUS_FIELDS",
    "MissingSensorError",
    "batch_observations",
    "build_observation",
    "observation_space",
    "required_sensors",
]
