"""The cost-volume design of the Reward World Model: the scene is painted once into BEV maps, a candidate only reads them.

Why: the rule-based sub-scores are almost all *local* tests of the ego footprint against the world at one time —
NC and TTC against other road users at that time step, DAC against the drivable area, DDC/LK against lanes and their
direction, TLC against red-light stop zones — plus kinematic tests (HC, EP). So the per-scene encoder predicts

- `static (S, C_s, G, G)`: time-independent maps (drivable area, lanes and direction, red-light zones, ... — whatever
  the loss finds useful; nothing names the channels), and
- `dynamic (S, T, C_d, G/2, G/2)`: maps per pose time (0.5 s … 4 s) for what moves (other road users' occupancy:
  their future motion is not in the sensors, so the encoder infers it from LiDAR/camera and the time index),

on grids aligned with the LiDAR BEV (`G = lidar_bins / 2`). Scoring a candidate is then bilinear sampling at seven
probe points of each pose — the ego footprint's centre and corners, and two look-ahead points for TTC — (in the
pose's own time slice for `dynamic`), plus the camera features where the footprint is seen in the strip (lane
markings are finer than a BEV cell); one per-pose layer over those samples and the pose's kinematics, max/mean
pooling over poses, and the shared trunk and ensemble heads: about 0.4 MFLOP per candidate instead of ~1 MFLOP for
cross-attending every pose to the scene tokens.

The camera reaches the maps by inverse perspective mapping: each BEV cell's ground point is projected into the strip
once (the rig is fixed, `projection.StripProjector`), and the camera features are sampled there, with a visibility
channel (cells behind the ego are never seen). Ego status and command modulate the mid-level BEV features (FiLM), so
the maps can depend on the ego's speed and intent (e.g. which red lights matter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from reward_models.projection import StripProjector

if TYPE_CHECKING:
    from reward_models.model import RWMConfig

POSE_DT = 0.5  # [s] between trajectory poses
CAMERA_FEATURES = 16
LIDAR_FEATURES = 16
KINEMATIC_FEATURES = 11


def lidar_input(observations: dict[str, torch.Tensor], config: "RWMConfig") -> torch.Tensor:
    """`(S, lidar_channels + lidar_history, B, B)`: the current BEV histogram and the past sweeps, log-scaled."""
    parts = [observations["lidar_bev"]] + ([observations["lidar_history"]] if config.lidar_history else [])
    return torch.log1p(torch.cat([p.float() for p in parts], dim=1).clamp_min(0))


def _conv(c_in: int, c_out: int, stride: int = 2, kernel: int = 3) -> nn.Sequential:
    """Conv + ReLU (stride 2 halves the resolution). No normalisation and no GELU: on a CPU both cost more than the
    convolution itself at these sizes, and a network this shallow trains without them."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2), nn.ReLU())


# Where the maps are read for each pose: the ego box centre and its four corners, in the rear-axle frame
# (nuPlan Pacifica: centre 1.461 m ahead of the rear axle, 5.176 m x 2.297 m), so collisions and curbs are local.
_HALF_LENGTH, _HALF_WIDTH, _CENTRE = 5.176 / 2, 2.297 / 2, 1.461
FOOTPRINT = ((_CENTRE, 0.0), (_CENTRE + _HALF_LENGTH, _HALF_WIDTH), (_CENTRE + _HALF_LENGTH, -_HALF_WIDTH),
             (_CENTRE - _HALF_LENGTH, _HALF_WIDTH), (_CENTRE - _HALF_LENGTH, -_HALF_WIDTH))  # fmt: skip


def footprint_points(trajectories: torch.Tensor) -> torch.Tensor:
    """`(..., P, 3)` rear-axle poses -> `(..., P, 5, 2)` local positions of the footprint points."""
    offsets = torch.tensor(FOOTPRINT, dtype=trajectories.dtype, device=trajectories.device)  # (F, 2)
    c, s = trajectories[..., 2].cos()[..., None], trajectories[..., 2].sin()[..., None]
    x = trajectories[..., 0:1] + c * offsets[:, 0] - s * offsets[:, 1]
    y = trajectories[..., 1:2] + s * offsets[:, 0] + c * offsets[:, 1]
    return torch.stack([x, y], dim=-1)


LOOKAHEAD_S = (0.5, 1.0)  # [s] TTC extrapolates the ego at constant velocity for up to 0.9 s
NUM_PROBES = len(FOOTPRINT) + len(LOOKAHEAD_S)


