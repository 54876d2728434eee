"""The Reward World Model's objective: maximum-entropy IRL over each scene's candidates plus sub-score supervision.

**Maximum-entropy IRL.** Under MaxEnt IRL the demonstrator picks trajectory τ with probability ∝ exp(r(τ)). Per scene
the partition function is estimated on the candidate set C (vocabulary, perturbations, policy samples and the
demonstration itself), so the negative log-likelihood of the demonstration is

    L_irl = -r(τ_demo)/T + log Σ_{τ ∈ C} exp(r(τ)/T),

minimised when the demonstration dominates the sampled candidates. This is what "learned by inverse RL" buys: a
reward for what humans do that no hand-written metric covers.

**Supervision from the rule-based scorer.** Each candidate carries the scorer's sub-scores, so heads are trained as
in Hydra-MDP: cross-entropy for the 3-class NC and DDC ({0, 0.5, 1}), binary cross-entropy for DAC, TLC, TTC, LK, HC,
EC (EC only when labels come from two-stage scoring), and for EP a regression on [0, 1] (BCE against the soft target:
the same minimiser as MSE, without MSE's vanishing gradient through a saturated sigmoid). Two terms shape the
composed EPDMS directly: an MSE to the true EPDMS (what Pearson measures) and a listwise ranking loss (cross-entropy
between softmaxes of true and predicted EPDMS over the candidates: what picking the best candidate needs).

Ensemble members see bootstrap-reweighted scenes (Poisson(1) weights), so their disagreement estimates uncertainty.
Every part has its own weight; a zero weight switches it off (the ablation variants).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from irlvla_env.rewards import SUBSCORE_NAMES
from reward_models.model import BINARY, THREE_CLASS, RWMPrediction

LABEL_INDEX = {name: i for i, name in enumerate(SUBSCORE_NAMES)}


@dataclass
class RWMLossConfig:
    """Weights of the objective's parts (0 switches a part off).

    :param irl_weight: maximum-entropy IRL term on the IRL reward head.
    :param supervised_weight: sub-score heads (CE, BCE, EP regression), scaled per head by `subscore_weights`.
    :param map_weight: auxiliary BCE of the BEV maps (the cost-volume head's, or the attention head's with
        `RWMConfig.map_head`) against rasterised drivable area, red lights and occupancy (`scene_targets.py`;
        training only).
    :param epdms_weight: MSE of the composed EPDMS to the scorer's EPDMS.
    :param ranking_weight: listwise ranking of candidates by composed EPDMS.
    :param irl_temperature: T of the IRL softmax.
    :param ranking_temperature: temperature of both softmaxes of the ranking loss (EPDMS units).
    :param subscore_weights: per-head multipliers of the supervised term (NC … EC).
    :param bootstrap: Poisson(1) scene weights per ensemble member.
    :param ec_available: train the EC head and compose EPDMS with it (two-stage labels only).
    """

    irl_weight: float = 1.0
    supervised_weight: float = 1.0
    map_weight: float = 1.0
    epdms_weight: float = 4.0
    ranking_weight: float = 0.5
    irl_temperature: float = 1.0
    ranking_temperature: float = 0.05
    subscore_weights: dict[str, float] = field(default_factory=lambda: {name: 1.0 for name in SUBSCORE_NAMES})
    bootstrap: bool = True
    ec_available: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.subscore_weights) - set(SUBSCORE_NAMES))
        if unknown:
            raise ValueError(f"RWMLossConfig.subscore_weights has unknown sub-scores {unknown}")
        weights = (self.irl_weight, self.supervised_weight, self.epdms_weight, self.ranking_weight)
        if min(weights) < 0 or max(weights) == 0:
            raise ValueError(f"RWMLossConfig weights must be >= 0 with at least one > 0, got {weights}")
        if self.map_weight < 0:
            raise ValueError(f"RWMLossConfig.map_weight must be >= 0, got {self.map_weight}")


def max_entropy_irl_loss(reward: torch.Tensor, demo_index: int = 0, temperature: float = 1.0) -> torch.Tensor:
    """`reward (S, K, M)` -> `(S, M)` negative log-probability of the demonstration under softmax over K."""
    return -(reward / temperature).log_softmax(dim=1)[:, demo_index]


def ranking_loss(predicted: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """ListNet over candidates: `predicted (S, K, M)`, `target (S, K)` -> `(S, M)`."""
    target_dist = (target / temperature).softmax(dim=1)[..., None]
    return -(target_dist * (predicted / temperature).log_softmax(dim=1)).sum(dim=1)


def map_loss(static_logits: torch.Tensor, dynamic_logits: torch.Tensor, static_targets: torch.Tensor,
             dynamic_targets: torch.Tensor) -> torch.Tensor:
    """BCE of the first map channels against the scene targets: static `(S, C_s >= 2, G, G)` vs `(S, 2, G, G)`,
    dynamic `(S, T, C_d >= 1, g, g)` vs occupancy `(S, T, g, g)`."""
    static = F.binary_cross_entropy_with_logits(static_logits[:, : static_targets.shape[1]], static_targets.float())
    dynamic = F.binary_cross_entropy_with_logits(dynamic_logits[:, :, 0], dynamic_targets.float())
    return static + dynamic


def rwm_loss(
    prediction: RWMPrediction,
    labels: torch.Tensor,
    epdms: torch.Tensor,
    config: RWMLossConfig,
    demo_index: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts for one batch.

    :param prediction: head outputs with logits `(S, K, M, 14)`.
    :param labels: `(S, K, 9)` scorer sub-scores in `SUBSCORE_NAMES` order (NaN = unavailable, masked).
    :param epdms: `(S, K)` scorer EPDMS.
    """
    logits = prediction.logits
    s, k, m, _ = logits.shape
    if labels.shape != (s, k, len(SUBSCORE_NAMES)) or epdms.shape != (s, k):
        raise ValueError(f"labels {tuple(labels.shape)} / epdms {tuple(epdms.shape)} do not match logits {tuple(logits.shape)}")
    if config.bootstrap and m > 1 and s > 1:
        scene_weight = torch.poisson(torch.ones(s, m, device=logits.device), generator=generator)
        scene_weight = scene_weight / scene_weight.mean(0, keepdim=True).clamp_min(1e-6)
    else:
        scene_weight = torch.ones(s, m, device=logits.device)

    def reduce(per: torch.Tensor) -> torch.Tensor:  # (S, M) or (S, K, M) -> scalar, bootstrap-weighted
        if per.dim() == 3:
            per = per.mean(1)
        return (per * scene_weight).mean()

    parts: dict[str, torch.Tensor] = {}
    if config.supervised_weight > 0:
        supervised = logits.new_zeros(())
        for name in THREE_CLASS:
            target = (labels[..., LABEL_INDEX[name]] * 2).round().clamp(0, 2)
            valid = torch.isfinite(labels[..., LABEL_INDEX[name]])
            ce = F.cross_entropy(
                prediction.class_logits(name).reshape(-1, 3),
                target.nan_to_num(2).long()[..., None].expand(s, k, m).reshape(-1),
                reduction="none",
            ).reshape(s, k, m)
            parts[name] = reduce(ce * valid[..., None])
        binary_names = [n for n in BINARY if n != "EC" or config.ec_available]
        for name in binary_names:
            target = labels[..., LABEL_INDEX[name]]
            valid = torch.isfinite(target)
            bce = F.binary_cross_entropy_with_logits(
                prediction.binary_logits[..., BINARY.index(name)],
                target.nan_to_num(1.0)[..., None].expand(s, k, m),
                reduction="none",
            )
            parts[name] = reduce(bce * valid[..., None])
        target_ep = labels[..., LABEL_INDEX["EP"]].clamp(0, 1)
        bce_ep = F.binary_cross_entropy_with_logits(
            prediction.ep_logit, target_ep.nan_to_num(1.0)[..., None].expand(s, k, m), reduction="none"
        )
        parts["EP"] = reduce(bce_ep * torch.isfinite(target_ep)[..., None])
        for name in [*THREE_CLASS, *binary_names, "EP"]:
            supervised = supervised + config.subscore_weights.get(name, 1.0) * parts[name]
        parts["supervised"] = supervised
    if config.epdms_weight > 0 or config.ranking_weight > 0:
        composed = prediction.epdms(config.ec_available)  # (S, K, M)
        if config.epdms_weight > 0:
            parts["epdms_mse"] = reduce((composed - epdms[..., None]) ** 2)
        if config.ranking_weight > 0:
            parts["ranking"] = reduce(ranking_loss(composed, epdms, config.ranking_temperature))
    if config.irl_weight > 0:
        parts["irl"] = reduce(max_entropy_irl_loss(prediction.irl_reward, demo_index, config.irl_temperature))
    total = logits.new_zeros(())
    for name, weight in (
        ("supervised", config.supervised_weight), ("epdms_mse", config.epdms_weight),
        ("ranking", config.ranking_weight), ("irl", config.irl_weight),
    ):
        if name in parts:
            total = total + weight * parts[name]
    if not torch.isfinite(total):
        raise FloatingPointError(f"RWM loss is not finite: { {k: float(v) for k, v in parts.items()} }")
    return total, {name: float(value.detach()) for name, value in parts.items()}
