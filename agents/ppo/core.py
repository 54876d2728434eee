"""What PPO needs from a diffusion planner, as a small protocol, so the SB3 policy does not know the VLA's insides.

A *chain* is everything the planner sampled to produce one trajectory, flattened to `(B, chain_size)`: the
samples `x_K, …, x_0` of the inner denoising MDP (and, for a multi-mode planner, which mode was executed). Every
sampling decision in it has a closed-form probability under the current weights — a Gaussian per denoising step,
a categorical for a mode choice — so PPO can re-score a stored chain after each update (DPPO). `score` returns
one log-probability per *decision* (each denoising step, then the mode choice), because DPPO forms one clipped
ratio per (environment step, denoising step); a categorical choice gets its own ratio so that a 24-dimensional
Gaussian step does not swamp it.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, Sequence

import torch


class ChainScore(NamedTuple):
    """A stored chain re-scored under some weights.

    :param log_prob: `(B, num_decisions)` log-probability of each sampling decision.
    :param params: the distribution parameters behind it, for `DiffusionCore.kl` (core-specific keys).
    """

    log_prob: torch.Tensor
    params: dict[str, torch.Tensor]


class DiffusionCore(Protocol):
    """A diffusion planner seen as a stochastic policy over denoising chains (an `nn.Module` in practice)."""

    num_steps: int  # K, the denoising steps of the inner MDP
    num_decisions: int  # columns of `ChainScore.log_prob`
    num_modes: int  # M, the plans a discrete mode choice picks from (1 for a single-mode planner)
    num_candidates: int  # plans `candidate_trajectories` returns: M, or 2M with each mode's noise-free plan
    chain_size: int  # width of a flattened chain
    context_dim: int  # width of `pooled(context)`, the value head's input

    def encode(self, observations: dict[str, torch.Tensor]) -> Any:
        """Scene context, computed once per observation and reused by every denoising step."""

    def pooled(self, context: Any) -> torch.Tensor:
        """`(B, context_dim)` summary of the context for the value head."""

    def sample(self, context: Any, deterministic: bool, min_std: float) -> torch.Tensor:
        """A chain `(B, chain_size)`; deterministic follows the means and the most confident mode."""

    def score(self, context: Any, chain: torch.Tensor, min_std: float) -> ChainScore:
        """Per-decision log-probabilities of a stored chain under the current weights, stds floored at `min_std`."""

    def decision_weights(self, denoising_gamma: float) -> torch.Tensor:
        """`(num_decisions,)` advantage weights: DPPO's denoising discount, early noisy steps counting less."""

    def kl(self, score: ChainScore, reference: ChainScore) -> torch.Tensor:
        """`(B,)` KL between the current and the reference policy, summed over the chain's visited states."""

    def trajectory(self, context: Any, chain: torch.Tensor) -> torch.Tensor:
        """The executed `(B, 8, 3)` plan in metres/radians, ego frame."""

    def candidate_trajectories(self, context: Any, chain: torch.Tensor) -> torch.Tensor:
        """`(B, num_candidates, 8, 3)`: the plan each of the M modes would have executed (the all-mode update scores
        them all), then, where the core keeps them, each mode's noise-free plan (the per-mode baselines)."""

    def mode_parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters that only the mode choice reads (they may learn at their own rate)."""

    def mode_log_probs(self, score: ChainScore) -> torch.Tensor:
        """`(B, M)` log-probabilities of the mode choice at the scored chain's states."""

    def freeze(self, names: Sequence[str]) -> None:
        """Fix the weights of the named sub-modules (they get no gradient and stay in eval mode)."""

    def reference_copy(self) -> "DiffusionCore":
        """A frozen copy of the current weights: the imitation policy a KL regulariser pulls toward.

        A core may share its frozen sub-modules with the copy instead of duplicating them.
        """
