"""Reward-hacking audit: RL on a learned reward can exploit the reward model's blind spots.

Every `every` rollouts the current policy plans deterministically on held-out scenes; the plans are scored twice,
by the reward model RL optimises (the RWM) and by the rule-based EPDMS. Both go to the logger and to `history`.
If the learned model's EPDMS keeps rising while the rule-based one does not (their gap grows past `divergence`
over the first audit's gap), training stops early. The gap compares EPDMS with EPDMS, so it means the same
whether the RWM's `reward` is its composed EPDMS or its IRL head.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from agents.ppo.policy import TRAJECTORY_DIM
from irlvla_env.envs.scene_pool import ScenePool
from irlvla_env.envs.wrappers import to_sb3_observation
from irlvla_env.observations import batch_observations
from irlvla_env.rewards import RewardModel


@dataclass
class AuditRecord:
    timesteps: int
    reward_model: float  # mean reward the RL objective sees for the plans
    model_epdms: float  # mean EPDMS the reward model predicts for the same plans
    rule_epdms: float  # mean rule-based EPDMS of the same plans

    @property
    def gap(self) -> float:
        return self.model_epdms - self.rule_epdms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RewardHackingAudit(BaseCallback):
    """Audits at the start of every `every`-th rollout (i.e. after the previous update) and when training ends.

    :param pool: held-out scenes.
    :param reward_model: the reward RL optimises.
    :param rule: the rule-based EPDMS.
    :param tokens: which scenes to plan on.
    :param every: rollouts between audits.
    :param divergence: stop when the model-minus-rule EPDMS gap grows by more than this (None: never stop).
    :param history: records of an earlier run segment (when resuming).
    """

    def __init__(self, pool: ScenePool, reward_model: RewardModel, rule: RewardModel, tokens: list[str],
                 every: int = 4, divergence: float | None = 0.25, history: list[AuditRecord] | None = None,
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        if not tokens:
            raise ValueError("RewardHackingAudit needs at least one held-out scene token")
        self.pool, self.reward_model, self.rule = pool, reward_model, rule
        self.tokens, self.every, self.divergence = list(tokens), int(every), divergence
        self.history: list[AuditRecord] = list(history or [])
        self.stopped_early = False

    def plans(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Deterministic plans `(N, 8, 3)` of the current policy on the audit scenes, with their raw observations."""
        raw = batch_observations([self.pool.observation(t) for t in self.tokens])
        actions, _ = self.model.policy.predict(to_sb3_observation(raw, batched=True), deterministic=True)
        return raw, np.asarray(actions)[:, -TRAJECTORY_DIM:].reshape(-1, 8, 3)

    def audit(self) -> AuditRecord:
        raw, plans = self.plans()
        learned = self.reward_model.predict(raw, plans, self.tokens)
        rule = float(np.mean(self.rule.predict(raw, plans, self.tokens).epdms))
        record = AuditRecord(int(self.num_timesteps), float(np.mean(learned.reward)), float(np.mean(learned.epdms)), rule)
        self.history.append(record)
        self.logger.record("audit/reward_model", record.reward_model)
        self.logger.record("audit/model_epdms", record.model_epdms)
        self.logger.record("audit/rule_epdms", record.rule_epdms)
        if self.divergence is not None and record.gap - self.history[0].gap > self.divergence:
            self.stopped_early = True
            self.logger.record("audit/stopped_early", 1)
        return record

    def _audit_once(self) -> None:
        if not (self.history and self.history[-1].timesteps == self.num_timesteps):
            self.audit()

    def _on_rollout_start(self) -> None:
        rollout = self.model.n_steps * self.model.n_envs
        if (self.num_timesteps // rollout) % self.every == 0:
            self._audit_once()

    def _on_training_end(self) -> None:
        self._audit_once()

    def _on_step(self) -> bool:
        return not self.stopped_early
