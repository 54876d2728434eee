"""`DiffusionPPO`: Stable-Baselines3's PPO with DPPO's per-denoising-step ratios and a regulariser.

Only `train()` changes. Rollout collection, GAE over environment steps, logging and saving are SB3's own; the
policy (`DiffusionPlannerPolicy`) and the buffer (`DenoisingRolloutBuffer`) plug in through SB3's constructor
arguments.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import PPO
from stable_baselines3.common.utils import explained_variance

from agents.ppo.buffer import DenoisingRolloutBuffer
from agents.ppo.policy import DiffusionPlannerPolicy


class DiffusionPPO(PPO):
    """PPO over the two-level MDP of DPPO: each env step expands into K Gaussian denoising steps.

    The environment advantage of a step is broadcast to the core's decisions (K denoising steps, then any mode
    choice) and weighted by `core.decision_weights(denoising_gamma)` (`gamma^(K-k-1)` for step k); each
    (env step, decision) pair gets its own clipped ratio.

    :param denoising_gamma: discount over denoising steps (1 = all steps equal).
    :param bc_coef: weight of the KL to the frozen imitation policy.
    """

    def __init__(self, policy: Any, env: Any, denoising_gamma: float = 0.9, bc_coef: float = 0.0, **kwargs: Any) -> None:
        self.denoising_gamma = float(denoising_gamma)
        self.bc_coef = float(bc_coef)
        self.minibatch_stats: dict[str, list[float]] = {}  # per-minibatch figures of the last `train()`
        policy_kwargs = kwargs.get("policy_kwargs") or {}
        decisions = policy_kwargs.pop("num_decisions", None)
        if decisions is None:
            raise ValueError("DiffusionPPO needs policy_kwargs['num_decisions'] (the core's) to size its rollout buffer")
        kwargs["policy_kwargs"] = policy_kwargs
        kwargs.setdefault("rollout_buffer_class", DenoisingRolloutBuffer)
        kwargs.setdefault("rollout_buffer_kwargs", {"num_decisions": int(decisions)})
        super().__init__(policy, env, **kwargs)

    def train(self) -> None:
        policy: DiffusionPlannerPolicy = self.policy  # type: ignore[assignment]
        policy.set_training_mode(True)
        actor_lr = float(self.lr_schedule(self._current_progress_remaining))
        policy.optimizer.param_groups[0]["lr"] = actor_lr  # group 1 is the value head, at its own rate
        self.logger.record("train/learning_rate", actor_lr)
        clip_range = float(self.clip_range(self._current_progress_remaining))  # type: ignore[operator]
        step_weight = policy.core.decision_weights(self.denoising_gamma).to(self.device, torch.float32)
        pg_losses, value_losses, bc_losses, clip_fractions, kls = [], [], [], [], []
        continue_training = True
        for epoch in range(self.n_epochs):
            for data in self.rollout_buffer.get(self.batch_size):
                values, log_prob, kl_ref = policy.evaluate_chains(
                    data.observations, data.actions, with_reference=self.bc_coef > 0
                )
                advantages = data.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                log_ratio = log_prob - data.old_log_prob  # (B, decisions)
                ratio = torch.exp(log_ratio)
                adv = advantages[:, None] * step_weight[None, :]
                surrogate = torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range))
                policy_loss = -surrogate.mean()
                value_loss = F.mse_loss(data.returns, values.flatten())
                bc_loss = kl_ref.mean()
                loss = policy_loss + self.vf_coef * value_loss + self.bc_coef * bc_loss
                with torch.no_grad():  # k3 estimator of KL(old || new), per (env step, denoising step)
                    approx_kl = float(((ratio - 1) - log_ratio).mean())
                pg_losses.append(policy_loss.item())
                value_losses.append(value_loss.item())
                bc_losses.append(bc_loss.item())
                clip_fractions.append(float((torch.abs(ratio - 1) > clip_range).float().mean()))
                kls.append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    break
                policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), self.max_grad_norm)
                policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break
        self.minibatch_stats = {"approx_kl": kls, "clip_fraction": clip_fractions, "policy_loss": pg_losses}
        explained = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self.logger.record("train/policy_gradient_loss", float(np.mean(pg_losses)))
        self.logger.record("train/value_loss", float(np.mean(value_losses)))
        self.logger.record("train/bc_kl", float(np.mean(bc_losses)))
        self.logger.record("train/approx_kl", float(np.mean(kls)))
        self.logger.record("train/clip_fraction", float(np.mean(clip_fractions)))
        self.logger.record("train/explained_variance", float(explained))
        self.logger.record("train/clip_range", clip_range)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
