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

    The all-mode update (`mode_beta`): a learned env scores every mode's plan of each visited scene
    (`ChainActionVecEnv(num_candidates=M)`), so the mode choice, a contextual bandit, gets full information instead
    of one sampled arm. Its target is then known in closed form per scene, the optimum of
    E[r] − beta·KL(pi || pi_IL): pi* ∝ pi_IL · exp(r / beta), and the mode choice is fitted to it by cross-entropy
    (an MPO-style improvement step with an exact E-step); it replaces the mode choice's PPO ratio. Measured from the
    same imitation VLA (EPDMS 80.9, RWM reward, seed 0, 300 navtest scenes): one sampled arm per scene 79.7 after
    2,048 steps; the all-mode update 82.3 after 4,096 steps with the confidence head at lr 1e-2 (81.2 at 2,048;
    80.5 with the head at the planner's 1e-4, where only 2 % of the picks changed).

    :param denoising_gamma: discount over denoising steps (1 = all steps equal).
    :param bc_coef: weight of the KL to the frozen imitation policy.
    :param mode_beta: beta of the all-mode update (None: off, the mode choice is one more PPO ratio). Needs the env's
        `candidate_rewards` and a policy with `score_candidates=True`.
    :param mode_coef: weight of the all-mode cross-entropy in the loss.
    """

    def __init__(self, policy: Any, env: Any, denoising_gamma: float = 0.9, bc_coef: float = 0.0,
                 mode_beta: float | None = None, mode_coef: float = 1.0, **kwargs: Any) -> None:
        self.denoising_gamma = float(denoising_gamma)
        self.bc_coef = float(bc_coef)
        if mode_beta is not None and not mode_beta > 0:
            raise ValueError(f"DiffusionPPO mode_beta must be > 0 or None, got {mode_beta}")
        self.mode_beta = None if mode_beta is None else float(mode_beta)
        self.mode_coef = float(mode_coef)
        self.minibatch_stats: dict[str, list[float]] = {}  # per-minibatch figures of the last `train()`
        policy_kwargs = dict(kwargs.get("policy_kwargs") or {})
        decisions = policy_kwargs.pop("num_decisions", None)
        modes = policy_kwargs.pop("num_modes", 0)
        if decisions is None:
            raise ValueError("DiffusionPPO needs policy_kwargs['num_decisions'] (the core's) to size its rollout buffer")
        if self.mode_beta is not None and not modes:
            raise ValueError("DiffusionPPO(mode_beta=...) needs policy_kwargs['num_modes'] (the core's M)")
        candidates = modes if self.mode_beta is not None else 0
        policy_kwargs["score_candidates"] = bool(candidates)
        kwargs["policy_kwargs"] = policy_kwargs
        kwargs.setdefault("rollout_buffer_class", DenoisingRolloutBuffer)
        kwargs.setdefault("rollout_buffer_kwargs", {"num_decisions": int(decisions), "num_candidates": int(candidates)})
        super().__init__(policy, env, **kwargs)

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        """SB3 calls this after each env step and before storing the step: the moment to keep its candidate rewards."""
        super()._update_info_buffer(infos, dones)
        if self.mode_beta is not None:
            missing = [i for i, info in enumerate(infos) if "candidate_rewards" not in info]
            if missing:
                raise RuntimeError(f"mode_beta is set but sub-envs {missing} report no info['candidate_rewards']; "
                                   "wrap the env in ChainActionVecEnv(num_candidates=M)")
            self.rollout_buffer.add_candidate_rewards(np.stack([info["candidate_rewards"] for info in infos]))

    def _mode_loss(self, evaluation: Any, candidate_rewards: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the mode choice against pi* ∝ pi_IL · exp(r / beta), per scene."""
        target = torch.softmax(evaluation.reference_mode_log_prob + candidate_rewards / self.mode_beta, dim=-1)
        return -(target * evaluation.mode_log_prob).sum(dim=-1).mean()

    def train(self) -> None:
        policy: DiffusionPlannerPolicy = self.policy  # type: ignore[assignment]
        policy.set_training_mode(True)
        actor_lr = float(self.lr_schedule(self._current_progress_remaining))
        policy.optimizer.param_groups[0]["lr"] = actor_lr  # group 1 is the value head, at its own rate
        self.logger.record("train/learning_rate", actor_lr)
        clip_range = float(self.clip_range(self._current_progress_remaining))  # type: ignore[operator]
        step_weight = policy.core.decision_weights(self.denoising_gamma).to(self.device, torch.float32)
        if self.mode_beta is not None:
            step_weight[-1] = 0.0  # the mode choice learns from the all-mode target instead of its sampled ratio
        pg_losses, value_losses, bc_losses, mode_losses, clip_fractions, kls = [], [], [], [], [], []
        continue_training = True
        for epoch in range(self.n_epochs):
            for data in self.rollout_buffer.get(self.batch_size):
                evaluation = policy.evaluate_chains(
                    data.observations, data.actions, with_reference=self.bc_coef > 0 or self.mode_beta is not None
                )
                values, log_prob = evaluation.values, evaluation.log_prob
                advantages = data.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                log_ratio = log_prob - data.old_log_prob  # (B, decisions)
                ratio = torch.exp(log_ratio)
                adv = advantages[:, None] * step_weight[None, :]
                surrogate = torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range))
                policy_loss = -surrogate.mean()
                value_loss = F.mse_loss(data.returns, values.flatten())
                bc_loss = evaluation.kl.mean()
                loss = policy_loss + self.vf_coef * value_loss + self.bc_coef * bc_loss
                if self.mode_beta is not None:
                    mode_loss = self._mode_loss(evaluation, data.candidate_rewards)
                    loss = loss + self.mode_coef * mode_loss
                    mode_losses.append(mode_loss.item())
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
        if mode_losses:
            self.logger.record("train/mode_cross_entropy", float(np.mean(mode_losses)))
        self.logger.record("train/approx_kl", float(np.mean(kls)))
        self.logger.record("train/clip_fraction", float(np.mean(clip_fractions)))
        self.logger.record("train/explained_variance", float(explained))
        self.logger.record("train/clip_range", clip_range)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
