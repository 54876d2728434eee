"""3D reasoning: a bird's-eye-view encoder with perception heads, so the planner's scene tokens carry geometry.

A CNN turns the LiDAR raster `(2, B, B)` into a `G × G` grid of BEV tokens; the tokens then cross-attend to
camera feature tokens (a learned lift from the perspective view into BEV, as BEVFormer does with deformable
attention, here dense because the grids are small) and to each other. Two auxiliary heads are supervised as in
TransFuser / DiffusionDrive: a BEV semantic map and agent boxes matched to the ground truth by the Hungarian
algorithm. Without them the BEV tokens would only learn what the imitation loss happens to need.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from agents.vla.config import VLAConfig

CAMERA_TOKEN_GRID = (8, 32)  # camera feature map pooled to this many tokens (rows, columns)


class BEVOutput(NamedTuple):
    tokens: torch.Tensor  # (B, G*G, d) BEV grid tokens, row-major
    agent_tokens: torch.Tensor  # (B, A, d) one token per agent query
    semantic_logits: torch.Tensor  # (B, classes, Hs, Ws)
    agent_states: torch.Tensor  # (B, A, 5) x [m], y [m], heading [rad], length [m], width [m]
    agent_logits: torch.Tensor  # (B, A) existence logits


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(min(8, cout), cout), nn.ReLU()
    )


def _downsampling_cnn(cin: int, cout: int, factor: int) -> nn.Sequential:
    """`log2(factor)` stride-2 blocks after one stride-1 block, widening from cout/2 to cout."""
    steps = int(round(math.log2(factor)))
    if 2**steps != factor:
        raise ValueError(f"downsampling factor must be a power of two, got {factor}")
    layers = [_conv_block(cin, cout // 2, 1)]
    width = cout // 2
    for _ in range(steps):
        layers.append(_conv_block(width, cout, 2))
        width = cout
    if steps == 0:
        layers.append(_conv_block(width, cout, 1))
    return nn.Sequential(*layers)


def _patchify_cnn(cin: int, cout: int, factor: int) -> nn.Sequential:
    """A stride-`factor/2` patchify stem (as ConvNeXt's) and one stride-2 block.

    The camera strip is the largest input; a full-resolution first convolution cost two thirds of a training step
    on CPU, while the planner only reads the camera through an 8 × 32 token grid.
    """
    if factor < 4 or factor % 2:
        raise ValueError(f"patchify factor must be an even number >= 4, got {factor}")
    patch = factor // 2
    stem = nn.Sequential(
        nn.Conv2d(cin, cout // 2, patch, stride=patch, bias=False), nn.GroupNorm(min(8, cout // 2), cout // 2), nn.ReLU()
    )
    return nn.Sequential(stem, _conv_block(cout // 2, cout, 2))


def semantic_sampling_grid(config: VLAConfig) -> torch.Tensor:
    """`(1, Hs, Ws, 2)` `grid_sample` coordinates of the semantic-map cell centres in the BEV feature map.

    Both follow `irlvla_env.observations` (driving direction up: row 0 = largest x, column 0 = largest y). The
    map spans x in `[x_min, x_min + Hs·res]` and y in `±Ws·res/2`; the BEV grid spans `±lidar_range`, so a cell
    at ego `(x, y)` samples the feature map at normalised `(u, v) = (-y, -x) / lidar_range`.
    """
    height, width, res = config.bev_semantic_height, config.bev_semantic_width, config.bev_semantic_resolution
    x_max = config.bev_semantic_x_min + height * res
    x = x_max - (torch.arange(height, dtype=torch.float32) + 0.5) * res
    y = width * res / 2.0 - (torch.arange(width, dtype=torch.float32) + 0.5) * res
    v, u = torch.meshgrid(-x / config.lidar_range, -y / config.lidar_range, indexing="ij")
    return torch.stack([u, v], dim=-1).unsqueeze(0)


class BEVReasoning(nn.Module):
    """LiDAR raster + camera → BEV tokens, agent tokens and the two auxiliary predictions."""

    def __init__(self, config: VLAConfig):
        super().__init__()
        d = config.d_model
        self.config = config
        self.grid = config.bev_grid
        self.lidar_cnn = _downsampling_cnn(2, d, config.bev_downsample)
        self.camera_cnn = _patchify_cnn(3, d, 8)
        self.bev_pos = nn.Parameter(torch.randn(self.grid * self.grid, d) * 0.02)
        self.camera_pos = nn.Parameter(torch.randn(CAMERA_TOKEN_GRID[0] * CAMERA_TOKEN_GRID[1], d) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerDecoderLayer(d, config.num_heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(config.bev_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.register_buffer("semantic_cells", semantic_sampling_grid(config), persistent=False)
        self.semantic_head = nn.Sequential(
            nn.Conv2d(d, d, 3, padding=1), nn.ReLU(), nn.Conv2d(d, config.bev_semantic_classes, 1)
        )
        self.agent_queries = nn.Parameter(torch.randn(config.max_agents, d) * 0.02)
        self.agent_decoder = nn.TransformerDecoderLayer(
            d, config.num_heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True
        )
        self.agent_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 6))

    def forward(self, lidar_bev: torch.Tensor, camera: torch.Tensor) -> BEVOutput:
        batch = lidar_bev.shape[0]
        bev = self.lidar_cnn(lidar_bev).flatten(2).transpose(1, 2) + self.bev_pos
        cam = F.adaptive_avg_pool2d(self.camera_cnn(camera), CAMERA_TOKEN_GRID).flatten(2).transpose(1, 2)
        cam = cam + self.camera_pos
        for block in self.blocks:
            bev = block(bev, cam)
        bev = self.norm(bev)

        # The head runs on the G × G grid and its logits are sampled at the map's cells: the cells only interpolate
        # that grid, and the 3 × 3 convolution at map size (32 × 64) had cost a fifth of a training step (0.44 ->
        # 0.35 s at batch 32, 2 threads). Three seeds, 20 epochs, navtest EPDMS: 84.0 against 84.2 before.
        grid_map = bev.transpose(1, 2).reshape(batch, -1, self.grid, self.grid)
        semantic = F.grid_sample(
            self.semantic_head(grid_map), self.semantic_cells.expand(batch, -1, -1, -1), align_corners=False
        )

        agents = self.agent_decoder(self.agent_queries.unsqueeze(0).expand(batch, -1, -1), bev)
        raw = self.agent_head(agents)
        states = torch.cat(
            [
                torch.tanh(raw[..., :2]) * self.config.lidar_range,
                torch.tanh(raw[..., 2:3]) * math.pi,
                F.softplus(raw[..., 3:5]) + 0.5,
            ],
            dim=-1,
        )
        return BEVOutput(bev, agents, semantic, states, raw[..., 5])

    def planner_tokens(self, output: BEVOutput) -> torch.Tensor:
        """The BEV grid average-pooled by `planner_bev_pool`, followed by the agent tokens: `(B, N, d)`."""
        pool = self.config.planner_bev_pool
        batch = output.tokens.shape[0]
        grid_map = output.tokens.transpose(1, 2).reshape(batch, -1, self.grid, self.grid)
        pooled = F.avg_pool2d(grid_map, pool).flatten(2).transpose(1, 2)
        return torch.cat([pooled, output.agent_tokens], dim=1)


def perception_losses(
    semantic_logits: torch.Tensor,
    agent_states: torch.Tensor,
    agent_logits: torch.Tensor,
    targets: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """TransFuser's auxiliary losses: cross-entropy of the BEV map, Hungarian-matched agent class and box.

    The predictions are those of `BEVOutput`; `targets` holds `bev_semantic_map` long `(B, Hs, Ws)`, `agent_states` `(B, A_gt, 5)` and `agent_labels`
    bool `(B, A_gt)` (real rows). Missing keys give no loss term, so a planner-only data set still trains.
    """
    losses: dict[str, torch.Tensor] = {}
    if "bev_semantic_map" in targets:
        semantic = targets["bev_semantic_map"].long()
        logits = semantic_logits
        if logits.shape[-2:] != semantic.shape[-2:]:
            raise ValueError(
                f"bev_semantic_map target has size {tuple(semantic.shape[-2:])}, but VLAConfig predicts "
                f"{tuple(logits.shape[-2:])} (bev_semantic_height/width)"
            )
        losses["bev_semantic"] = F.cross_entropy(logits, semantic)
    if "agent_states" in targets and "agent_labels" in targets:
        cls_loss, box_loss = _agent_losses(
            agent_states, agent_logits, targets["agent_states"].float(), targets["agent_labels"].bool()
        )
        losses["agent_class"], losses["agent_box"] = cls_loss, box_loss
    return losses


def _agent_losses(pred_states: torch.Tensor, pred_logits: torch.Tensor, gt_states: torch.Tensor, gt_valid: torch.Tensor):
    """Match each real box to one query (L1 + existence cost), then BCE on existence and L1 on matched boxes."""
    with torch.no_grad():
        cost = torch.cdist(pred_states, gt_states, p=1) - F.logsigmoid(pred_logits).unsqueeze(-1)
    labels = torch.zeros_like(pred_logits)
    matched_pred, matched_gt = [], []
    for b in range(pred_states.shape[0]):
        real = torch.nonzero(gt_valid[b]).squeeze(1)
        if len(real) == 0:
            continue
        rows, cols = linear_sum_assignment(cost[b][:, real].cpu().numpy())
        labels[b, rows] = 1.0
        matched_pred.append(pred_states[b, rows])
        matched_gt.append(gt_states[b, real[torch.as_tensor(cols, dtype=torch.long)]])
    cls_loss = F.binary_cross_entropy_with_logits(pred_logits, labels)
    if matched_pred:
        box_loss = F.l1_loss(torch.cat(matched_pred), torch.cat(matched_gt))
    else:
        box_loss = pred_states.sum() * 0.0
    return cls_loss, box_loss


def semantic_map_accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Pixel accuracy of the predicted BEV classes, a quick check that the map head learns."""
    return float((logits.argmax(1) == target).float().mean())

