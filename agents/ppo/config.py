"""One typed config for close-loop RL of the diffusion planner (CleanRL-style: every knob in one dataclass)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class RLConfig:
    """DPPO-style PPO on the learned environment.

    :param reward_model: what the env's step function is: `rwm` (default), `epdms` (the rule-based ablation),
        any registered name, or a checkpoint folder.
    :param denoising_steps: K, the denoising steps that form the inner MDP (all of the planner's inference steps
        by default: the truncated DDIM uses 2).
    :param min_sampling_std: floor of the per-step std when sampling (exploration), normalised units.
    :param min_logprob_std: floor of the std when evaluating log-probabilities (stability).
    :param execute_mean: execute the last denoising step's mean (the predicted `x_0`) rather than a sample around it;
        exploration comes from the earlier steps and the mode choice (`agents.ppo.vla_core.VLACore`).
    :param mode_temperature: temperature of the softmax over mode confidences that the executed mode is drawn from.
    :param denoising_gamma: advantage at denoising step k is scaled by gamma^(K-k-1): early noisy steps count less.
    :param clip_range: PPO clip of the per-step ratio.
    :param bc_coef: weight of the KL regulariser toward the frozen imitation policy (0 switches it off).
    :param mode_beta: the all-mode update (`agents.ppo.algorithm.DiffusionPPO`): the env scores every mode's plan of
        each visited scene and the mode choice is fitted to pi* ∝ pi_IL · exp(reward / mode_beta), the optimum of
        E[r] − mode_beta · KL(pi || pi_IL). None switches it off (the mode choice is then one more PPO ratio).
    :param mode_coef: weight of that update's cross-entropy in the loss.
    :param mode_advantage: per-mode advantages for the denoising steps (needs `mode_beta`): each mode's chain gets
        r_m − r̄_m, its plan's reward minus that of its noise-free plan (the env scores 2M plans per scene), weighted
        by pi* (`agents.ppo.algorithm.DiffusionPPO`). Off: every mode's noise shares the executed mode's advantage.
        Off by default because it measured lower (one IL VLA at 76.7, seed 0, 4,096 steps, 300 navtest scenes):
        rule-based reward 78.0 against 78.7 without it; RWM 75.9 against 76.6; with mode_coef 10, 75.7 against 77.2.
        Its updates are far smaller (approx. KL 0.02 against 0.28 for the summed 480-dimensional step column).
    :param mode_learning_rate: learning rate of the confidence head (the parameters only the mode choice reads)
        under the all-mode update; the rest of the planner keeps `learning_rate`.
    :param mode_head_only: the all-mode cross-entropy trains only the confidence head, not the decoder that also
        makes every mode's plan.
    :param uncertainty_penalty: reward -= coef * RWM uncertainty (0 switches it off).
    :param frozen_modules: VLA modules whose weights stay fixed: the scene encoders (`semantic` VLM and `bev`) by
        default, so RL fine-tunes the diffusion planner as DPPO and ReCogDrive do, and encoder outputs are cached;
        and the planner's `reference` plan, which imitation alone trains: trainable, the mode-choice gradient moved
        it and mode 0's chain with it (KL to the imitation policy 0.8 → 8; one seed, rule-based reward, navtest
        EPDMS 83.6 → 75.0).
    :param audit_every: rollouts between two reward-hacking audits (rule-based EPDMS on held-out scenes).
    :param audit_scenes: held-out scenes per audit.
    :param audit_divergence: stop early when (RWM EPDMS − rule EPDMS) grows by more than this over its first value.
    :param checkpoint_every: rollouts between two checkpoints (one is always written at the end).
    :param data_root: dataset root (None: `$OPENSCENE_DATA_ROOT` or the embedded synthetic data).
    :param num_threads: torch CPU threads (None: torch's default). One by default: with the encoders cached, the
        work is small batched decoder calls and numpy scoring, and two OpenMP threads on a busy 2-core machine ran
        5x slower than one (3.4 vs 18.6 env steps/s measured).
    """

    reward_model: Any = "rwm"
    split: str = "navtrain"
    audit_split: str = "navtest"
    max_scenes: int | None = None
    num_envs: int = 16
    n_steps: int = 8
    batch_size: int = 64
    n_epochs: int = 4
    total_timesteps: int = 4096
    learning_rate: float = 1e-4
    value_learning_rate: float = 1e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.1
    vf_coef: float = 0.5
    max_grad_norm: float = 1.0
    target_kl: float | None = None
    denoising_steps: int | None = None
    min_sampling_std: float = 0.02
    min_logprob_std: float = 0.05
    execute_mean: bool = True
    mode_temperature: float = 0.1
    denoising_gamma: float = 0.9
    bc_coef: float = 0.1
    mode_beta: float | None = 0.05
    mode_coef: float = 1.0
    mode_learning_rate: float = 1e-2
    mode_advantage: bool = False
    mode_head_only: bool = False
    uncertainty_penalty: float = 0.0
    frozen_modules: tuple[str, ...] = ("semantic", "bev", "reference")
    value_hidden: int = 128
    audit_every: int = 4
    audit_scenes: int = 32
    audit_divergence: float | None = 0.25
    checkpoint_every: int = 4
    seed: int = 0
    data_root: str | None = None
    num_threads: int | None = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frozen_modules = tuple(self.frozen_modules)
        positive = ("num_envs", "n_steps", "batch_size", "n_epochs", "total_timesteps", "audit_every", "checkpoint_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"RLConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.clip_range < 1:
            raise ValueError(f"RLConfig.clip_range must be in (0, 1), got {self.clip_range}")
        if self.mode_beta is not None and not self.mode_beta > 0:
            raise ValueError(f"RLConfig.mode_beta must be > 0 or None (off), got {self.mode_beta}")
        if self.mode_advantage and self.mode_beta is None:
            raise ValueError("RLConfig.mode_advantage needs mode_beta (its modes are weighted by the all-mode target)")
        if self.min_sampling_std <= 0 or self.min_logprob_std <= 0:
            raise ValueError("RLConfig.min_sampling_std and min_logprob_std must be > 0")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["frozen_modules"] = list(self.frozen_modules)
        if not isinstance(self.reward_model, (str, type(None))):
            out["reward_model"] = getattr(self.reward_model, "name", type(self.reward_model).__name__)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RLConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"RLConfig got unknown keys {unknown}")
        return cls(**data)
