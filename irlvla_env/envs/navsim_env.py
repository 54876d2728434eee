"""`IRLVLA-NAVSIM-v2`: a learned Gymnasium environment over NAVSIM scenes whose step function is a reward model.

In `single` mode (the IRL-VLA setting) an episode is one scene: the agent sees the sensors at the current frame,
answers with one 4 s trajectory, and the reward model (the Reward World Model by default) scores it; the episode
then terminates. In `closed_loop` mode the ego executes the first part of each plan through the kinematic
model and the observation is rendered again at its new pose (see `closed_loop.py`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from irlvla_env.envs.action import BadActionError, action_problems, trajectory_space
from irlvla_env.envs.config import EnvConfig
from irlvla_env.envs.scene_pool import ScenePool, pool_and_reward_model
from irlvla_env.observations import batch_observations, observation_space
from irlvla_env.rewards import EPDMSReward, RewardModel, RewardOutput


def reward_info(output: RewardOutput, index: int) -> dict[str, Any]:
    """The `info` entries of one batch element of a reward-model output (an unavailable sub-score, such as EC
    without a predecessor frame, is None rather than NaN)."""
    info: dict[str, Any] = {
        "subscores": {name: _finite_or_none(values[index]) for name, values in output.subscores.items()},
        "epdms": float(output.epdms[index]),
    }
    info["uncertainty"] = None if output.uncertainty is None else _finite_or_none(output.uncertainty[index])
    return info


def _copy(obs: dict[str, Any]) -> dict[str, Any]:
    """Observations handed to the user are theirs: never the cached arrays themselves."""
    return {key: value.copy() if isinstance(value, np.ndarray) else value for key, value in obs.items()}


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


class NavsimEnv(gym.Env):
    """NAVSIM v2 scenes with a reward model as the simulator-free step function.

    :param config: an `EnvConfig`, a dict of its fields, or None for the defaults.
    :param render_mode: None or `rgb_array` (the camera strip of the current observation).
    :param scene_pool: share one pool between environments (the vector env does).
    :param overrides: any `EnvConfig` field, e.g. `reward_model="epdms"`, `split="navmini"`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(
        self,
        config: EnvConfig | dict | None = None,
        render_mode: str | None = None,
        scene_pool: ScenePool | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.config = EnvConfig.build(config, **overrides)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.scene_pool, self.reward_model = pool_and_reward_model(self.config, scene_pool)
        self._audit: RewardModel | None = self.scene_pool.reward_model("epdms") if self.config.audit_epdms else None
        self.observation_space = observation_space(self.config.observation)
        self.action_space = trajectory_space()
        self._token: str | None = None
        self._obs: dict[str, np.ndarray] | None = None
        self._closed_loop = None
        if self.config.mode == "closed_loop":
            from irlvla_env.envs.closed_loop import ClosedLoopRollout

            self._closed_loop = ClosedLoopRollout(self.scene_pool, self.config)

    @staticmethod
    def default_config() -> dict:
        return EnvConfig().to_dict()

    @property
    def token(self) -> str | None:
        """Token of the scene of the current episode."""
        return self._token

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        options = dict(options or {})
        split = options.pop("split", None)
        if split is not None and split != self.scene_pool.split:
            self.scene_pool = ScenePool(split, self.config.observation, self.config.data_root, self.config.max_scenes)
            if self._closed_loop is not None:
                self._closed_loop.scene_pool = self.scene_pool
        token = options.pop("token", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; known: token, split")
        self._token = token if token is not None else self.scene_pool.sample(self.np_random)
        if self._closed_loop is not None:
            self._obs = self._closed_loop.reset(self._token)
        else:
            self._obs = self.scene_pool.observation(self._token)
        return _copy(self._obs), {"token": self._token}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self._obs is None or self._token is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float32)
        problem = action_problems(action[None], self.action_space)[0]
        if problem is not None:
            if self.config.bad_action == "raise":
                raise BadActionError(f"{problem} (scene {self._token}); set bad_action='penalty' to score it instead")
            return _copy(self._obs), float(self.config.bad_action_penalty), True, False, {"token": self._token, "bad_action": problem}
        if self._closed_loop is not None:
            return self._closed_loop_step(action)
        obs, token = self._obs, self._token
        output = self.reward_model.predict(batch_observations([obs]), action[None], [token])
        info = {"token": token, **reward_info(output, 0)}
        if self._audit is not None:
            info["epdms_rule"] = float(self._audit.predict(batch_observations([obs]), action[None], [token]).epdms[0])
        return _copy(obs), float(output.reward[0]), True, False, info

    def _closed_loop_step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        loop = self._closed_loop
        obs_before, token_before = self._obs, loop.current_token
        if isinstance(self.reward_model, EPDMSReward):
            output = loop.rule_output(action)  # privileged scorer: score from the executed pose
        else:
            output = self.reward_model.predict(batch_observations([obs_before]), action[None], [token_before])
        info = {"token": self._token, "step_token": token_before, **reward_info(output, 0)}
        if self._audit is not None:
            info["epdms_rule"] = float(loop.rule_output(action).epdms[0])
        self._obs, terminated, truncated, why = loop.advance(action)
        if why:
            info["termination"] = why
        return _copy(self._obs), float(output.reward[0]), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._obs is None:
            return None
        return np.asarray(self._obs["camera"])