def probe_points(trajectories: torch.Tensor) -> torch.Tensor:
    """`(..., P, 3)` -> `(..., P, 5 + 2, 2)`: the footprint points, then the front centre extrapolated along the
    heading at the pose's speed by `LOOKAHEAD_S` (where a time-to-collision test would look next)."""
    xy, heading = trajectories[..., :2], trajectories[..., 2]
    step = torch.diff(xy, dim=-2, prepend=torch.zeros_like(xy[..., :1, :]))
    speed = step.norm(dim=-1, keepdim=True) / POSE_DT  # (..., P, 1)
    direction = torch.stack([heading.cos(), heading.sin()], dim=-1)[..., None, :]  # (..., P, 1, 2)
    front = xy[..., None, :] + (_CENTRE + _HALF_LENGTH) * direction
    ahead = front + (speed * torch.tensor(LOOKAHEAD_S, dtype=xy.dtype, device=xy.device))[..., None] * direction
    return torch.cat([footprint_points(trajectories), ahead], dim=-2)


def _upsample(maps: torch.Tensor) -> torch.Tensor:
    return F.interpolate(maps, scale_factor=2, mode="bilinear", align_corners=False)


def bev_cell_centres(grid: int, range_m: float) -> torch.Tensor:
    """`(G, G, 2)` ego-frame (x, y) of the BEV cell centres in the LiDAR BEV layout: row 0 is x = +range (ahead),
    column 0 is y = +range (left)."""
    centres = range_m - (torch.arange(grid, dtype=torch.float32) + 0.5) * (2 * range_m / grid)
    x, y = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x, y], dim=-1)


def bev_grid(points: torch.Tensor, range_m: float) -> torch.Tensor:
    """Ego-frame points `(..., 2)` -> grid_sample coordinates `(..., 2)` on the BEV (x over columns, y over rows)."""
    return points.flip(-1) * (-1.0 / range_m)  # flip, not [..., [1, 0]]: advanced indexing is slow on CPU


def kinematic_features(trajectories: torch.Tensor, position_scale: float) -> torch.Tensor:
    """`(S, K, P, 3)` local rear-axle poses -> `(S, K, P, 11)` scale-free per-pose features: position, heading,
    step, speed, acceleration, yaw rate, lateral acceleration and time (what EP, HC and TTC depend on)."""
    xy, heading = trajectories[..., :2], trajectories[..., 2]
    step = torch.diff(xy, dim=-2, prepend=torch.zeros_like(xy[..., :1, :]))
    speed = step.norm(dim=-1) / POSE_DT
    accel = torch.diff(speed, dim=-1, prepend=speed[..., :1]) / POSE_DT
    turn = torch.diff(heading, dim=-1, prepend=torch.zeros_like(heading[..., :1]))
    yaw_rate = torch.atan2(turn.sin(), turn.cos()) / POSE_DT
    time = torch.linspace(POSE_DT / 4, 1.0, trajectories.shape[-2], device=xy.device).expand_as(heading)
    columns = [xy[..., 0] / position_scale, xy[..., 1] / position_scale, heading.cos(), heading.sin(),
               step[..., 0] / 2.0, step[..., 1] / 2.0, speed / 10.0, accel / 4.0, yaw_rate, speed * yaw_rate / 4.0, time]
    return torch.stack(columns, dim=-1)


def read_maps(static: torch.Tensor, dynamic: torch.Tensor, points: torch.Tensor, range_m: float) -> torch.Tensor:
    """Bilinear reads of `static (S, C_s, G, G)` and, in each pose's own time slice, `dynamic (S, T, C_d, g, g)` at
    ego-frame `points (S, K, P, F, 2)` (P = T poses, F points each) -> `(S, K, P, F, C_s + C_d)`; zero off the map."""
    s, k, p, f, _ = points.shape
    if p != dynamic.shape[1]:
        raise ValueError(f"trajectories have {p} poses but the dynamic maps {dynamic.shape[1]} time slices")
    grid = bev_grid(points, range_m)
    at_static = F.grid_sample(static, grid.reshape(s, 1, -1, 2), align_corners=False)  # (S, C_s, 1, K*P*F)
    at_static = at_static.reshape(s, -1, k, p, f).permute(0, 2, 3, 4, 1)
    # scenes x times become the batch of one 2-D sampling, each reading the points of its own poses
    per_time = grid.transpose(1, 2).reshape(s * p, 1, k * f, 2)
    at_dynamic = F.grid_sample(dynamic.flatten(0, 1), per_time, align_corners=False)  # (S*P, C_d, 1, K*F)
    at_dynamic = at_dynamic.reshape(s, p, -1, k, f).permute(0, 3, 1, 4, 2)
    return torch.cat([at_static, at_dynamic], dim=-1)


