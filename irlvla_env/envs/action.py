"""The action space (a planned trajectory) and the checks that keep bad actions from earning a silent reward."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from irlvla_env.navsim.dataclasses import DEFAULT_SAMPLING, TrajectorySampling

# Bounds generous enough for any drivable 4 s plan (≈ 36 m/s straight ahead), tight enough to flag garbage.
MAX_FORWARD_M = 120.0
MAX_BACKWARD_M = 20.0
MAX_LATERAL_M = 60.0


class BadActionError(ValueError):
    """An action that is not a finite trajectory inside the action space."""


def trajectory_space(sampling: TrajectorySampling = DEFAULT_SAMPLING) -> spaces.Box:
    """Box of `(num_poses, 3)` ego-frame poses `(x, y, heading)` at the sampling's interval."""
    n = sampling.num_poses
    low = np.tile(np.array([-MAX_BACKWARD_M, -MAX_LATERAL_M, -np.pi], dtype=np.float32), (n, 1))
    high = np.tile(np.array([MAX_FORWARD_M, MAX_LATERAL_M, np.pi], dtype=np.float32), (n, 1))
    return spaces.Box(low=low, high=high, dtype=np.float32)


def action_problems(actions: np.ndarray, space: spaces.Box) -> list[str | None]:
    """Per action in a batch `(B, n, 3)`: None if valid, else a sentence saying what is wrong."""
    actions = np.asarray(actions)
    shape = space.shape
    if actions.shape[1:] != shape:
        return [f"action has shape {actions.shape[1:]}, expected {shape}"] * max(len(actions), 1)
    problems: list[str | None] = []
    finite = np.isfinite(actions).all(axis=(1, 2))
    below = (actions < space.low - 1e-6).any(axis=(1, 2))
    above = (actions > space.high + 1e-6).any(axis=(1, 2))
    for i in range(len(actions)):
        if not finite[i]:
            problems.append("action contains NaN or inf")
        elif below[i] or above[i]:
            lo = np.round(actions[i].min(axis=0), 2).tolist()
            hi = np.round(actions[i].max(axis=0), 2).tolist()
            problems.append(f"action outside the space bounds (per-column min {lo}, max {hi})")
        else:
            problems.append(None)
    return problems
