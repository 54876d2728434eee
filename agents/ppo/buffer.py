"""A rollout buffer that keeps one log-probability per sampling decision (DPPO), not one per environment step."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.type_aliases import TensorDict


class DenoisingRolloutBufferSamples(NamedTuple):
    """SB3's `DictRolloutBufferSamples` plus the learned env's rewards of every candidate plan `(B, M)`."""

    observations: TensorDict
    actions: torch.Tensor
    old_values: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    candidate_rewards: torch.Tensor


class DenoisingRolloutBuffer(DictRolloutBuffer):
    """`DictRolloutBuffer` whose `log_probs` are `(buffer, n_envs, D)`: one per decision of the inner MDP.

    SB3's PPO forms one ratio per environment step; DPPO forms one per (environment step, denoising step), so the
    old log-probabilities must survive per decision. Everything else (GAE over environment steps) is unchanged.
    With `num_candidates = M > 0` it also keeps each step's rewards of all M candidate plans, written by
    `DiffusionPPO` through `add_candidate_rewards` just before SB3's `add` of that step.

    :param num_decisions: D, the core's `num_decisions` (its K denoising steps and any discrete choice).
    :param num_candidates: M, candidate plans scored per step (0: none).
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        device="auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
        num_decisions: int = 2,
        num_candidates: int = 0,
    ) -> None:
        self.num_decisions = int(num_decisions)
        self.num_candidates = int(num_candidates)
        super().__init__(buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs)

    def reset(self) -> None:
        super().reset()
        self.log_probs = np.zeros((self.buffer_size, self.n_envs, self.num_decisions), dtype=np.float32)
        self.candidate_rewards = np.full((self.buffer_size, self.n_envs, self.num_candidates), np.nan, dtype=np.float32)

    def add_candidate_rewards(self, rewards: np.ndarray) -> None:
        """The candidate rewards `(n_envs, M)` of the step that the next `add` stores."""
        rewards = np.asarray(rewards, dtype=np.float32)
        if rewards.shape != (self.n_envs, self.num_candidates):
            expected = (self.n_envs, self.num_candidates)
            raise ValueError(f"candidate rewards must have shape {expected}, got {rewards.shape}")
        if self.pos >= self.buffer_size:
            raise RuntimeError("the rollout buffer is full: candidate rewards arrived without a step to store")
        self.candidate_rewards[self.pos] = rewards

    def add(self, obs, action, reward, episode_start, value, log_prob) -> None:  # type: ignore[override]
        if self.num_candidates and np.isnan(self.candidate_rewards[self.pos]).any():
            raise RuntimeError(f"step {self.pos} of the rollout has no candidate rewards; the env must report "
                               "info['candidate_rewards'] (ChainActionVecEnv(num_candidates=M))")
        log_prob = log_prob.reshape(self.n_envs, self.num_decisions)
        # The parent writes `log_prob` into `self.log_probs[pos]`, which now has the per-step shape.
        super().add(obs, action, reward, episode_start, value, log_prob)

    def get(self, batch_size: int | None = None):  # type: ignore[override]
        if not self.generator_ready:  # the parent flattens its own arrays (buffer, envs) -> (buffer * envs) once
            self.candidate_rewards = self.swap_and_flatten(self.candidate_rewards)
        yield from super().get(batch_size)

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> DenoisingRolloutBufferSamples:  # type: ignore[override]
        samples = super()._get_samples(batch_inds, env)
        return DenoisingRolloutBufferSamples(
            *samples._replace(old_log_prob=self.to_torch(self.log_probs[batch_inds])),
            candidate_rewards=self.to_torch(self.candidate_rewards[batch_inds]),
        )
