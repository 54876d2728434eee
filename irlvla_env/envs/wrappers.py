"""Adapters for Stable-Baselines3: channel-first images, no text, a flat symmetric action box, and a VecEnv
that keeps the native batched reward call."""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from irlvla_env.envs.vector_env import NavsimVectorEnv
from irlvla_env.rewards import RewardOutput

IMAGE_KEYS = ("camera",)


def sb3_observation_space(space: spaces.Dict) -> spaces.Dict:
    """The Dict space SB3 sees: images channel-first, text dropped."""
    out = {}
    for key, sub in space.spaces.items():
        if isinstance(sub, spaces.Text):
            continue
        if key in IMAGE_KEYS:
            h, w, c = sub.shape
            out[key] = spaces.Box(0, 255, (c, h, w), dtype=np.uint8)
        else:
            out[key] = sub
    return spaces.Dict(out)


def to_sb3_observation(obs: dict[str, Any], batched: bool) -> dict[str, np.ndarray]:
    """Transpose images HWC→CHW (on the last three axes) and drop text."""
    out = {}
    for key, value in obs.items():
        if key == "prompt":
            continue
        if key in IMAGE_KEYS:
            value = np.ascontiguousarray(np.moveaxis(value, -1, -3))
        out[key] = value
    return out


class SB3ObservationWrapper(gym.ObservationWrapper):
    """Channel-first camera and no prompt, so SB3's `MultiInputPolicy` (NatureCNN) accepts the observation."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = sb3_observation_space(env.observation_space)

    def observation(self, observation: dict) -> dict:
        return to_sb3_observation(observation, batched=False)


class FlatTrajectoryAction(gym.ActionWrapper):
    """A flat `Box(-1, 1, (num_poses * 3,))` mapped linearly onto the trajectory bounds (SB3 wants symmetric boxes)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        inner = env.action_space
        self._low, self._high, self._shape = inner.low, inner.high, inner.shape
        self.action_space = spaces.Box(-1.0, 1.0, (int(np.prod(inner.shape)),), dtype=np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float32).reshape(self._shape)
        return (self._low + (np.clip(a, -1.0, 1.0) + 1.0) * 0.5 * (self._high - self._low)).astype(np.float32)


def make_sb3_env(env: gym.Env) -> gym.Env:
    """Wrap one NAVSIM env for stock SB3 algorithms."""
    return FlatTrajectoryAction(SB3ObservationWrapper(env))


class SB3NavsimVecEnv(VecEnv):
    """SB3 `VecEnv` over `NavsimVectorEnv`: one reward-model call per step for all sub-environments.

    :param vector_env: the native vector env (single mode).
    :param flat_actions: accept flat `[-1, 1]` actions (like `FlatTrajectoryAction`) instead of raw trajectories.
    """

    def __init__(self, vector_env: NavsimVectorEnv, flat_actions: bool = True) -> None:
        self.venv = vector_env
        self.flat_actions = flat_actions
        inner = vector_env.single_action_space
        self._low, self._high, self._shape = inner.low, inner.high, inner.shape
        action_space = (
            spaces.Box(-1.0, 1.0, (int(np.prod(inner.shape)),), dtype=np.float32) if flat_actions else inner
        )
        super().__init__(vector_env.num_envs, sb3_observation_space(vector_env.single_observation_space), action_space)
        self._actions: np.ndarray | None = None
        self._seed: int | None = None

    def _to_trajectories(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions, dtype=np.float32)
        if not self.flat_actions:
            return actions.reshape(self.num_envs, *self._shape)
        a = np.clip(actions.reshape(self.num_envs, *self._shape), -1.0, 1.0)
        return (self._low + (a + 1.0) * 0.5 * (self._high - self._low)).astype(np.float32)

    def reset(self) -> dict[str, np.ndarray]:
        obs, _ = self.venv.reset(seed=self._seed)
        self._seed = None
        return to_sb3_observation(obs, batched=True)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = self._to_trajectories(actions)

    def step_wait(self):
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        final = to_sb3_observation(info["final_obs"], batched=True)
        infos = []
        for i in range(self.num_envs):
            entry = {"terminal_observation": {k: v[i] for k, v in final.items()}, "token": info["token"][i],
                     "epdms": float(info["epdms"][i]), "uncertainty": float(info["uncertainty"][i]),
                     "TimeLimit.truncated": bool(truncated[i])}
            infos.append(entry)
        dones = terminated | truncated
        return to_sb3_observation(obs, batched=True), rewards.astype(np.float32), dones, infos

    def score_candidates(self, candidates: np.ndarray) -> RewardOutput:
        """`NavsimVectorEnv.score_candidates`: raw plans `(num_envs, M, 8, 3)` of the current scenes."""
        return self.venv.score_candidates(candidates)

    def close(self) -> None:
        self.venv.close()

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        self._seed = seed
        return [seed] * self.num_envs

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.venv, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        return [getattr(self.venv, method_name)(*args, **kwargs)] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def _get_indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)
