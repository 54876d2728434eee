"""Ego-state parts of an observation: status history, driving command, and the same facts as a text prompt."""

from __future__ import annotations

import numpy as np

from irlvla_env.navsim.dataclasses import DRIVING_COMMANDS, NAVSIM_INTERVAL_LENGTH, AgentInput
from irlvla_env.navsim.geometry import wrap_angle

EGO_STATUS_FIELDS = ("x", "y", "heading", "vx", "vy", "ax", "ay")
# Bounds of the observation space; values are clipped into them, which no real drive reaches
# (1.5 s of history at 100 m/s is 150 m).
EGO_STATUS_LOW = np.array([-200.0, -200.0, -np.pi, -100.0, -100.0, -100.0, -100.0], dtype=np.float32)
EGO_STATUS_HIGH = -EGO_STATUS_LOW
COMMAND_WORDS = {"left": "turn left", "straight": "go straight", "right": "turn right", "unknown": "follow the road"}


def ego_status_history(agent_input: AgentInput, num_history: int) -> np.ndarray:
    """float32 `(num_history, 7)`: `x, y, heading, vx, vy, ax, ay` of the last frames, oldest first.

    Poses are local to the current frame (as in `AgentInput`), velocities and accelerations are ego-body.
    """
    statuses = agent_input.ego_statuses
    if len(statuses) < num_history:
        raise ValueError(f"agent input has {len(statuses)} ego statuses, the observation needs {num_history}")
    rows = []
    for index, status in enumerate(statuses[-num_history:], start=len(statuses) - num_history):
        if status.in_global_frame:
            raise ValueError(f"ego status at history index {index} is in the global frame; AgentInput poses are local")
        rows.append(np.concatenate([status.ego_pose[:3], status.ego_velocity[:2], status.ego_acceleration[:2]]))
    history = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(history)):
        raise ValueError(f"ego status history contains NaN or inf: {history.tolist()}")
    return np.clip(history, EGO_STATUS_LOW, EGO_STATUS_HIGH).astype(np.float32)


def driving_command(agent_input: AgentInput) -> np.ndarray:
    """float32 `(4,)` one-hot `(left, straight, right, unknown)` of the current frame."""
    command = np.asarray(agent_input.ego_statuses[-1].driving_command, dtype=np.float32).reshape(-1)
    if command.shape != (len(DRIVING_COMMANDS),):
        raise ValueError(f"driving_command must have {len(DRIVING_COMMANDS)} entries, got {command.tolist()}")
    return np.clip(command, 0.0, 1.0)


def command_name(command: np.ndarray) -> str:
    """`left`, `straight`, `right` or `unknown` (also for an all-zero command)."""
    command = np.asarray(command).reshape(-1)
    return DRIVING_COMMANDS[int(np.argmax(command))] if command.max() > 0 else "unknown"


def build_prompt(agent_input: AgentInput) -> str:
    """The driving command and ego motion in plain ASCII words, for a language model's text input.

    Example: `Command: turn left. Speed 8.3 m/s, accelerating at 0.4 m/s^2. In the last 1.5 s the ego drove
    12.1 m and turned 5 deg left.`
    """
    current = agent_input.ego_statuses[-1]
    speed = float(np.linalg.norm(current.ego_velocity[:2]))
    accel = float(current.ego_acceleration[0])
    trend = "accelerating at" if accel > 0.1 else ("braking at" if accel < -0.1 else "steady, acceleration")
    parts = [f"Command: {COMMAND_WORDS[command_name(current.driving_command)]}.",
             f"Speed {speed:.1f} m/s, {trend} {abs(accel):.1f} m/s^2."]  # fmt: skip
    if len(agent_input.ego_statuses) > 1:
        poses = np.array([s.ego_pose[:3] for s in agent_input.ego_statuses], dtype=np.float64)
        distance = float(np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1).sum())
        turn = float(np.degrees(wrap_angle(poses[-1, 2] - poses[0, 2])))
        side = "left" if turn > 0 else "right"
        duration = (len(poses) - 1) * NAVSIM_INTERVAL_LENGTH
        turned = f"turned {abs(turn):.0f} deg {side}" if abs(turn) >= 1 else "kept its heading"
        parts.append(f"In the last {duration:.1f} s the ego drove {distance:.1f} m and {turned}.")
    return " ".join(parts)
