"""What PPO needs from a diffusion planner, as a small protocol, so the SB3 policy does not know the VLA's insides.

A *chain* is the sequence of samples `x_K, …, x_0` of the inner denoising MDP, `(B, K+1, 8, 3)` in the planner's
normalised space. Each step `x_k → x_{k-1}` is Gaussian with the scheduler's mean and a clipped std, so the
log-probability of a whole chain under the current weights is closed-form (DPPO).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch


class DiffusionCore(Protocol):
    """A diffusion planner seen as a stochastic policy over denoising chains (an `nn.Module` in practice)."""

    num_steps: int  # K
    context_dim: int  # width of `pooled(context)`, the value head's input

    def encode(self, observations: dict[str, torch.Tensor]) -> Any:
        """Scene context, computed once per observation and reused by every denoising step."""

    def pooled(self, context: Any) -> torch.Tensor:
        """`(B, context_dim)` summary of the context for the value head."""

    def sample(self, context: Any, deterministic: bool, min_std: float) -> torch.Tensor:
        """A chain `(B, K+1, 8, 3)`; deterministic follows the means."""

    def step_gaussians(self, context: Any, chain: torch.Tensor, min_std: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step means `(B, K, 8, 3)` and stds `(B, K, 8, 3)` of `x_{k-1}` given `x_k`, under current weights."""

    def trajectory(self, context: Any, x0: torch.Tensor) -> torch.Tensor:
        """`(B, 8, 3)` metres/radians in the ego frame from the final sample."""

    def freeze(self, names: Sequence[str]) -> None:
        """Fix the weights of the named sub-modules (they get no gradient and stay in eval mode)."""

    def reference_copy(self) -> "DiffusionCore":
        """A frozen copy of the current weights: the imitation policy a KL regulariser pulls toward.

        A core may share its frozen sub-modules with the copy instead of duplicating them.
        """


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Log-density summed over the pose dims: `(B, K, 8, 3)` → `(B, K)`."""
    var = std * std
    log = -0.5 * ((x - mean) ** 2 / var + torch.log(2 * torch.pi * var))
    return log.flatten(2).sum(-1)


def chain_log_prob(core: DiffusionCore, context: Any, chain: torch.Tensor, min_std: float) -> torch.Tensor:
    """Per-step log-probabilities `(B, K)` of a chain under the core's current weights."""
    mean, std = core.step_gaussians(context, chain, min_std)
    return gaussian_log_prob(chain[:, 1:], mean, std)
