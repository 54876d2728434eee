"""The VecEnv seen by `DiffusionPPO`: it accepts (chain ‖ trajectory) actions and sends the trajectory on."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecEnvWrapper

from agents.ppo.policy import NUM_POSES, TRAJECTORY_DIM, chain_action_space
from irlvla_env.envs.wrappers import SB3NavsimVecEnv


class ChainActionVecEnv(VecEnvWrapper):
    """Wraps an `SB3NavsimVecEnv` with raw trajectory actions (`flat_actions=False`).

    :param venv: the env; its action space is the trajectory Box.
    :param chain_size: width of the core's flattened chain (`DiffusionCore.chain_size`).
    :param uncertainty_penalty: subtract `coef * uncertainty` from the reward when the reward model reports one.
    """

    def __init__(self, venv: SB3NavsimVecEnv, chain_size: int, uncertainty_penalty: float = 0.0) -> None:
        if venv.flat_actions:
            raise ValueError("ChainActionVecEnv needs SB3NavsimVecEnv(..., flat_actions=False)")
        self.trajectory_space = venv.action_space
        self.uncertainty_penalty = float(uncertainty_penalty)
        super().__init__(venv, action_space=chain_action_space(chain_size, venv.action_space))

    def reset(self):
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        trajectories = np.asarray(actions)[:, -TRAJECTORY_DIM:].reshape(-1, NUM_POSES, 3)
        low, high = self.trajectory_space.low, self.trajectory_space.high
        self.venv.step_async(np.clip(trajectories, low, high).astype(np.float32))

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        if self.uncertainty_penalty:
            u = np.array([info.get("uncertainty", np.nan) for info in infos], dtype=np.float64)
            rewards = rewards - self.uncertainty_penalty * np.nan_to_num(u, nan=0.0).astype(rewards.dtype)
        return obs, rewards, dones, infos
