"""A rollout buffer that keeps one log-probability per sampling decision (DPPO), not one per environment step."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples


class DenoisingRolloutBuffer(DictRolloutBuffer):
    """`DictRolloutBuffer` whose `log_probs` are `(buffer, n_envs, D)`: one per decision of the inner MDP.

    SB3's PPO forms one ratio per environment step; DPPO forms one per (environment step, denoising step), so the
    old log-probabilities must survive per decision. Everything else (GAE over environment steps) is unchanged.

    :param num_decisions: D, the core's `num_decisions` (its K denoising steps and any discrete choice).
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
    ) -> None:
        self.num_decisions = int(num_decisions)
        super().__init__(buffer_size, observation_space, action_space, device, gae_lambda, gamma, n_envs)

    def reset(self) -> None:
        super().reset()
        self.log_probs = np.zeros((self.buffer_size, self.n_envs, self.num_decisions), dtype=np.float32)

    def add(self, obs, action, reward, episode_start, value, log_prob) -> None:  # type: ignore[override]
        log_prob = log_prob.reshape(self.n_envs, self.num_decisions)
        # The parent writes `log_prob` into `self.log_probs[pos]`, which now has the per-step shape.
        super().add(obs, action, reward, episode_start, value, log_prob)

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> DictRolloutBufferSamples:  # type: ignore[override]
        samples = super()._get_samples(batch_inds, env)
        return samples._replace(old_log_prob=self.to_torch(self.log_probs[batch_inds]))