class CostVolumeEncoder(nn.Module):
    """Observations of S scenes -> `(static, dynamic, pooled)` maps and summary vector (module docstring).

    Three levels on the LiDAR BEV grid. Fine (`G = lidar_bins / 2`): LiDAR and camera-on-ground features fused by a
    1x1 convolution, so static maps keep sharp edges. Mid (`G / 2`, a stride-2 convolution): the ego-centric position
    prior and the ego status/command (FiLM) enter here, a 3x3 convolution adds context; dynamic maps live here.
    Coarse (`G / 4`): far context for the dynamic maps (where a road user now will be later) and the summary vector.
    Each map is a read of its own level plus an upsampled read of the next coarser one: only map channels are
    upsampled, never features, so encoding a scene costs about as much as scoring ~70 candidates.
    """

    def __init__(self, config: "RWMConfig") -> None:
        super().__init__()
        self.config = config
        c, w = config.map_width, config.width
        self.grid = config.lidar_bins // 2
        fused_in = 0
        self.projector = None
        if config.use_camera:
            # patchify at the pooled scale: one (2 downsample)-square convolution replaces pooling + a stride-2 layer
            patch = 2 * config.camera_downsample
            self.camera_net = nn.Sequential(nn.Conv2d(3, 16, patch, stride=patch), nn.ReLU(), _conv(16, CAMERA_FEATURES))
            self.camera_summary = nn.Linear(CAMERA_FEATURES, w)
            if config.camera_calibration:
                self.projector = StripProjector(config.camera_calibration, config.camera_shape)
                strip, visible = self.projector(bev_cell_centres(self.grid, config.bev_range_m))
                self.register_buffer("camera_grid", strip[None], persistent=False)  # (1, G, G, 2)
                self.register_buffer("camera_visible", visible[None, None].float(), persistent=False)  # (1, 1, G, G)
                fused_in += CAMERA_FEATURES + 1
        if config.use_lidar:
            self.lidar_net = _conv(config.lidar_channels + config.lidar_history, LIDAR_FEATURES)
            fused_in += LIDAR_FEATURES
        self.fuse = nn.Conv2d(fused_in, c, 1) if fused_in else None
        self.down = nn.Conv2d(c, c, 3, stride=2, padding=1) if fused_in else None
        self.position = nn.Parameter(torch.zeros(1, c, self.grid // 2, self.grid // 2))  # ego-centric prior
        conditions = (config.num_history * 7 if config.use_ego_status else 0) + (4 if config.use_command else 0)
        self.film = nn.Linear(conditions, 2 * c) if conditions else None
        self.mid = _conv(c, c, stride=1)
        self.coarse = nn.Sequential(_conv(c, 2 * c), _conv(2 * c, 2 * c, stride=1))
        time_maps = config.dynamic_maps * config.num_poses
        self.static_local = nn.Conv2d(c, config.static_maps, 1) if fused_in else None
        self.static_context = nn.Conv2d(c, config.static_maps, 1)
        self.dynamic_local, self.dynamic_context = nn.Conv2d(c, time_maps, 1), nn.Conv2d(2 * c, time_maps, 1)
        self.summary = nn.Sequential(nn.Linear(2 * c + conditions, w), nn.ReLU())

    def forward(self, observations: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """`(static, dynamic, pooled, camera)`; `camera (S, C, h, w)` strip features, or None without a calibrated
        camera (the candidate also reads them where its footprint is seen: lane markings are finer than a BEV cell)."""
        cfg = self.config
        parts: list[torch.Tensor] = []
        s = next(iter(observations.values())).shape[0]
        camera_vector = features = None
        if cfg.use_camera:
            # scale while the layout is still (S, H, W, 3) and contiguous: on the permuted view it is several times slower
            image = observations["camera"].float().mul_(1 / 255.0).permute(0, 3, 1, 2)
            features = self.camera_net(image)  # (S, C, H / (4 downsample), W / (4 downsample))
            camera_vector = self.camera_summary(features.mean((2, 3)))
            if self.projector is not None:
                ground = F.grid_sample(features, self.camera_grid.expand(s, -1, -1, -1), align_corners=False)
                parts += [ground * self.camera_visible, self.camera_visible.expand(s, -1, -1, -1)]
        if cfg.use_lidar:
            parts.append(self.lidar_net(lidar_input(observations, cfg)))
        fused = F.relu(self.fuse(torch.cat(parts, dim=1))) if self.fuse is not None else None  # (S, c, G, G)
        mid = self.position.expand(s, -1, -1, -1) if fused is None else self.down(fused) + self.position
        conditions = []
        if cfg.use_ego_status:
            conditions.append(torch.asinh(observations["ego_status"].float().flatten(1)))
        if cfg.use_command:
            conditions.append(observations["command"].float())
        if self.film is not None:
            gamma, beta = self.film(torch.cat(conditions, dim=1)).chunk(2, dim=-1)
            mid = mid * (1 + gamma[..., None, None]) + beta[..., None, None]
        mid = self.mid(F.relu(mid))  # (S, c, G/2, G/2)
        coarse = self.coarse(mid)  # (S, 2c, G/4, G/4)
        static = _upsample(self.static_context(mid))
        if fused is not None:
            static = static + self.static_local(fused)
        dynamic = self.dynamic_local(mid) + _upsample(self.dynamic_context(coarse))
        dynamic = dynamic.unflatten(1, (cfg.num_poses, cfg.dynamic_maps))  # (S, T, C_d, G/2, G/2)
        pooled = self.summary(torch.cat([coarse.mean((2, 3)), *conditions], dim=1))
        if camera_vector is not None:
            pooled = pooled + camera_vector
        return static, dynamic, pooled, features if self.projector is not None else None


class CostVolumeScorer(nn.Module):
    """Per-candidate part: sample the maps at the probe points of every pose (footprint + look-ahead), then a
    per-pose MLP and pooling."""

    def __init__(self, config: "RWMConfig") -> None:
        super().__init__()
        self.config = config
        w = config.width
        sampled = NUM_PROBES * (config.static_maps + config.dynamic_maps)
        self.projector = None
        if config.use_camera and config.camera_calibration:
            self.projector = StripProjector(config.camera_calibration, config.camera_shape)
            sampled += len(FOOTPRINT) * (CAMERA_FEATURES + 1)
        self.pose_mlp = nn.Sequential(nn.Linear(sampled + KINEMATIC_FEATURES, w), nn.ReLU())
        self.trajectory_mlp = nn.Sequential(nn.Linear(config.num_poses * KINEMATIC_FEATURES, w), nn.ReLU())
        self.trunk = nn.Sequential(nn.Linear(4 * w, config.trunk_width), nn.ReLU(),
                                   nn.Linear(config.trunk_width, config.trunk_width), nn.ReLU())

    def forward(self, static: torch.Tensor, dynamic: torch.Tensor, pooled: torch.Tensor, camera: torch.Tensor | None,
                trajectories: torch.Tensor) -> torch.Tensor:
        """`trajectories (S, K, P, 3)` -> trunk features `(S, K, trunk_width)`."""
        cfg = self.config
        s, k, p = trajectories.shape[:3]
        probes = probe_points(trajectories)  # (S, K, P, F + 2, 2)
        sampled = read_maps(static, dynamic, probes, cfg.bev_range_m).flatten(-2)
        if self.projector is not None and camera is not None:
            footprint = probes[..., : len(FOOTPRINT), :]
            grid, visible = self.projector(footprint)  # (S, K, P, F, 2), (S, K, P, F)
            seen = F.grid_sample(camera, grid.reshape(s, 1, -1, 2), align_corners=False)  # (S, C, 1, K*P*F)
            seen = seen.reshape(s, -1, k, p, len(FOOTPRINT)).permute(0, 2, 3, 4, 1)
            sampled = torch.cat([sampled, seen.flatten(-2), visible.to(seen.dtype)], dim=-1)
        kinematics = kinematic_features(trajectories, cfg.position_scale)
        poses = self.pose_mlp(torch.cat([sampled, kinematics], dim=-1))  # (S, K, P, w)
        whole = self.trajectory_mlp(kinematics.flatten(-2))
        scene = pooled[:, None].expand(s, k, -1)
        return self.trunk(torch.cat([poses.amax(-2), poses.mean(-2), whole, scene], dim=-1))
