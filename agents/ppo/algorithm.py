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

    Per-mode advantages (`mode_advantage`, on top of the all-mode update): the executed mode's advantage says
    nothing about the noise the other M - 1 chains drew, yet a step's log-probability sums all M. Instead each mode's
    Gaussian steps form their own ratios (a core with `per_mode=True`) with the advantage r_m − r̄_m, where r̄_m is
    the reward of the same mode's noise-free plan (every step at its mean, from the same noised anchor; a core with
    `noise_free_plans=True` puts those M plans after the sampled ones, so the env scores 2M): a control variate that
    removes the difference between modes and keeps only what the sampled noise changed. Modes are weighted by the
    all-mode target pi*, so the plans the policy will pick improve first.

    :param denoising_gamma: discount over denoising steps (1 = all steps equal).
    :param bc_coef: weight of the KL to the frozen imitation policy.
    :param mode_beta: beta of the all-mode update (None: off, the mode choice is one more PPO ratio). Needs the env's
        `candidate_rewards` and a policy with `score_candidates=True`.
    :param mode_coef: weight of the all-mode cross-entropy in the loss.
    :param mode_advantage: per-mode advantages for the denoising steps (needs `mode_beta`).
    :param mode_head_only: the all-mode cross-entropy trains only the confidence head (`core.mode_parameters()`),
        not the decoder it shares with the plans; otherwise its gradient also moves every mode's plan.
    """

    def __init__(self, policy: Any, env: Any, denoising_gamma: float = 0.9, bc_coef: float = 0.0,
                 mode_beta: float | None = None, mode_coef: float = 1.0, mode_advantage: bool = False,
                 mode_head_only: bool = False, **kwargs: Any) -> None:
        self.denoising_gamma = float(denoising_gamma)
        self.bc_coef = float(bc_coef)
        if mode_beta is not None and not mode_beta > 0:
            raise ValueError(f"DiffusionPPO mode_beta must be > 0 or None, got {mode_beta}")
        self.mode_beta = None if mode_beta is None else float(mode_beta)
        self.mode_coef = float(mode_coef)
        if mode_advantage and self.mode_beta is None:
            raise ValueError("DiffusionPPO(mode_advantage=True) needs mode_beta: its modes are weighted by pi*")
        self.mode_advantage = bool(mode_advantage)
        self.mode_head_only = bool(mode_head_only)
        self.minibatch_stats: dict[str, list[float]] = {}  # per-minibatch figures of the last `train()`
        policy_kwargs = dict(kwargs.get("policy_kwargs") or {})
        decisions = policy_kwargs.pop("num_decisions", None)
        modes = policy_kwargs.pop("num_modes", 0)
        if decisions is None:
            raise ValueError("DiffusionPPO needs policy_kwargs['num_decisions'] (the core's) to size its rollout buffer")
        if self.mode_beta is not None and not modes:
            raise ValueError("DiffusionPPO(mode_beta=...) needs policy_kwargs['num_modes'] (the core's M)")
        self.num_modes = int(modes)
        candidates = modes * (2 if self.mode_advantage else 1) if self.mode_beta is not None else 0
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

    def _mode_target(self, evaluation: Any, candidate_rewards: torch.Tensor) -> torch.Tensor:
        """pi* ∝ pi_IL · exp(r / beta) `(B, M)` over the sampled plans' rewards, per scene."""
        rewards = candidate_rewards[:, : self.num_modes]
        return torch.softmax(evaluation.reference_mode_log_prob + rewards / self.mode_beta, dim=-1)

    def _mode_advantages(self, target: torch.Tensor, candidate_rewards: torch.Tensor,
                         step_weight: torch.Tensor) -> torch.Tensor:
        """`(B, D)` advantages of the per-mode layout: column k·M + j gets pi*(j)·(r_j − r̄_j)·gamma_k, scaled by
        the minibatch's pi*-weighted RMS; the mode-choice column 0."""
        m = self.num_modes
        advantage = candidate_rewards[:, :m] - candidate_rewards[:, m:]
        rms = ((target * advantage**2).sum() / target.sum()).sqrt()
        weighted = target * advantage / (rms + 1e-8)
        steps = (len(step_weight) - 1) // m
        columns = weighted.repeat(1, steps) * step_weight[None, :-1]
        return torch.cat([columns, torch.zeros_like(columns[:, :1])], dim=1)

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
        if self.mode_advantage and (len(step_weight) - 1) % self.num_modes:
            raise ValueError(f"mode_advantage needs a per-mode core (decisions = steps·M + 1); this one has "
                             f"{len(step_weight)} decisions for M={self.num_modes}")
        gaussian_steps = (len(step_weight) - 1) // (self.num_modes if self.mode_advantage else 1)
        pg_losses, value_losses, bc_losses, mode_losses, clip_fractions, kls = [], [], [], [], [], []
        continue_training = True
        for epoch in range(self.n_epochs):
            for data in self.rollout_buffer.get(self.batch_size):
                evaluation = policy.evaluate_chains(
                    data.observations, data.actions, with_reference=self.bc_coef > 0 or self.mode_beta is not None
                )
                values, log_prob = evaluation.values, evaluation.log_prob
                target = None
                if self.mode_beta is not None:
                    target = self._mode_target(evaluation, data.candidate_rewards)
                if self.mode_advantage:
                    adv = self._mode_advantages(target, data.candidate_rewards, step_weight)
                else:
                    advantages = data.advantages
                    if self.normalize_advantage and len(advantages) > 1:
                        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                    adv = advantages[:, None] * step_weight[None, :]
                log_ratio = log_prob - data.old_log_prob  # (B, decisions)
                ratio = torch.exp(log_ratio)
                surrogate = torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range))
                # per-mode columns are pi*-weighted: their sum over modes is one step's term
                policy_loss = -surrogate.sum(dim=1).mean() / (gaussian_steps + 1)
                value_loss = F.mse_loss(data.returns, values.flatten())
                bc_loss = evaluation.kl.mean()
                loss = policy_loss + self.vf_coef * value_loss + self.bc_coef * bc_loss
                head_loss = None  # a term that only the confidence head learns from (`mode_head_only`)
                if target is not None:  # cross-entropy of the mode choice against pi*
                    cross_entropy = -(target * evaluation.mode_log_prob).sum(dim=-1).mean()
                    mode_losses.append(cross_entropy.item())
                    if self.mode_head_only:
                        head_loss = self.mode_coef * cross_entropy
                    else:
                        loss = loss + self.mode_coef * cross_entropy
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
                loss.backward(retain_graph=head_loss is not None)
                if head_loss is not None:  # accumulates into the head's gradients only
                    head_loss.backward(inputs=policy.core.mode_parameters())
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
