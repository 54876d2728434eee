"""TransFuser at CPU size: camera + LiDAR BEV fused by a transformer, with detection and BEV auxiliary heads.

navsim's TransFuser (spec §2.4) uses two ResNet-34s and a 4096×1024 → 1024×256 camera. This one keeps the
architecture's parts and its loss — two convolutional backbones, a transformer over both token sets and the ego
status, a decoder with one trajectory query and agent queries, heads for the trajectory (heading = tanh·π), the
agent boxes (Hungarian-matched) and the BEV semantic map — at a size that trains on two CPU cores. The sizes are
arguments; `agents.training.config.REAL_AGENT_KWARGS["transfuser"]` holds a GPU-sized set.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F

from agents.abstract_agent import AbstractAgent, AbstractFeatureBuilder, AbstractTargetBuilder
from agents.features import (
    EgoStatusFeatureBuilder,
    ObservationFeatureBuilder,
    PerceptionTargetBuilder,
    TrajectoryTargetBuilder,
)
from irlvla_env.navsim.dataclasses import DEFAULT_SAMPLING, SensorConfig, TrajectorySampling
from irlvla_env.observations import ObservationConfig, required_sensors

LIDAR_BEV_CHANNELS = 2  # the observation layer's histogram below / above the ground split


class ConvBackbone(nn.Module):
    """A stride-2 stem, then stride-2 residual stages (GroupNorm, so tiny batches and eval agree); the output is a
    `(d_model, H / 2^len(channels), W / 2^len(channels))` map. The stem has no residual block because full
    resolution is where a CPU spends most of its time."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], d_model: int):
        super().__init__()
        layers: list[nn.Module] = [_down(in_channels, channels[0])]
        layers += [_ResidualStage(previous, width) for previous, width in zip(channels, channels[1:])]
        self.stages = nn.Sequential(*layers)
        self.project = nn.Conv2d(channels[-1], d_model, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.stages(x))


