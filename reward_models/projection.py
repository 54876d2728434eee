"""Where a point on the ground appears in the stitched camera strip, so the RWM can look at the road a candidate
trajectory would drive over (curbs, grass, lane markings: what decides DAC, DDC and LK, and what the LiDAR BEV
does not show).

The rig is a fixed property of the vehicle, so its calibration is read once from an `AgentInput` (intrinsics and
camera-to-ego pose of each camera, plus the crop and the strip columns `stitch_cameras` gives it) and stored in the
model config. At run time only the observation is needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

MIN_DEPTH = 0.5  # [m] points closer to (or behind) a camera are not visible in it


def strip_calibration(agent_input: Any, observation_config: Any) -> list[dict[str, list]]:
    """Per camera of the strip (in strip order): `intrinsics (3, 3)`, `rotation (3, 3)` camera->ego,
    `translation (3,)`, `crop (left, top, right, bottom)` [px of the camera image], `columns (u0, u1)` [strip px]."""
    from irlvla_env.observations.camera import strip_layout

    cameras = [getattr(agent_input.cameras[-1], name) for name in observation_config.cameras]
    for name, camera in zip(observation_config.cameras, cameras):
        if camera.image is None or camera.intrinsics is None or camera.sensor2lidar_rotation is None:
            raise ValueError(f"camera calibration needs the image and calibration of {name}; load it with the sensors")
    layout = strip_layout([np.shape(camera.image)[:2] for camera in cameras], observation_config)
    return [
        {
            "intrinsics": np.asarray(camera.intrinsics, float).tolist(),
            "rotation": np.asarray(camera.sensor2lidar_rotation, float).tolist(),
            "translation": np.asarray(camera.sensor2lidar_translation, float).tolist(),
            "crop": [float(v) for v in box],
            "columns": [float(left), float(right)],
        }
        for camera, (box, (left, right)) in zip(cameras, layout)
    ]


class StripProjector(nn.Module):
    """Ground points `(..., 2)` in the ego frame -> normalised strip coordinates `(..., 2)` in [-1, 1]
    (grid_sample's convention, x over columns) and a visibility mask `(...)`; the first camera that sees a point
    (strip order) wins."""

    def __init__(self, calibration: list[dict[str, list]], strip_shape: tuple[int, int]) -> None:
        super().__init__()
        as_t = lambda key: torch.tensor([c[key] for c in calibration], dtype=torch.float32)
        self.register_buffer("intrinsics", as_t("intrinsics"), persistent=False)  # (C, 3, 3)
        self.register_buffer("rotation", as_t("rotation"), persistent=False)  # (C, 3, 3)
        self.register_buffer("translation", as_t("translation"), persistent=False)  # (C, 3)
        self.register_buffer("crop", as_t("crop"), persistent=False)  # (C, 4)
        self.register_buffer("columns", as_t("columns"), persistent=False)  # (C, 2)
        self.strip_height, self.strip_width = strip_shape

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ground = torch.cat([points, torch.zeros_like(points[..., :1])], dim=-1)[..., None, :]  # (..., 1, 3)
        in_camera = torch.einsum("...ci,cij->...cj", ground - self.translation, self.rotation)  # (..., C, 3)
        depth = in_camera[..., 2]
        safe = depth.clamp_min(MIN_DEPTH)
        k = self.intrinsics
        u = k[:, 0, 0] * in_camera[..., 0] / safe + k[:, 0, 2]
        v = k[:, 1, 1] * in_camera[..., 1] / safe + k[:, 1, 2]
        left, top, right, bottom = self.crop.unbind(-1)
        visible = (depth > MIN_DEPTH) & (u >= left) & (u < right) & (v >= top) & (v < bottom)
        strip_u = self.columns[:, 0] + (u - left) / (right - left) * (self.columns[:, 1] - self.columns[:, 0])
        strip_v = (v - top) / (bottom - top) * self.strip_height
        first = torch.where(visible, torch.arange(visible.shape[-1], device=points.device), visible.shape[-1])
        choice = first.min(-1, keepdim=True).values.clamp_max(visible.shape[-1] - 1)
        pick = lambda values: values.gather(-1, choice).squeeze(-1)
        any_visible = visible.any(-1)
        grid = torch.stack([2 * pick(strip_u) / self.strip_width - 1, 2 * pick(strip_v) / self.strip_height - 1], -1)
        return torch.where(any_visible[..., None], grid, torch.full_like(grid, -2.0)), any_visible
