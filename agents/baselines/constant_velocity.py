"""ConstantVelocity: drive straight ahead at the current speed (spec §2.4), the floor every planner must beat."""

from __future__ import annotations

import torch

from agents.abstract_agent import AbstractAgent, AbstractFeatureBuilder
from agents.features import EgoStatusFeatureBuilder
from irlvla_env.navsim.dataclasses import DEFAULT_SAMPLING, SensorConfig, TrajectorySampling


class ConstantVelocityAgent(AbstractAgent):
    """Poses `(t_k · ‖v‖, 0, 0)` for the sampling's times `t_k`: heading 0 and y = 0 throughout."""

    def __init__(self, trajectory_sampling: TrajectorySampling = DEFAULT_SAMPLING):
        super().__init__(trajectory_sampling)
        self.register_buffer("_timestamps", torch.as_tensor(trajectory_sampling.timestamps, dtype=torch.float32))

    def name(self) -> str:
        return "constant_velocity"

    def initialize(self) -> None:
        pass

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig.build_no_sensors()

    def get_feature_builders(self) -> list[AbstractFeatureBuilder]:
        return [EgoStatusFeatureBuilder()]

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        speed = torch.linalg.vector_norm(features["ego_status"][:, :2], dim=-1)  # (B,)
        trajectory = torch.zeros(speed.shape[0], self._timestamps.shape[0], 3, device=speed.device)
        trajectory[..., 0] = speed[:, None] * self._timestamps
        return {"trajectory": trajectory}
