"""The Reward World Model: sensor observations + a candidate trajectory -> EPDMS sub-scores and an IRL reward.

It sees only what the policy sees (front camera strip, LiDAR BEV, ego-status history, driving command) — never the
map or the ground-truth boxes the rule-based scorer uses — so it can stand in for the scorer inside RL.

Shape of the computation, chosen so one scene serves K candidates cheaply:

- `encode_scene(obs)` runs once per scene; `score(ctx, trajectories)` runs per candidate. What happens in between
  is `RWMConfig.candidate_head`:
  - `"attention"` (default): the camera and LiDAR CNNs give scene tokens; each of the 8 poses (i) reads the fine BEV
    features and the camera features where its footprint lands, (ii) cross-attends to the scene tokens; pooled with
    a whole-trajectory embedding into the trunk feature.
    With `RWMConfig.map_head`, the fine BEV features are also decoded into maps (drivable area, red-light zones, and
    the other road users' occupancy at each pose time), supervised by the metric caches in training only, and each
    pose reads them at its footprint in its own time slice.
  - `"cost_volume"` (`cost_volume.py`): the scene is painted into BEV maps (static, and one set per pose time for
    what moves); a candidate only reads them bilinearly at its footprint and look-ahead points (and the camera where
    its footprint is seen), then a per-pose MLP, max/mean pooling over poses and a whole-trajectory kinematics MLP
    give the trunk feature. About 2.5x fewer FLOPs per candidate, the same per scene.
- An ensemble of M small heads over the shared trunk predicts, per member: NC and DDC as 3-class distributions over
  {0, 0.5, 1}; DAC, TLC, TTC, LK, HC, EC as Bernoulli probabilities; EP in [0, 1]; and a scalar IRL reward.
  Member disagreement is the uncertainty.

EPDMS is composed from the heads with the official formula on expected values,
`E[NC]·P(DAC)·E[DDC]·P(TLC)·(5 E[EP] + 5 P(TTC) + 2 P(LK) + 2 P(HC) + 2 P(EC)) / 16`, dropping EC's value and weight
(denominator 14) when `ec_available` is false, as one-stage scoring does. Treating the factors as independent makes
this an approximation of E[EPDMS]; it is exact when the heads are confident.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from irlvla_env.rewards import (
    CHECKPOINT_TYPE_KEY,
    SUBSCORE_NAMES,
    RewardOutput,
    check_trajectories,
    group_rows_by_token,
)
from reward_models.cost_volume import (
    FOOTPRINT,
    NUM_PROBES,
    CostVolumeEncoder,
    CostVolumeScorer,
    footprint_points,
    lidar_input,
    probe_points,
    read_maps,
)
from reward_models.projection import StripProjector

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1  # configs without the newer fields (candidate_head, ...) load as the attention model they are
OBSERVATION_KEYS = ("camera", "lidar_bev", "ego_status", "command", "lidar_history")

# Head layout of one ensemble member's output vector.
THREE_CLASS = ("NC", "DDC")
BINARY = ("DAC", "TLC", "TTC", "LK", "HC", "EC")
CLASS_VALUES = (0.0, 0.5, 1.0)
_SLICES = {"NC": slice(0, 3), "DDC": slice(3, 6), "binary": slice(6, 12), "EP": slice(12, 13), "IRL": slice(13, 14)}
HEAD_OUTPUTS = 14
CANDIDATE_HEADS = ("attention", "cost_volume")


@dataclass
class RWMConfig:
    """Every architectural choice of a Reward World Model; saved as `config.json` next to the weights.

    :param camera_shape: `(H, W)` of the stitched camera strip.
    :param camera_downsample: average-pool factor applied to the camera before its CNN (speed; road layout and
        vehicles survive a 2x reduction of a 64x256 strip).
    :param lidar_channels: channels of the LiDAR BEV histogram; `lidar_bins` its side.
    :param lidar_history: past sweeps in the observation's `lidar_history` (0: none); the LiDAR CNN reads them as
        extra channels, which is how it sees the other agents' speed (collisions and time to collision).
    :param bev_range_m: half-width of the square the BEV covers around the ego [m] (x forward, y left).
    :param num_history: ego-status frames; `num_poses` trajectory poses.
    :param use_camera, use_lidar, use_ego_status, use_command: which inputs the model reads (ablations).
    :param width: token width; `trunk_width` the per-trajectory trunk; `head_width` each member's hidden layer.
    :param attention_heads: heads of the pose-to-scene cross-attention.
    :param bev_context_dilations: residual dilated 3x3 convolutions over the fine BEV features before a candidate
        samples them (attention head). Without them a footprint reads features that saw ~3 m around it, so it cannot
        tell that a car 10 m behind the spot will be there in 2 s; (1, 2, 4, 8) widens that to ~60 m.
    :param map_head: (attention head, needs LiDAR) decode the fine BEV features into 2 static maps (drivable area,
        red-light zones) and one occupancy map per pose time, on the fine grid (`lidar_bins / 2`, 2 m cells),
        supervised by rasterised metric caches (`scene_targets.py`, `RWMLossConfig.map_weight`); each pose reads
        them at its probe points. The candidate labels alone say only whether a plan collided, never where the
        others will be; these targets say it, at the cell size a footprint can resolve. Measured once with the
        pipeline's labels: navtest Pearson 0.807 / NC AUROC 0.884 against 0.803 / 0.876 without it (held-out
        navtrain 0.877 against 0.859) at 1.5x the time of a training step (66 vs 45 ms, 16 scenes x 32
        candidates, 2 threads); opt-in.
    :param ensemble_size: M heads over the shared trunk.
    :param position_scale: metres that map to 1.0 in the trajectory encoding.
    :param camera_calibration: the rig (`projection.strip_calibration`); when given, the camera is also read where
        the ego footprint lands in the image, not only through attention.
    :param ec_available: compose EPDMS with EC (two-stage labels) or without it (one-stage: denominator 14).
    :param reward_source: what `RWMRewardModel.reward` returns: `"epdms"` (composed) or `"irl"` (the IRL head).
    :param candidate_head: how a candidate reads the scene: `"attention"` (default: every pose cross-attends to the
        scene tokens and samples the BEV/camera features) or `"cost_volume"` (bilinear reads of BEV maps painted once
        per scene, `cost_volume.py`: 1.0-1.4x the whole-batch throughput at K = 72 on a loaded CPU core, ~0.01 lower
        EPDMS correlation on navtest; it pays where many candidates share a scene, not in RL where each has one).
    :param map_width: channels of the cost-volume BEV features; `static_maps` the time-independent maps and
        `dynamic_maps` the maps per pose time (cost-volume head only).
    """

    camera_shape: tuple[int, int] = (64, 256)
    camera_downsample: int = 2
    lidar_channels: int = 2
    lidar_bins: int = 64
    lidar_history: int = 0
    bev_range_m: float = 32.0
    num_history: int = 4
    num_poses: int = 8
    use_camera: bool = True
    use_lidar: bool = True
    use_ego_status: bool = True
    use_command: bool = True
    width: int = 64
    trunk_width: int = 128
    head_width: int = 64
    attention_heads: int = 4
    bev_context_dilations: tuple[int, ...] = ()
    map_head: bool = False
    ensemble_size: int = 4
    position_scale: float = 10.0
    camera_calibration: list | None = None
    ec_available: bool = False
    reward_source: str = "epdms"
    candidate_head: str = "attention"
    map_width: int = 32
    static_maps: int = 16
    dynamic_maps: int = 4

    def __post_init__(self) -> None:
        self.camera_shape = tuple(int(v) for v in self.camera_shape)
        self.bev_context_dilations = tuple(int(v) for v in self.bev_context_dilations)
        if any(d < 1 for d in self.bev_context_dilations):
            raise ValueError(f"RWMConfig.bev_context_dilations must be >= 1, got {self.bev_context_dilations}")
        if self.candidate_head not in CANDIDATE_HEADS:
            raise ValueError(f"RWMConfig.candidate_head must be one of {CANDIDATE_HEADS}, got {self.candidate_head!r}")
        if self.map_head and (self.candidate_head != "attention" or not self.use_lidar):
            raise ValueError("RWMConfig.map_head needs candidate_head='attention' and use_lidar (it decodes the BEV)")
        if self.reward_source not in ("epdms", "irl"):
            raise ValueError(f"RWMConfig.reward_source must be 'epdms' or 'irl', got {self.reward_source!r}")
        if not any((self.use_camera, self.use_lidar, self.use_ego_status, self.use_command)):
            raise ValueError("RWMConfig must read at least one input (use_camera/use_lidar/use_ego_status/use_command)")
        if self.width % self.attention_heads:
            raise ValueError(f"RWMConfig.width {self.width} must be divisible by attention_heads {self.attention_heads}")
        if self.ensemble_size < 1:
            raise ValueError(f"RWMConfig.ensemble_size must be >= 1, got {self.ensemble_size}")
        camera_stride = 8 * self.camera_downsample
        if any(s % camera_stride for s in self.camera_shape) or self.lidar_bins % 8:
            raise ValueError(
                f"RWMConfig.camera_shape {self.camera_shape} must be multiples of {camera_stride} (8 x camera_downsample) "
                f"and lidar_bins {self.lidar_bins} of 8"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "RWMConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown RWMConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


@dataclass
class SceneContext:
    """Per-scene features computed once by `encode_scene` and reused for every candidate.

    :param pooled: `(S, width)` summary vector (both candidate heads).
    :param keys, values: `(S, heads, N, width/heads)` attention keys and values of the scene tokens (attention head).
    :param bev: `(S, C, B/2, B/2)` fine BEV feature map sampled at the ego footprint, or None (attention head).
    :param camera_map: `(S, C, h, w)` camera features sampled where the footprint is seen, or None.
    :param static_maps: `(S, C_s, G, G)` and `dynamic_maps` `(S, T, C_d, g, g)` BEV map logits (cost-volume head:
        g = G/2; attention head with `map_head`: C_s = 2, C_d = 1, g = G).
    """

    pooled: torch.Tensor
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    bev: torch.Tensor | None = None
    camera_map: torch.Tensor | None = None
    static_maps: torch.Tensor | None = None
    dynamic_maps: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def select(self, index: torch.Tensor) -> "SceneContext":
        """The contexts of scenes `index` (e.g. for a subset of a batch)."""
        return SceneContext(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                               for f in fields(self)})


@dataclass
class RWMPrediction:
    """Raw head outputs `logits (..., M, 14)` and the quantities derived from them."""

    logits: torch.Tensor

    def class_logits(self, name: str) -> torch.Tensor:
        """`(..., M, 3)` logits over {0, 0.5, 1} of NC or DDC."""
        return self.logits[..., _SLICES[name]]

    def class_probs(self, name: str) -> torch.Tensor:
        """`(..., M, 3)` distribution over {0, 0.5, 1} of NC or DDC."""
        return self.class_logits(name).softmax(-1)

    @property
    def binary_logits(self) -> torch.Tensor:
        """`(..., M, 6)` logits of DAC, TLC, TTC, LK, HC, EC."""
        return self.logits[..., _SLICES["binary"]]

    @property
    def ep_logit(self) -> torch.Tensor:
        return self.logits[..., _SLICES["EP"]].squeeze(-1)

    @property
    def irl_reward(self) -> torch.Tensor:
        """`(..., M)` the scalar reward of the maximum-entropy IRL objective."""
        return self.logits[..., _SLICES["IRL"]].squeeze(-1)

    def expected_subscores(self) -> dict[str, torch.Tensor]:
        """Short name -> `(..., M)` expected value of each sub-score under each member."""
        values = torch.tensor(CLASS_VALUES, dtype=self.logits.dtype, device=self.logits.device)
        out = {name: self.class_probs(name) @ values for name in THREE_CLASS}
        probs = self.binary_logits.sigmoid()
        out.update({name: probs[..., i] for i, name in enumerate(BINARY)})
        out["EP"] = self.ep_logit.sigmoid()
        return {name: out[name] for name in SUBSCORE_NAMES}

    def epdms(self, ec_available: bool, subscores: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """`(..., M)` EPDMS composed per member from the expected sub-scores (module docstring); pass `subscores`
        when `expected_subscores()` is already at hand."""
        s = subscores if subscores is not None else self.expected_subscores()
        product = s["NC"] * s["DAC"] * s["DDC"] * s["TLC"]
        weighted = 5 * s["EP"] + 5 * s["TTC"] + 2 * s["LK"] + 2 * s["HC"]
        if ec_available:
            return product * (weighted + 2 * s["EC"]) / 16.0
        return product * weighted / 14.0


BEV_FEATURES = 16
CAMERA_FEATURES = 32
# The map decoder's dilations on the fine grid (2 m cells): +-31 cells, how far a car at 15 m/s drives in 4 s.
MAP_DILATIONS = (1, 2, 4, 8, 16)
STATIC_TARGETS = 2  # drivable area, red-light zones (scene_targets.STATIC_TARGETS)


def _conv_stack(channels: Sequence[int]) -> nn.Sequential:
    """Stride-2 3x3 convolutions with GroupNorm + GELU: each halves the resolution."""
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.GELU()]
    return nn.Sequential(*layers)


class _DilatedResidual(nn.Module):
    """x + GELU(GroupNorm(dilated 3x3 conv(x))): context without losing resolution."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.norm = nn.GroupNorm(min(8, channels), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.norm(self.conv(x)))


