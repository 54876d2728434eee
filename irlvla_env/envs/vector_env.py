"""A native vector env for `single` mode that scores all sub-environments with ONE reward-model call.

Every `single` episode lasts one step, so the vector env resets each sub-environment right after its step
(same-step autoreset): the returned observation already belongs to the next scene, and the finished one is in
`info["final_obs"]`. Batching the reward model is what makes thousands of steps per second possible.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from irlvla_env.envs.action import BadActionError, action_problems, trajectory_space
from irlvla_env.envs.config import EnvConfig
from irlvla_env.envs.scene_pool import ScenePool, pool_and_reward_model
from irlvla_env.observations import batch_observations, observation_space
from irlvla_env.rewards import RewardOutput


class NavsimVectorEnv(VectorEnv):
    """`num_envs` independent `single`-mode episodes stepped together.

    :param num_envs: number of sub-environments.
    :param config: an `EnvConfig` or dict (mode must be `single`).
    :param scene_pool: share a pool with other envs (optional).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 8,
        config: EnvConfig | dict | None = None,
        scene_pool: ScenePool | None = None,
        **overrides: Any,
    ) -> None:
        self.config = EnvConfig.build(config, **overrides)
        if self.config.mode != "single":
            raise ValueError("NavsimVectorEnv batches `single` mode; use gymnasium.vector.SyncVectorEnv for closed_loop")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        self.scene_pool, self.reward_model = pool_and_reward_model(self.config, scene_pool)
        self._audit = self.scene_pool.reward_model("epdms") if self.config.audit_epdms else None
        self.single_observation_space = observation_space(self.config.observation)
        self.single_action_space = trajectory_space()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._tokens: list[str] = []
        self._obs: dict[str, np.ndarray] = {}
        self._rng = np.random.default_rng()

    def _draw(self, n: int) -> list[str]:
        return [self.scene_pool.sample(self._rng) for _ in range(n)]

    def _observe(self, tokens: list[str]) -> dict[str, np.ndarray]:
        return batch_observations([self.scene_pool.observation(t) for t in tokens])

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if isinstance(seed, (list, tuple)):
            seed = int(seed[0]) if seed and seed[0] is not None else None
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        options = dict(options or {})
        tokens = options.pop("tokens", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; known: tokens")
        self._tokens = list(tokens) if tokens is not None else self._draw(self.num_envs)
        if len(self._tokens) != self.num_envs:
            raise ValueError(f"reset(options={{'tokens': ...}}) needs {self.num_envs} tokens, got {len(self._tokens)}")
        self._obs = self._observe(self._tokens)
        return self._obs, {"token": np.array(self._tokens, dtype=object)}

    def step(self, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        if not self._tokens:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.float32)
        problems = action_problems(actions, self.single_action_space)
        if len(actions) != self.num_envs:
            problems = [f"expected {self.num_envs} actions, got {len(actions)}"] * self.num_envs
        bad = np.array([p is not None for p in problems])
        if bad.any() and self.config.bad_action == "raise":
            i = int(np.argmax(bad))
            raise BadActionError(f"sub-env {i}: {problems[i]} (scene {self._tokens[i]})")
        rewards = np.full(self.num_envs, self.config.bad_action_penalty, dtype=np.float64)
        epdms = np.full(self.num_envs, np.nan)
        uncertainty = np.full(self.num_envs, np.nan)
        good = np.flatnonzero(~bad)
        finished, final_obs = self._tokens, self._obs
        info: dict[str, Any] = {"token": np.array(finished, dtype=object)}
        if len(good):
            obs_good = {k: v[good] for k, v in final_obs.items()}
            tokens_good = [finished[i] for i in good]
            output = self.reward_model.predict(obs_good, actions[good], tokens_good)
            rewards[good] = output.reward
            epdms[good] = output.epdms
            if output.uncertainty is not None:
                uncertainty[good] = output.uncertainty
            for name, values in output.subscores.items():
                column = np.full(self.num_envs, np.nan)
                column[good] = values
                info[name] = column
            if self._audit is not None:
                rule = np.full(self.num_envs, np.nan)
                rule[good] = self._audit.predict(obs_good, actions[good], tokens_good).epdms
                info["epdms_rule"] = rule
        info["epdms"], info["uncertainty"] = epdms, uncertainty
        info["bad_action"] = np.array(problems, dtype=object)
        info["final_obs"] = final_obs
        self._tokens = self._draw(self.num_envs)
        self._obs = self._observe(self._tokens)
        terminated = np.ones(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self._obs, rewards, terminated, truncated, info

    def score_candidates(self, candidates: np.ndarray) -> RewardOutput:
        """Score alternative plans `(num_envs, M, 8, 3)` for the current scenes, without stepping.

        A learned environment can answer "what if" for many plans of one scene at the cost of one scene encoding,
        which a simulator cannot; RL uses it to score every mode of a multi-modal planner per scene
        (`RLConfig.mode_beta`). Output row `n * M + m` is candidate `m` of sub-env `n`.
        """
        if not self._tokens:
            raise RuntimeError("call reset() before score_candidates()")
        candidates = np.asarray(candidates, dtype=np.float32)
        if candidates.ndim != 4 or candidates.shape[0] != self.num_envs or candidates.shape[2:] != (8, 3):
            raise ValueError(f"candidates must have shape ({self.num_envs}, M, 8, 3), got {candidates.shape}")
        per_scene = candidates.shape[1]
        tokens = [token for token in self._tokens for _ in range(per_scene)]
        observations = {key: np.repeat(value, per_scene, axis=0) for key, value in self._obs.items()}
        return self.reward_model.predict(observations, candidates.reshape(-1, 8, 3), tokens)
