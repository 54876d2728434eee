"""EgoStatusMLP: a blind planner from the current velocity, acceleration and command (spec §2.4).

It sees no sensors, so its score measures how much of planning the ego state alone explains.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from agents.abstract_agent import AbstractAgent, AbstractFeatureBuilder, AbstractTargetBuilder
from agents.features import EgoStatusFeatureBuilder, TrajectoryTargetBuilder
from irlvla_env.navsim.dataclasses import DEFAULT_SAMPLING, SensorConfig, TrajectorySampling


class EgoStatusMLPAgent(AbstractAgent):
    """MLP 8 → hidden → hidden → hidden → num_poses·3 with ReLU, trained with L1 against the logged future.

    :param hidden_layer_dim: width of the three hidden layers (navsim: 512).
    :param lr: learning rate of the AdamW optimizer that `get_optimizers` returns (navsim: 1e-4 with Adam).
    :param num_poses: poses of the output trajectory at 0.5 s (navsim: 8).
    """

    def __init__(self, hidden_layer_dim: int = 512, lr: float = 1e-4, weight_decay: float = 0.0, num_poses: int = 8):
        super().__init__(TrajectorySampling(num_poses=num_poses, interval_length=DEFAULT_SAMPLING.interval_length))
        self.hidden_layer_dim = hidden_layer_dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.mlp = nn.Sequential(
            nn.Linear(8, hidden_layer_dim),
            nn.ReLU(),
            nn.Linear(hidden_layer_dim, hidden_layer_dim),
            nn.ReLU(),
            nn.Linear(hidden_layer_dim, hidden_layer_dim),
            nn.ReLU(),
            nn.Linear(hidden_layer_dim, num_poses * 3),
        )

    def name(self) -> str:
        return "ego_status_mlp"

    def initialize(self) -> None:
        pass

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig.build_no_sensors()

    def get_config(self) -> dict[str, Any]:
        return {
            "hidden_layer_dim": self.hidden_layer_dim,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "num_poses": self._trajectory_sampling.num_poses,
        }

    def get_feature_builders(self) -> list[AbstractFeatureBuilder]:
        return [EgoStatusFeatureBuilder()]

    def get_target_builders(self) -> list[AbstractTargetBuilder]:
        return [TrajectoryTargetBuilder(self._trajectory_sampling)]

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        poses = self.mlp(features["ego_status"])
        return {"trajectory": poses.reshape(-1, self._trajectory_sampling.num_poses, 3)}

    def compute_loss(
        self,
        features: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        predictions: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        loss = nn.functional.l1_loss(predictions["trajectory"], targets["trajectory"])
        return {"loss": loss}

    def get_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