class RewardWorldModel(nn.Module):
    """Scene encoder + candidate encoder (`RWMConfig.candidate_head`) + ensemble of sub-score/IRL heads."""

    def __init__(self, config: RWMConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or RWMConfig()
        if config.candidate_head == "cost_volume":
            self.scene_encoder = CostVolumeEncoder(config)
            self.candidate_encoder = CostVolumeScorer(config)
        else:
            self._build_attention(config)
        m, t, h = config.ensemble_size, config.trunk_width, config.head_width
        self.head_w1 = nn.Parameter(torch.randn(m, t, h) / math.sqrt(t))
        self.head_b1 = nn.Parameter(torch.zeros(m, h))
        self.head_w2 = nn.Parameter(torch.randn(m, h, HEAD_OUTPUTS) / math.sqrt(h))
        self.head_b2 = nn.Parameter(torch.zeros(m, HEAD_OUTPUTS))

    def encode_scene(self, observations: dict[str, torch.Tensor]) -> SceneContext:
        """Scene features of a batch of S scenes (`camera (S, H, W, 3)` uint8, `lidar_bev (S, C, B, B)`,
        `ego_status (S, T, 7)`, `command (S, 4)`), computed once and shared by all candidates of each scene."""
        if self.config.candidate_head == "cost_volume":
            static, dynamic, pooled, camera = self.scene_encoder(observations)
            return SceneContext(pooled, camera_map=camera, static_maps=static, dynamic_maps=dynamic)
        return self._encode_attention(observations)

    def score(self, ctx: SceneContext, trajectories: torch.Tensor) -> RWMPrediction:
        """Head outputs for `trajectories (S, K, P, 3)` (K candidates of each of the S scenes in `ctx`)."""
        if trajectories.shape[0] != len(ctx):
            raise ValueError(f"score got trajectories for {trajectories.shape[0]} scenes but a context of {len(ctx)}")
        trajectories = trajectories.float()
        if self.config.candidate_head == "cost_volume":
            trunk = self.candidate_encoder(ctx.static_maps, ctx.dynamic_maps, ctx.pooled, ctx.camera_map, trajectories)
        else:
            trunk = self._trunk_attention(ctx, trajectories)
        # the attention head keeps the GELU its checkpoints were trained with; the cost volume uses ReLU (cheaper on CPU)
        activation = F.gelu if self.config.candidate_head == "attention" else F.relu
        hidden = activation(torch.einsum("skt,mth->skmh", trunk, self.head_w1) + self.head_b1)
        return RWMPrediction(torch.einsum("skmh,mho->skmo", hidden, self.head_w2) + self.head_b2)

    def forward(self, observations: dict[str, torch.Tensor], trajectories: torch.Tensor) -> RWMPrediction:
        return self.score(self.encode_scene(observations), trajectories)

    # ------------------------------------------------------------------------------ the attention candidate head

    def _build_attention(self, config: RWMConfig) -> None:
        w = config.width
        num_tokens = 0
        if config.use_camera:
            stride = 8 * config.camera_downsample
            self.camera_pool = nn.AvgPool2d(config.camera_downsample) if config.camera_downsample > 1 else nn.Identity()
            self.camera_early = _conv_stack((3, 16, CAMERA_FEATURES))  # /4 after the pooling: read at the footprint
            self.camera_late = _conv_stack((CAMERA_FEATURES, w))  # /8: scene tokens
            h, wd = config.camera_shape
            num_tokens += (h // stride) * (wd // stride)
            self.camera_position = nn.Parameter(torch.zeros(1, (h // stride) * (wd // stride), w))
        if config.use_lidar:
            self.lidar_fine = _conv_stack((config.lidar_channels + config.lidar_history, BEV_FEATURES))  # /2: sampled at the footprint
            self.bev_context = nn.Sequential(*(_DilatedResidual(BEV_FEATURES, d) for d in config.bev_context_dilations))
            self.lidar_coarse = _conv_stack((BEV_FEATURES, 32, w))  # /8: scene tokens
            side = config.lidar_bins // 8
            self.lidar_pool = nn.AdaptiveAvgPool2d(max(1, side // 2))
            num_tokens += max(1, side // 2) ** 2
            self.lidar_position = nn.Parameter(torch.zeros(1, max(1, side // 2) ** 2, w))
        if config.use_ego_status:
            self.ego_encoder = nn.Sequential(nn.Linear(config.num_history * 7, w), nn.GELU(), nn.Linear(w, w))
            num_tokens += 1
        if config.use_command:
            self.command_encoder = nn.Linear(4, w)
            num_tokens += 1
        self.num_scene_tokens = num_tokens
        self.scene_norm = nn.LayerNorm(w)
        self.key_value = nn.Linear(w, 2 * w)
        self.scene_summary = nn.Sequential(nn.Linear(w, w), nn.GELU())

        pose_features = 8  # x, y, cos h, sin h, dx, dy, speed, time
        self.pose_encoder = nn.Sequential(nn.Linear(pose_features, w), nn.GELU(), nn.Linear(w, w))
        self.pose_position = nn.Parameter(torch.zeros(1, 1, config.num_poses, w))
        self.query = nn.Linear(w, w)
        self.attention_out = nn.Linear(w, w)
        self.trajectory_encoder = nn.Sequential(
            nn.Linear(config.num_poses * pose_features, config.trunk_width), nn.GELU(), nn.Linear(config.trunk_width, w)
        )
        self.footprint_encoder = nn.Linear(len(FOOTPRINT) * BEV_FEATURES, w) if config.use_lidar else None
        if config.map_head:
            self.map_decoder = nn.Sequential(*(_DilatedResidual(BEV_FEATURES, d) for d in MAP_DILATIONS),
                                             nn.Conv2d(BEV_FEATURES, STATIC_TARGETS + config.num_poses, 1))
            self.map_encoder = nn.Linear(NUM_PROBES * (STATIC_TARGETS + 1), w)
        self.projector = None
        if config.use_camera and config.camera_calibration:
            self.projector = StripProjector(config.camera_calibration, config.camera_shape)
            self.ground_encoder = nn.Linear(len(FOOTPRINT) * (CAMERA_FEATURES + 1), w)
        pose_in = 2 * w + (w if config.use_lidar else 0) + (w if self.projector is not None else 0)
        pose_in += w if config.map_head else 0
        self.pose_mixer = nn.Sequential(nn.Linear(pose_in, w), nn.GELU())
        trunk_in = 2 * w + w + w  # pooled poses (mean, max), trajectory embedding, scene summary
        self.trunk = nn.Sequential(
            nn.Linear(trunk_in, config.trunk_width), nn.GELU(), nn.Linear(config.trunk_width, config.trunk_width), nn.GELU()
        )

    def _encode_attention(self, observations: dict[str, torch.Tensor]) -> SceneContext:
        cfg = self.config
        tokens: list[torch.Tensor] = []
        bev = camera_map = static = dynamic = None
        if cfg.use_camera:
            image = observations["camera"].permute(0, 3, 1, 2).float() / 255.0 - 0.5
            early = self.camera_early(self.camera_pool(image))
            if self.projector is not None:
                camera_map = early
            feat = self.camera_late(early)  # (S, w, H/stride, W/stride)
            tokens.append(feat.flatten(2).transpose(1, 2) + self.camera_position)
        if cfg.use_lidar:
            bev = self.bev_context(self.lidar_fine(lidar_input(observations, cfg)))  # (S, C, B/2, B/2)
            coarse = self.lidar_coarse(bev)  # (S, w, B/8, B/8)
            if cfg.map_head:
                maps = self.map_decoder(bev)  # (S, 2 + T, B/2, B/2)
                static, dynamic = maps[:, :STATIC_TARGETS], maps[:, STATIC_TARGETS:, None]
            tokens.append(self.lidar_pool(coarse).flatten(2).transpose(1, 2) + self.lidar_position)
        if cfg.use_ego_status:
            ego = torch.asinh(observations["ego_status"].float().flatten(1))
            tokens.append(self.ego_encoder(ego)[:, None])
        if cfg.use_command:
            tokens.append(self.command_encoder(observations["command"].float())[:, None])
        scene = self.scene_norm(torch.cat(tokens, dim=1))  # (S, N, w)
        keys, values = self.key_value(scene).chunk(2, dim=-1)
        heads = cfg.attention_heads
        split = lambda x: x.unflatten(-1, (heads, -1)).transpose(1, 2)  # (S, heads, N, w/heads)
        return SceneContext(self.scene_summary(scene.mean(1)), split(keys), split(values), bev, camera_map, static, dynamic)

    def _pose_features(self, trajectories: torch.Tensor) -> torch.Tensor:
        """`(S, K, P, 3)` local poses -> `(S, K, P, 8)` scale-free features."""
        scale = self.config.position_scale
        xy = trajectories[..., :2]
        heading = trajectories[..., 2]
        step = torch.diff(xy, dim=-2, prepend=torch.zeros_like(xy[..., :1, :]))
        speed = step.norm(dim=-1, keepdim=True) / 0.5
        time = torch.linspace(0.125, 1.0, trajectories.shape[-2], device=xy.device).expand_as(heading)[..., None]
        return torch.cat(
            [xy / scale, heading.cos()[..., None], heading.sin()[..., None], step / 2.0, speed / 10.0, time], dim=-1
        )

    def _trunk_attention(self, ctx: SceneContext, trajectories: torch.Tensor) -> torch.Tensor:
        """Trunk features `(S, K, T)`: poses cross-attend to the scene tokens and sample the BEV/camera features."""
        cfg = self.config
        s, k, p, _ = trajectories.shape
        features = self._pose_features(trajectories)
        poses = self.pose_encoder(features) + self.pose_position  # (S, K, P, w)
        query = self.query(poses).reshape(s, k * p, cfg.attention_heads, -1).transpose(1, 2)
        attended = F.scaled_dot_product_attention(query, ctx.keys, ctx.values)  # (S, heads, K*P, w/heads)
        attended = self.attention_out(attended.transpose(1, 2).reshape(s, k, p, cfg.width))
        parts = [poses, attended]
        # the footprint points are the probes' first F points: one computation serves every read below
        probes = probe_points(trajectories) if ctx.static_maps is not None else None  # (S, K, P, F + 2, 2)
        points = probes[..., : len(FOOTPRINT), :] if probes is not None else footprint_points(trajectories)
        if ctx.bev is not None:
            # BEV layout (irlvla_env.observations.lidar_bev): row 0 is x = +range (ahead), column 0 is y = +range
            # (left). grid_sample's first coordinate runs over columns, the second over rows, both from -1 to 1.
            grid = (-points[..., [1, 0]] / cfg.bev_range_m).reshape(s, -1, 1, 2)
            sampled = F.grid_sample(ctx.bev, grid, align_corners=False, padding_mode="zeros")  # (S, C, K*P*F, 1)
            sampled = sampled.squeeze(-1).transpose(1, 2).reshape(s, k, p, -1)
            parts.append(self.footprint_encoder(sampled))
        if ctx.static_maps is not None:  # probabilities, so a read between cells is a blend of occupancies
            read = read_maps(ctx.static_maps.sigmoid(), ctx.dynamic_maps.sigmoid(), probes,
                             cfg.bev_range_m)  # (S, K, P, probes, 3)
            parts.append(self.map_encoder(read.flatten(-2)))
        if ctx.camera_map is not None and self.projector is not None:
            grid, visible = self.projector(points)  # (S, K, P, F, 2), (S, K, P, F)
            seen = F.grid_sample(ctx.camera_map, grid.reshape(s, -1, 1, 2), align_corners=False, padding_mode="zeros")
            seen = seen.squeeze(-1).transpose(1, 2).reshape(s, k, p, len(FOOTPRINT), -1)
            parts.append(self.ground_encoder(torch.cat([seen, visible[..., None].float()], -1).flatten(-2)))
        mixed = self.pose_mixer(torch.cat(parts, dim=-1))
        whole = self.trajectory_encoder(features.flatten(-2))
        scene = ctx.pooled[:, None].expand(s, k, cfg.width)
        return self.trunk(torch.cat([mixed.mean(-2), mixed.amax(-2), whole, scene], dim=-1))  # (S, K, T)

    # ------------------------------------------------------------------------------------------ checkpoints

    def save_pretrained(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write `config.json` + `model.safetensors` into `folder`, each atomically (tmp file, then os.replace)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".safetensors.tmp")
        os.close(fd)
        save_file(state, tmp, metadata={"format": "pt"})
        os.replace(tmp, folder / WEIGHTS_NAME)
        config = {CHECKPOINT_TYPE_KEY: "rwm", "format_version": FORMAT_VERSION, "model": asdict(self.config)}
        if extra:
            config.update(extra)
        write_json_atomic(folder / CONFIG_NAME, config)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str = "cpu") -> "RewardWorldModel":
        """Load a folder written by `save_pretrained`; shape, key and NaN problems raise errors naming the file."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"RWM checkpoint {folder} misses {path.name}")
        try:
            raw = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path} is not valid JSON: {err}") from err
        if raw.get(CHECKPOINT_TYPE_KEY) != "rwm" or not isinstance(raw.get("model"), dict):
            raise ValueError(f"{config_path} is not an RWM config ({CHECKPOINT_TYPE_KEY}='rwm' and a 'model' object)")
        if raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{config_path}: format_version {raw.get('format_version')} != {FORMAT_VERSION}")
        model = cls(RWMConfig.from_dict(raw["model"], source=str(config_path)))
        state = load_file(str(weights_path), device=map_location)
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        wrong = [f"{k}: file {tuple(state[k].shape)} vs config {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
        if missing or unexpected or wrong:
            raise ValueError(
                f"{weights_path} does not match {config_path}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                f"wrong shapes {wrong[:5]}"
            )
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"{weights_path} holds NaN/inf in {bad[:5]}")
        model.load_state_dict(state)
        return model.eval()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def observations_to_tensors(
    observations: dict[str, np.ndarray], config: RWMConfig, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Check a batch of observations against `config` and turn it into tensors (errors name key and shape)."""
    h, w = config.camera_shape
    expected = {
        "camera": (h, w, 3),
        "lidar_bev": (config.lidar_channels, config.lidar_bins, config.lidar_bins),
        "ego_status": (config.num_history, 7),
        "command": (4,),
        "lidar_history": (config.lidar_history, config.lidar_bins, config.lidar_bins),
    }
    wanted = {
        "camera": config.use_camera, "lidar_bev": config.use_lidar,
        "ego_status": config.use_ego_status, "command": config.use_command,
        "lidar_history": config.use_lidar and config.lidar_history > 0,
    }
    out: dict[str, torch.Tensor] = {}
    for key, shape in expected.items():
        if not wanted[key]:
            continue
        if key not in observations:
            hint = (f" (this model reads {config.lidar_history} past LiDAR sweeps: build observations with "
                    f"ObservationConfig(lidar_history={config.lidar_history}))") if key == "lidar_history" else ""
            raise KeyError(f"observations miss {key!r} (have {sorted(observations)}){hint}")
        array = np.asarray(observations[key])
        if array.shape[1:] != shape:
            raise ValueError(f"observations[{key!r}] has shape {array.shape}, expected (B, {', '.join(map(str, shape))})")
        if key != "camera" and not np.all(np.isfinite(array)):
            raise ValueError(f"observations[{key!r}] contains NaN or inf")
        out[key] = torch.as_tensor(array, device=device)
    return out


def observation_shapes(observations: dict[str, np.ndarray]) -> dict[str, Any]:
    """The `RWMConfig` fields fixed by a batch of observations (camera size, BEV size, history length)."""
    shapes: dict[str, Any] = {}
    if "camera" in observations:
        shapes["camera_shape"] = tuple(int(v) for v in observations["camera"].shape[1:3])
    if "lidar_bev" in observations:
        shapes["lidar_channels"], shapes["lidar_bins"] = (int(v) for v in observations["lidar_bev"].shape[1:3])
    shapes["lidar_history"] = int(observations["lidar_history"].shape[1]) if "lidar_history" in observations else 0
    if "ego_status" in observations:
        shapes["num_history"] = int(observations["ego_status"].shape[1])
    return shapes


class RWMRewardModel:
    """A trained `RewardWorldModel` behind the `RewardModel` protocol (numpy batch in, `RewardOutput` out).

    Rows that share a token share their scene encoding: the batch is regrouped into `(S, K_max)` with padding, so
    the scene side runs once per distinct scene.
    """

    def __init__(self, model: RewardWorldModel, name: str = "rwm", device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.name = name
        self.device = device

    @classmethod
    def from_pretrained(cls, folder: str | Path, name: str = "rwm", device: str = "cpu") -> "RWMRewardModel":
        return cls(RewardWorldModel.from_pretrained(folder), name=name, device=device)

    @property
    def observation_needs(self) -> dict[str, int]:
        """`ObservationConfig` fields this model reads beyond the defaults (the envs extend their config by them)."""
        return {"lidar_history": self.model.config.lidar_history} if self.model.config.lidar_history else {}

    @property
    def config(self) -> RWMConfig:
        return self.model.config

    @torch.inference_mode()
    def predict_tensors(
        self, observations: dict[str, np.ndarray], trajectories: np.ndarray, tokens: Sequence[str]
    ) -> RWMPrediction:
        """Head outputs `(B, M, 14)` in the order of the input rows."""
        trajectories = check_trajectories(trajectories, tokens)
        groups = group_rows_by_token(tokens)
        first_rows = np.array([rows[0] for rows in groups.values()])
        obs = observations_to_tensors({k: np.asarray(v)[first_rows] for k, v in observations.items()
                                       if k in OBSERVATION_KEYS}, self.config, self.device)
        ctx = self.model.encode_scene(obs)
        k_max = max(len(rows) for rows in groups.values())
        padded = np.zeros((len(groups), k_max, *trajectories.shape[1:]), dtype=np.float32)
        scene_of, slot_of = np.empty(len(trajectories), np.int64), np.empty(len(trajectories), np.int64)
        for s, rows in enumerate(groups.values()):
            padded[s, : len(rows)] = trajectories[rows]
            scene_of[rows], slot_of[rows] = s, np.arange(len(rows))
        logits = self.model.score(ctx, torch.as_tensor(padded, device=self.device)).logits
        return RWMPrediction(logits[torch.as_tensor(scene_of), torch.as_tensor(slot_of)].float())

    def predict(
        self, observations: dict[str, np.ndarray], trajectories: np.ndarray, tokens: Sequence[str]
    ) -> RewardOutput:
        prediction = self.predict_tensors(observations, trajectories, tokens)
        expected = prediction.expected_subscores()
        subscores = {k: v.mean(-1).cpu().numpy().astype(np.float64) for k, v in expected.items()}
        if not self.config.ec_available:  # never trained on EC (one-stage labels): say so, as the scorer does
            subscores["EC"] = np.full(len(trajectories), np.nan)
        members = prediction.epdms(self.config.ec_available, expected)  # (B, M)
        epdms = members.mean(-1).cpu().numpy().astype(np.float64)
        if self.config.reward_source == "irl":
            reward = prediction.irl_reward.mean(-1).cpu().numpy().astype(np.float64)
        else:
            reward = epdms.copy()
        uncertainty = members.std(-1, correction=0).cpu().numpy().astype(np.float64)
        if not np.all(np.isfinite(epdms)):
            raise FloatingPointError(f"{self.name}: the model produced NaN/inf rewards")
        return RewardOutput(subscores=subscores, epdms=epdms, reward=reward, uncertainty=uncertainty)


__all__ = [
    "RWMConfig", "RewardWorldModel", "RWMPrediction", "SceneContext", "RWMRewardModel", "observations_to_tensors",
]
