"""Reward-hacking audit: RL on a learned reward can exploit the reward model's blind spots.

Every `every` rollouts the current policy plans on held-out scenes; the plans are scored twice, by the reward
model RL optimises (the RWM) and by the rule-based EPDMS. Both go to the logger and to `history`. If the learned
reward keeps rising while the rule-based score does not (their gap grows past `divergence` over the first
audit's gap), training stops early.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from irlvla_env.envs.scene_pool import ScenePool
from irlvla_env.envs.wrappers import to_sb3_observation
from irlvla_env.observations import batch_observations
from irlvla_env.rewards import RewardModel


@dataclass
class AuditRecord:
    timesteps: int
    reward_model: float  # mean learned reward of the plans
    rule_epdms: float  # mean rule-based EPDMS of the same plans


class RewardHackingAudit(BaseCallback):
    """:param pool: held-out scenes. :param reward_model: the reward RL optimises. :param rule: the rule-based EPDMS.
    :param tokens: which scenes to plan on. :param every: rollouts between audits.
    :param divergence: stop when the reward-minus-rule gap grows by more than this (None: never stop)."""

    def __init__(self, pool: ScenePool, reward_model: RewardModel, rule: RewardModel, tokens: list[str],
                 every: int = 4, divergence: float | None = 0.25, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.pool, self.reward_model, self.rule = pool, reward_model, rule
        self.tokens, self.every, self.divergence = list(tokens), int(every), divergence
        self.history: list[AuditRecord] = []
        self.stopped_early = False
        self._rollouts = 0

    def plans(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Deterministic plans of the current policy on the audit scenes."""
        raw = batch_observations([self.pool.observation(t) for t in self.tokens])
        obs = to_sb3_observation(raw, batched=True)
        with torch.no_grad():
            actions, _ = self.model.policy.predict(obs, deterministic=True)
        return raw, np.asarray(actions)[:, -24:].reshape(-1, 8, 3)

    def audit(self) -> AuditRecord:
        raw, plans = self.plans()
        learned = float(np.mean(self.reward_model.predict(raw, plans, self.tokens).reward))
        rule = float(np.mean(self.rule.predict(raw, plans, self.tokens).epdms))
        record = AuditRecord(int(self.num_timesteps), learned, rule)
        self.history.append(record)
        self.logger.record("audit/reward_model", learned)
        self.logger.record("audit/rule_epdms", rule)
        return record

    def _on_training_start(self) -> None:
        self.audit()

    def _on_rollout_end(self) -> None:
        self._rollouts += 1
        if self._rollouts % self.every:
            return
        record = self.audit()
        first = self.history[0]
        growth = (record.reward_model - record.rule_epdms) - (first.reward_model - first.rule_epdms)
        if self.divergence is not None and growth > self.divergence:
            self.stopped_early = True

    def _on_step(self) -> bool:
        return not self.stopped_early
