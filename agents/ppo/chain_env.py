"""The VecEnv seen by `DiffusionPPO`: it accepts (chain ‖ trajectory) actions and sends the trajectory on."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecEnvWrapper

from agents.ppo.policy import NUM_POSES, TRAJECTORY_DIM, chain_action_space
from irlvla_env.envs.wrappers import SB3NavsimVecEnv


class ChainActionVecEnv(VecEnvWrapper):
    """Wraps an `SB3NavsimVecEnv` with raw trajectory actions (`flat_actions=False`).

    With `num_candidates = M > 0` an action is (chain ‖ M candidate plans ‖ executed plan): before stepping, the
    learned env scores every candidate of the current scenes (`score_candidates`) and each step's info carries them
    as `candidate_rewards` `(M,)`, which `DiffusionPPO` stores for its all-mode update.

    :param venv: the env; its action space is the trajectory Box.
    :param chain_size: width of the core's flattened chain (`DiffusionCore.chain_size`).
    :param uncertainty_penalty: subtract `coef * uncertainty` from the reward when the reward model reports one
        (from the candidates' rewards too).
    :param num_candidates: M, candidate plans per action (0: none).
    """

    def __init__(self, venv: SB3NavsimVecEnv, chain_size: int, uncertainty_penalty: float = 0.0,
                 num_candidates: int = 0) -> None:
        if venv.flat_actions:
            raise ValueError("ChainActionVecEnv needs SB3NavsimVecEnv(..., flat_actions=False)")
        if num_candidates < 0:
            raise ValueError(f"num_candidates must be >= 0, got {num_candidates}")
        self.trajectory_space = venv.action_space
        self.uncertainty_penalty = float(uncertainty_penalty)
        self.num_candidates = int(num_candidates)
        self._candidate_rewards: np.ndarray | None = None
        super().__init__(venv, action_space=chain_action_space(chain_size, venv.action_space, self.num_candidates))

    def reset(self):
        return self.venv.reset()

    def _penalised(self, rewards: np.ndarray, uncertainty: np.ndarray | None) -> np.ndarray:
        if not self.uncertainty_penalty or uncertainty is None:
            return rewards
        return rewards - self.uncertainty_penalty * np.nan_to_num(uncertainty, nan=0.0).astype(rewards.dtype)

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        low, high = self.trajectory_space.low, self.trajectory_space.high
        trajectories = actions[:, -TRAJECTORY_DIM:].reshape(-1, NUM_POSES, 3)
        if self.num_candidates:
            start = -(self.num_candidates + 1) * TRAJECTORY_DIM
            candidates = actions[:, start:-TRAJECTORY_DIM].reshape(len(actions), self.num_candidates, NUM_POSES, 3)
            output = self.venv.score_candidates(np.clip(candidates, low, high).astype(np.float32))
            rewards = self._penalised(np.asarray(output.reward, dtype=np.float64), output.uncertainty)
            self._candidate_rewards = rewards.reshape(len(actions), self.num_candidates)
        self.venv.step_async(np.clip(trajectories, low, high).astype(np.float32))

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        u = np.array([info.get("uncertainty", np.nan) for info in infos], dtype=np.float64)
        rewards = self._penalised(rewards, u)
        if self._candidate_rewards is not None:
            for info, row in zip(infos, self._candidate_rewards):
                info["candidate_rewards"] = row
            self._candidate_rewards = None
        return obs, rewards, dones, infos