def _down(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
        nn.GroupNorm(_groups(out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


class _ResidualStage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.down = _down(in_channels, out_channels)
        self.block = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(out_channels), out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return F.relu(x + self.block(x))


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(inplace=True), nn.Linear(d_hidden, d_out))


class TransfuserAgent(AbstractAgent):
    """Camera + LiDAR planner with navsim's TransFuser loss `10·L1(traj) + 10·BCE(cls) + 1·L1(box) + 10·CE(BEV)`.

    :param observation: keyword arguments of `ObservationConfig` (camera size, LiDAR BEV size, history).
    :param channels: widths of the backbone stages (each halves the resolution).
    :param d_model: token width of the fusion transformer and decoder.
    :param image_tokens: `(rows, cols)` the camera map is pooled to before fusion.
    :param lidar_tokens: `(rows, cols)` the LiDAR map is pooled to before fusion (and where the BEV head starts).
    :param num_agent_queries: detection queries; targets are padded to this many vehicles.
    :param bev_size: `(H, W)` of the BEV semantic target; `bev_resolution` its metres per pixel. As in navsim, the
        map covers the front half of the LiDAR grid (32 m ahead, 64 m wide), which the BEV head decodes.
    :param box_range: metres that `tanh` scales box centres to (the LiDAR half-range).
    :param position_scale: metres per unit of the trajectory head's x, y outputs, so the head works at unit scale
        and short CPU runs reach 40 m plans (navsim's head outputs metres directly).
    """

    NUM_BEV_CLASSES = 7  # background + road, walkways, centerlines, static objects, vehicles, pedestrians

    def __init__(
        self,
        observation: dict[str, Any] | None = None,
        channels: tuple[int, ...] = (16, 32, 64, 96),
        d_model: int = 96,
        num_heads: int = 4,
        encoder_layers: int = 2,
        decoder_layers: int = 2,
        image_tokens: tuple[int, int] = (2, 8),
        lidar_tokens: tuple[int, int] = (4, 4),
        num_agent_queries: int = 10,
        bev_size: tuple[int, int] = (16, 32),
        bev_resolution: float = 2.0,
        box_range: float = 32.0,
        position_scale: float = 10.0,
        loss_weights: dict[str, float] | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        num_poses: int = 8,
    ):
        super().__init__(TrajectorySampling(num_poses=num_poses, interval_length=DEFAULT_SAMPLING.interval_length))
        self.observation_config = ObservationConfig(**(observation or {}))
        self._config = {
            "observation": dict(observation or {}),
            "channels": list(channels),
            "d_model": d_model,
            "num_heads": num_heads,
            "encoder_layers": encoder_layers,
            "decoder_layers": decoder_layers,
            "image_tokens": list(image_tokens),
            "lidar_tokens": list(lidar_tokens),
            "num_agent_queries": num_agent_queries,
            "bev_size": list(bev_size),
            "bev_resolution": bev_resolution,
            "box_range": box_range,
            "position_scale": position_scale,
            "loss_weights": dict(loss_weights or {"trajectory": 10.0, "agent_class": 10.0, "agent_box": 1.0, "bev": 10.0}),
            "lr": lr,
            "weight_decay": weight_decay,
            "num_poses": num_poses,
        }
        self.image_tokens, self.lidar_tokens = tuple(image_tokens), tuple(lidar_tokens)
        self.bev_size, self.box_range, self.position_scale = tuple(bev_size), box_range, position_scale

        self.image_backbone = ConvBackbone(3, tuple(channels), d_model)
        self.lidar_backbone = ConvBackbone(LIDAR_BEV_CHANNELS, tuple(channels), d_model)
        self.status_encoder = _mlp(8, d_model, d_model)
        num_tokens = image_tokens[0] * image_tokens[1] + lidar_tokens[0] * lidar_tokens[1] + 1
        self.token_position = nn.Parameter(0.02 * torch.randn(num_tokens, d_model))
        layer = nn.TransformerEncoderLayer(d_model, num_heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True)
        self.fusion = nn.TransformerEncoder(layer, encoder_layers, enable_nested_tensor=False)
        self.queries = nn.Parameter(0.02 * torch.randn(1 + num_agent_queries, d_model))
        decoder_layer = nn.TransformerDecoderLayer(d_model, num_heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(decoder_layer, decoder_layers)
        self.trajectory_head = _mlp(d_model, d_model, num_poses * 3)
        self.agent_box_head = _mlp(d_model, d_model, 5)
        self.agent_class_head = nn.Linear(d_model, 1)
        self.bev_head = nn.Sequential(
            nn.Conv2d(d_model, d_model, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(d_model, self.NUM_BEV_CLASSES, 1),
        )

    # -- navsim interface ----------------------------------------------------------------------------------------

    def name(self) -> str:
        return "transfuser"

    def initialize(self) -> None:
        pass

    def get_sensor_config(self) -> SensorConfig:
        return required_sensors(self.observation_config)

    def get_config(self) -> dict[str, Any]:
        return dict(self._config)

    def get_feature_builders(self) -> list[AbstractFeatureBuilder]:
        return [ObservationFeatureBuilder(self.observation_config), EgoStatusFeatureBuilder()]

    def get_target_builders(self) -> list[AbstractTargetBuilder]:
        return [
            TrajectoryTargetBuilder(self._trajectory_sampling),
            PerceptionTargetBuilder(self.bev_size, self._config["bev_resolution"], self._config["num_agent_queries"]),
        ]

    def get_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self._config["lr"], weight_decay=self._config["weight_decay"])

    # -- model ---------------------------------------------------------------------------------------------------

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = F.adaptive_avg_pool2d(self.image_backbone(features["camera"]), self.image_tokens)
        lidar = F.adaptive_avg_pool2d(self.lidar_backbone(features["lidar_bev"]), self.lidar_tokens)
        batch = image.shape[0]
        status = self.status_encoder(features["ego_status"])[:, None]
        tokens = torch.cat([image.flatten(2).transpose(1, 2), lidar.flatten(2).transpose(1, 2), status], dim=1)
        memory = self.fusion(tokens + self.token_position)

        decoded = self.decoder(self.queries.expand(batch, -1, -1), memory)
        trajectory = self.trajectory_head(decoded[:, 0]).reshape(batch, -1, 3)
        trajectory = torch.cat([trajectory[..., :2] * self.position_scale, torch.tanh(trajectory[..., 2:]) * math.pi], dim=-1)
        boxes = self.agent_box_head(decoded[:, 1:])
        agent_states = torch.cat(
            [torch.tanh(boxes[..., :2]) * self.box_range, torch.tanh(boxes[..., 2:3]) * math.pi, F.softplus(boxes[..., 3:])],
            dim=-1,
        )

        rows, cols = self.lidar_tokens
        start = self.image_tokens[0] * self.image_tokens[1]
        fused_lidar = memory[:, start : start + rows * cols].transpose(1, 2).reshape(batch, -1, rows, cols)
        front = (lidar + fused_lidar)[:, :, : max(1, rows // 2)]  # row 0 is the LiDAR grid's front edge
        bev_features = F.interpolate(front, size=self.bev_size, mode="bilinear", align_corners=False)
        return {
            "trajectory": trajectory,
            "agent_states": agent_states,
            "agent_logits": self.agent_class_head(decoded[:, 1:]).squeeze(-1),
            "bev_semantic_map": self.bev_head(bev_features),
        }

    def compute_loss(
        self,
        features: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        predictions: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        weights = self._config["loss_weights"]
        trajectory = F.l1_loss(predictions["trajectory"], targets["trajectory"])
        agent_class, agent_box = hungarian_agent_loss(
            predictions["agent_states"], predictions["agent_logits"], targets["agent_states"], targets["agent_labels"]
        )
        bev = F.cross_entropy(predictions["bev_semantic_map"], targets["bev_semantic_map"])
        loss = (
            weights["trajectory"] * trajectory
            + weights["agent_class"] * agent_class
            + weights["agent_box"] * agent_box
            + weights["bev"] * bev
        )
        return {"loss": loss, "trajectory_l1": trajectory, "agent_class": agent_class, "agent_box": agent_box, "bev": bev}


def hungarian_agent_loss(
    pred_states: torch.Tensor, pred_logits: torch.Tensor, target_states: torch.Tensor, target_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match queries to target slots per sample (box L1 + class BCE cost), then the matched BCE and box L1.

    Every query is matched to one slot, padded slots included, so a query matched to padding learns to say
    "no vehicle"; only real slots contribute to the box loss (normalised by their count).
    """
    labels = target_labels.float()
    with torch.no_grad():
        box_cost = torch.cdist(pred_states.float(), target_states.float(), p=1) * labels[:, None, :]  # (B, Q, N)
        logits = pred_logits.float()[..., None]
        class_cost = F.binary_cross_entropy_with_logits(
            logits.expand_as(box_cost), labels[:, None, :].expand_as(box_cost), reduction="none"
        )
        cost = (box_cost + class_cost).cpu().numpy()
    order = np.stack([linear_sum_assignment(matrix)[1] for matrix in cost])  # target slot of each query
    order = torch.as_tensor(order, device=pred_states.device)
    matched_states = torch.gather(target_states, 1, order[..., None].expand(-1, -1, target_states.shape[-1]))
    matched_labels = torch.gather(labels, 1, order)
    class_loss = F.binary_cross_entropy_with_logits(pred_logits, matched_labels)
    box_l1 = (pred_states - matched_states).abs().sum(-1) * matched_labels
    box_loss = box_l1.sum() / matched_labels.sum().clamp(min=1.0)
    return class_loss, box_loss
