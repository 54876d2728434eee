"""Mirror augmentation for RWM training: a scene reflected across the ego's longitudinal axis (y -> -y).

Why: the RWM trains on the navtrain maps and is tested on another map (navtest), and the sub-scores that depend on
traffic (NC, TTC) lose most across that shift (in-domain NC AUROC 0.93, navtest 0.88). The rule-based sub-scores are
geometric (box overlaps, lane directions, distances, progress along the route), so a mirrored scene scored with its
mirrored candidates keeps every label, and the model sees twice the layouts. Mirroring needs a left-right symmetric
rig (the default strip of l0 | f0 | r0 is; `tests/test_rwm_augment.py` checks it through the projector).
Measured once with the pipeline's labels (mirror probability 0.5): navtest Pearson 0.808 against 0.803 without it,
held-out navtrain 0.846 against 0.859, so it stays opt-in (`RWMTrainConfig.mirror_probability`).

What mirrors (all tensors batched over scenes, `rows` a bool mask of the scenes to mirror):
- the camera strip `(S, H, W, 3)` and every BEV grid `(..., G, G)` (column 0 is y = +range): flipped left-right;
- ego status `(S, T, 7)` = x, y, heading, vx, vy, ax, ay: y, heading, vy and ay change sign;
- the command one-hot `(S, 4)` = left, straight, right, unknown: left and right swap;
- trajectories `(S, K, P, 3)` = x, y, heading: y and heading change sign.
"""

from __future__ import annotations

import torch

EGO_STATUS_SIGNS = (1.0, -1.0, -1.0, 1.0, -1.0, 1.0, -1.0)  # x, y, heading, vx, vy, ax, ay
COMMAND_ORDER = (2, 1, 0, 3)  # left <-> right
POSE_SIGNS = (1.0, -1.0, -1.0)  # x, y, heading
IMAGE_KEYS = {"camera": 2}  # key -> width axis of (S, H, W, 3)
GRID_KEYS = ("lidar_bev", "lidar_history")


def _where(rows: torch.Tensor, mirrored: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    return torch.where(rows.reshape(-1, *([1] * (original.dim() - 1))), mirrored, original)


def mirror_grids(grids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """BEV grids `(S, ..., G, G)` (LiDAR, map targets) of the `rows` scenes flipped left-right."""
    return _where(rows, grids.flip(-1), grids)


def mirror_observations(observations: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The observations of the `rows` scenes mirrored (module docstring); other keys pass through unchanged."""
    out = dict(observations)
    for key, axis in IMAGE_KEYS.items():
        if key in out:
            out[key] = _where(rows, out[key].flip(axis), out[key])
    for key in GRID_KEYS:
        if key in out:
            out[key] = mirror_grids(out[key], rows)
    if "ego_status" in out:
        status = out["ego_status"]
        signs = torch.tensor(EGO_STATUS_SIGNS, dtype=status.dtype, device=status.device)
        out["ego_status"] = _where(rows, status * signs, status)
    if "command" in out:
        command = out["command"]
        out["command"] = _where(rows, command[:, list(COMMAND_ORDER)], command)
    return out


def mirror_trajectories(trajectories: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Local poses `(S, K, P, 3)` of the `rows` scenes reflected (y and heading change sign)."""
    signs = torch.tensor(POSE_SIGNS, dtype=trajectories.dtype, device=trajectories.device)
    return _where(rows, trajectories * signs, trajectories)
