"""Running per-feature standardisation of the planner's ego-status input.

The ego history holds raw metres and m/s (poses of about -15 m, speeds of about 10 m/s ± 2). Fed raw, the ego MLP
sees one large common vector scaled by the speed, and its closing LayerNorm divides that scale out again, so every
scene gets nearly the same ego embedding and the mode scores can only learn the label marginal. Standardising
each feature by statistics of the training data turns the informative spread into O(1) inputs.

The statistics are buffers (saved with the weights). They are accumulated only when `update` is called — the
imitation loss does so — so that a PPO rollout and its update see the same normalisation.
"""

from __future__ import annotations

import torch
from torch import nn


class RunningStandardizer(nn.Module):
    """`(x - mean) / std` per feature, with mean and variance pooled over every batch passed to `update`."""

    def __init__(self, num_features: int, min_std: float = 1e-2):
        super().__init__()
        self.min_std = min_std
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("var", torch.ones(num_features))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Pool the statistics of `(N, num_features)` samples into the running ones (Chan et al.'s parallel form)."""
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"standardizer expects (N, {self.mean.shape[0]}) inputs, got {tuple(x.shape)}")
        n = float(x.shape[0])
        if n == 0:
            return
        x = x.to(self.mean.dtype)
        batch_mean, batch_var = x.mean(dim=0), x.var(dim=0, unbiased=False)
        total = float(self.count) + n
        delta = batch_mean - self.mean
        if float(self.count) == 0.0:
            self.mean.copy_(batch_mean)
            self.var.copy_(batch_var)
        else:
            old = float(self.count)
            self.mean.add_(delta * n / total)
            self.var.copy_((self.var * old + batch_var * n + delta**2 * old * n / total) / total)
        self.count.fill_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.var.sqrt().clamp(min=self.min_std)
