"""Feature and target builders shared by the agents (navsim's builder API, spec §2.3).

Feature builders read only the `AgentInput`; target builders read the ground-truth `Scene`. Every builder returns
tensors without a batch dimension, so the training cache can store them per token and the default
`compute_trajectory` can add the batch dimension itself.
"""

from __future__ import annotations

import numpy as np
import torch

from agents.abstract_agent import AbstractFeatureBuilder, AbstractTargetBuilder
from irlvla_env.navsim.dataclasses import DEFAULT_SAMPLING, AgentInput, Scene, TrajectorySampling
from irlvla_env.observations import ObservationConfig, build_observation
from irlvla_env.observations.targets import agent_box_targets, bev_semantic_map


class EgoStatusFeatureBuilder(AbstractFeatureBuilder):
    """`"ego_status"` `(8,)`: velocity (2) ‖ acceleration (2) ‖ driving command (4) of the current frame.

    This is the whole input of navsim's EgoStatusMLP, and the status vector TransFuser fuses with its sensors.
    """

    def get_unique_name(self) -> str:
        return "ego_status"

    def compute_features(self, agent_input: AgentInput) -> dict[str, torch.Tensor]:
        status = agent_input.ego_statuses[-1]
        vector = np.concatenate([status.ego_velocity, status.ego_acceleration, status.driving_command])
        if vector.shape != (8,):
            raise ValueError(f"ego status of the current frame must give 8 values (2+2+4), got shape {vector.shape}")
        return {"ego_status": torch.as_tensor(vector, dtype=torch.float32)}


class ObservationFeatureBuilder(AbstractFeatureBuilder):
    """The sensor observation of `irlvla_env.observations` as tensors.

    `"camera"` float `(3, H, W)` in [0, 1] (stitched front cameras), `"lidar_bev"` float `(2, B, B)`,
    `"ego_history"` float `(num_history, 7)`, `"command"` float `(4,)`. The camera is scaled here rather than
    cached as float so that a custom caller sees the same tensors as training.
    """

    def __init__(self, config: ObservationConfig):
        self.config = config

    def get_unique_name(self) -> str:
        # The cache must not mix observations rendered with different sizes or sensors.
        return f"observation_{self.config.config_hash()}"

    def compute_features(self, agent_input: AgentInput) -> dict[str, torch.Tensor]:
        """Raises `MissingSensorError` (a `ValueError`) naming a sensor the loader did not read."""
        observation = build_observation(agent_input, self.config)
        camera = torch.from_numpy(np.ascontiguousarray(observation["camera"])).permute(2, 0, 1).float() / 255.0
        return {
            "camera": camera,
            "lidar_bev": torch.as_tensor(observation["lidar_bev"], dtype=torch.float32),
            "ego_history": torch.as_tensor(observation["ego_status"], dtype=torch.float32),
            "command": torch.as_tensor(observation["command"], dtype=torch.float32),
        }


class TrajectoryTargetBuilder(AbstractTargetBuilder):
    """`"trajectory"` `(num_poses, 3)`: the logged future in the current frame's local coordinates."""

    def __init__(self, trajectory_sampling: TrajectorySampling = DEFAULT_SAMPLING):
        self.trajectory_sampling = trajectory_sampling

    def get_unique_name(self) -> str:
        return f"trajectory_{self.trajectory_sampling.num_poses}"

    def compute_targets(self, scene: Scene) -> dict[str, torch.Tensor]:
        future = scene.get_future_trajectory(self.trajectory_sampling.num_poses)
        return {"trajectory": torch.as_tensor(future.poses, dtype=torch.float32)}


class PerceptionTargetBuilder(AbstractTargetBuilder):
    """TransFuser's auxiliary targets: the BEV semantic map and the nearest vehicles' boxes.

    `"bev_semantic_map"` long `(H, W)` class ids; `"agent_states"` float `(max_agents, 5)` as
    `(x, y, heading, length, width)`; `"agent_labels"` bool `(max_agents,)` marking the real (unpadded) rows.
    """

    def __init__(self, bev_size: tuple[int, int], bev_resolution: float, max_agents: int):
        self.bev_size = tuple(bev_size)
        self.bev_resolution = bev_resolution
        self.max_agents = max_agents

    def get_unique_name(self) -> str:
        height, width = self.bev_size
        return f"perception_{height}x{width}_{self.bev_resolution:g}m_{self.max_agents}"

    def compute_targets(self, scene: Scene) -> dict[str, torch.Tensor]:
        bev = bev_semantic_map(scene, self.bev_size, self.bev_resolution)
        annotations = scene.frames[scene.current_index].annotations
        states, labels = agent_box_targets(annotations, self.max_agents)
        return {
            "bev_semantic_map": torch.from_numpy(np.asarray(bev, dtype=np.int64)),
            "agent_states": torch.as_tensor(states, dtype=torch.float32),
            "agent_labels": torch.as_tensor(labels, dtype=torch.bool),
        }

