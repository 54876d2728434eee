"""The SB3 policy around a diffusion planner: chains as actions, per-step log-probabilities, a value head.

The action SB3 stores is the flattened denoising chain followed by the executed trajectory in metres, so the
rollout buffer keeps everything needed to re-score the chain under new weights, and the env wrapper only has
to read the trajectory off the end (no knowledge of the planner's normalisation). With `score_candidates`, every
mode's plan sits between the two, for the env to score them all.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from torch import nn

from agents.ppo.core import DiffusionCore

NUM_POSES = 8
TRAJECTORY_DIM = NUM_POSES * 3


def chain_action_space(chain_size: int, trajectory_space: spaces.Box, num_candidates: int = 0,
                       chain_bound: float = 10.0) -> spaces.Box:
    """Flat Box holding a chain (normalised samples, finite bounds for SB3's checks), then `num_candidates` plans,
    then the executed trajectory; plans have the trajectory's bounds (SB3 clips actions to them before the env)."""
    plans = num_candidates + 1
    low = np.concatenate([np.full(chain_size, -chain_bound, np.float32), np.tile(trajectory_space.low.ravel(), plans)])
    high = np.concatenate([np.full(chain_size, chain_bound, np.float32), np.tile(trajectory_space.high.ravel(), plans)])
    return spaces.Box(low=low, high=high, dtype=np.float32)


class ChainEvaluation(NamedTuple):
    """Stored chains re-scored under the current weights (and the frozen imitation policy's).

    :param values: `(B, 1)` value estimates.
    :param log_prob: `(B, num_decisions)` per-decision log-probabilities.
    :param kl: `(B,)` KL to the imitation policy on the visited states (zeros without the reference).
    :param mode_log_prob: `(B, M)` log-probabilities of every mode choice.
    :param reference_mode_log_prob: `(B, M)` the same under the imitation policy (None without the reference).
    """

    values: torch.Tensor
    log_prob: torch.Tensor
    kl: torch.Tensor
    mode_log_prob: torch.Tensor
    reference_mode_log_prob: torch.Tensor | None


class DiffusionPlannerPolicy(BasePolicy):
    """Actor = a `DiffusionCore`; critic = an MLP on the core's pooled scene context.

    :param core_factory: builds the trainable core (called once; `core.reference_copy()` becomes the reference).
    :param min_sampling_std: std floor when sampling chains.
    :param min_logprob_std: std floor when scoring chains.
    :param frozen_modules: sub-modules of the core whose weights stay fixed (`DiffusionCore.freeze`).
    :param value_hidden: hidden width of the value head.
    :param value_lr: learning rate of the value head (the actor uses the SB3 schedule).
    :param score_candidates: put every mode's plan into the action (`ChainActionVecEnv(num_candidates=M)`).
    :param mode_lr: learning rate of the core's `mode_parameters()` (None: the actor's). The optimizer's groups are
        the actor, the value head, then these.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Callable[[float], float],
        core_factory: Callable[[], DiffusionCore] | None = None,
        min_sampling_std: float = 0.05,
        min_logprob_std: float = 0.05,
        frozen_modules: tuple[str, ...] = (),
        value_hidden: int = 128,
        value_lr: float = 1e-3,
        score_candidates: bool = False,
        mode_lr: float | None = None,
        use_sde: bool = False,
        **kwargs: Any,
    ) -> None:
        if core_factory is None:
            raise ValueError("DiffusionPlannerPolicy needs policy_kwargs={'core_factory': ...}")
        super().__init__(observation_space, action_space, normalize_images=False, **kwargs)
        self.core_factory = core_factory
        self.core: DiffusionCore = core_factory()
        if not isinstance(self.core, nn.Module):
            raise TypeError("the diffusion core must be a torch.nn.Module")
        self.score_candidates = bool(score_candidates)
        candidates = self.core.num_candidates if self.score_candidates else 0
        expected = self.core.chain_size + (candidates + 1) * TRAJECTORY_DIM
        if action_space.shape != (expected,):
            raise ValueError(f"action space {action_space.shape} does not hold this core's chain ‖ {candidates} "
                             f"candidates ‖ trajectory ({expected},); build the env with ChainActionVecEnv(..., "
                             f"num_candidates={candidates})")
        self.min_sampling_std = float(min_sampling_std)
        self.min_logprob_std = float(min_logprob_std)
        self.frozen_modules = tuple(frozen_modules)
        self.core.freeze(self.frozen_modules)
        self.reference: DiffusionCore = self.core.reference_copy()
        self.value_lr = float(value_lr)
        self.value_net = nn.Sequential(
            nn.Linear(self.core.context_dim, value_hidden), nn.Tanh(), nn.Linear(value_hidden, value_hidden),
            nn.Tanh(), nn.Linear(value_hidden, 1),
        )
        self.mode_lr = mode_lr
        mode = self.core.mode_parameters() if mode_lr is not None else []
        actor = [p for p in self.core.parameters() if p.requires_grad and all(p is not q for q in mode)]
        groups = [{"params": actor, "lr": lr_schedule(1)}, {"params": self.value_net.parameters(), "lr": self.value_lr}]
        if mode:
            groups.append({"params": mode, "lr": float(mode_lr)})
        self.optimizer = torch.optim.Adam(groups)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(core_factory=self.core_factory, min_sampling_std=self.min_sampling_std,
                    min_logprob_std=self.min_logprob_std, frozen_modules=self.frozen_modules,
                    value_lr=self.value_lr, score_candidates=self.score_candidates, mode_lr=self.mode_lr)
        return data

    @property
    def num_steps(self) -> int:
        return int(self.core.num_steps)

    def _pack(self, context: Any, chain: torch.Tensor) -> torch.Tensor:
        parts = [chain]
        if self.score_candidates:
            parts.append(self.core.candidate_trajectories(context, chain).flatten(1))
        return torch.cat([*parts, self.core.trajectory(context, chain).flatten(1)], dim=1)

    def unpack_chain(self, actions: torch.Tensor) -> torch.Tensor:
        return actions[:, : self.core.chain_size]

    # --------------------------------------------------------------------------------------- SB3's interface
    def forward(self, obs: dict[str, torch.Tensor], deterministic: bool = False):
        context = self.core.encode(obs)
        chain = self.core.sample(context, deterministic, self.min_sampling_std)
        log_prob = self.core.score(context, chain, self.min_logprob_std).log_prob
        values = self.value_net(self.core.pooled(context).detach())
        return self._pack(context, chain), values, log_prob

    def _predict(self, observation: dict[str, torch.Tensor], deterministic: bool = False) -> torch.Tensor:
        context = self.core.encode(observation)
        return self._pack(context, self.core.sample(context, deterministic, self.min_sampling_std))

    def predict_values(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.value_net(self.core.pooled(self.core.encode(obs)).detach())

    def evaluate_actions(self, obs: dict[str, torch.Tensor], actions: torch.Tensor):
        """Values `(B, 1)`, per-decision log-probabilities `(B, D)`, and no entropy (PPO then uses -log_prob)."""
        evaluation = self.evaluate_chains(obs, actions, with_reference=False)
        return evaluation.values, evaluation.log_prob, None

    def evaluate_chains(self, obs: dict[str, torch.Tensor], actions: torch.Tensor,
                        with_reference: bool = True) -> ChainEvaluation:
        """Re-score stored chains; the reference (frozen imitation policy) on the same visited states.

        The KL is evaluated exactly on the visited chain states (a behaviour-cloning regulariser);
        `with_reference=False` skips the reference and reports a zero KL.
        """
        chain = self.unpack_chain(actions)
        context = self.core.encode(obs)
        score = self.core.score(context, chain, self.min_logprob_std)
        reference_modes = None
        if with_reference:
            with torch.no_grad():
                reference = self.reference.score(self.reference.encode(obs), chain, self.min_logprob_std)
            kl = self.core.kl(score, reference)
            reference_modes = self.reference.mode_log_probs(reference)
        else:
            kl = torch.zeros(len(chain), device=chain.device)
        values = self.value_net(self.core.pooled(context).detach())
        return ChainEvaluation(values, score.log_prob, kl, self.core.mode_log_probs(score), reference_modes)

    # ------------------------------------------------------------------------------------------- checkpoints
    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must hold: the core (all of it, so it exports alone) and the value head.

        The reference is left out on purpose: it is the imitation checkpoint the run started from.
        """
        state = {f"core.{k}": v for k, v in self.core.state_dict().items()}
        state.update({f"value_net.{k}": v for k, v in self.value_net.state_dict().items()})
        return state

    def load_trained_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `trained_state_dict`; strict, so a checkpoint of another architecture fails loudly."""
        unknown = sorted(k for k in state if not k.startswith(("core.", "value_net.")))
        if unknown:
            raise ValueError(f"policy checkpoint has unexpected keys {unknown[:5]}")
        self.core.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("core.")}, strict=True)
        self.value_net.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("value_net.")}, strict=True)
