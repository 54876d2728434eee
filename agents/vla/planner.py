"""The unified diffusion planner: truncated DDIM from k-means anchors (DiffusionDrive), with DPPO hooks.

Every anchor is one mode. For each mode the decoder reads the current noisy trajectory `x_t` (normalised to
[-1, 1]) and the timestep, cross-attends to the scene tokens (semantic ‖ BEV ‖ agents) plus an ego/command
embedding, and predicts the clean trajectory `x0` and a confidence. Modes never attend to each other, so each mode
is its own Markov chain: its reverse step is the DDIM Gaussian

    x_{t'} ~ N( sqrt(ᾱ_t') x̂0 + sqrt(1 - ᾱ_t' - σ²) ε̂ ,  σ² ),   ε̂ = (x_t - sqrt(ᾱ_t) x̂0) / sqrt(1 - ᾱ_t),
    σ = η · sqrt((1 - ᾱ_t') / (1 - ᾱ_t) · (1 - ᾱ_t / ᾱ_t')),

with `x̂0` clamped to ±1 — exactly `diffusers.DDIMScheduler.step(..., eta, use_clipped_model_output=True)` for
`prediction_type="sample"` (checked in tests/test_vla.py). The chain visits `t = K·s - 1, …, s - 1` with stride
`s = start_timestep // K` and ends at `t' = -1`, where ᾱ = 1 and σ = 0: the last mean is the predicted `x0`, so a
deterministic run returns DiffusionDrive's output, and the floor `min_std` makes that step a proper Gaussian for RL.

Mode selection for RL (documented choice): all M anchor chains are sampled; the executed chain is the one of the
mode with the highest final selection logit (`mode_selection="confidence"`), or one drawn from their softmax
(`"sample"`). The selection logits are the mode scores, minus each plan's distance to the reference plan (a
unimodal regression query) under `VLAConfig.mode_choice="regression"`. `step_log_prob` scores the chosen chain's denoising steps only; the selection itself is
not part of the PPO ratio (as DiffusionDriveV2 keeps its mode selector out of the policy gradient).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from torch import nn

from agents.vla.anchors import TrajectoryNormalizer, kinematic_prior_trajectories, kmeans_anchors
from agents.vla.config import VLAConfig
from agents.vla.standardizer import RunningStandardizer

LOG_2PI = math.log(2.0 * math.pi)


class PlannerContext(NamedTuple):
    """Scene features computed once per observation and reused by every denoising step and PPO epoch."""

    tokens: torch.Tensor  # (B, N, d) semantic ‖ BEV ‖ agent tokens
    ego: torch.Tensor  # (B, d) ego-status and driving-command embedding


class DenoisingChain(NamedTuple):
    """One sampled reverse chain per scene, in normalised space, plus what PPO needs to score it again."""

    samples: torch.Tensor  # (B, K+1, T, 3) x_K … x_0 of the selected mode
    means: torch.Tensor  # (B, K, T, 3) Gaussian mean of each step
    stds: torch.Tensor  # (B, K) std used at sampling (after the floor)
    log_probs: torch.Tensor  # (B, K) log N(x_{k-1}; mean, std²) summed over T·3
    timesteps: torch.Tensor  # (K,) the timestep each step starts from
    mode_index: torch.Tensor  # (B,) the selected anchor
    modes: torch.Tensor  # (B, M, T, 3) final predicted x0 of every mode, normalised
    confidences: torch.Tensor  # (B, M) final selection logits (`DiffusionPlanner.selection_logits`)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style embedding of (float) timesteps of any shape → `(*t.shape, dim)`."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float().unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class DenoiserLayer(nn.Module):
    """Cross-attention to the scene, feed-forward, then timestep modulation (DiffusionDrive's decoder layer)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.norm_attn = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm_ffn = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.modulation = nn.Linear(d, 2 * d)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attn(self.norm_attn(queries), tokens, tokens)
        queries = queries + attended
        queries = queries + self.ffn(self.norm_ffn(queries))
        scale, shift = self.modulation(time).chunk(2, dim=-1)
        return queries * (1.0 + scale) + shift


class DiffusionPlanner(nn.Module):
    """Anchored truncated diffusion over `(num_poses, 3)` trajectories with M = `num_anchors` modes."""

    def __init__(self, config: VLAConfig):
        super().__init__()
        d, poses = config.d_model, config.num_poses
        self.config = config
        self.scheduler = DDIMScheduler(
            num_train_timesteps=config.num_train_timesteps,
            beta_schedule=config.beta_schedule,
            beta_start=config.beta_start,
            beta_end=config.beta_end,
            prediction_type="sample",
            clip_sample=True,
            clip_sample_range=1.0,
            set_alpha_to_one=True,
            timestep_spacing="trailing",
        )
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.clone().float(), persistent=False)
        self.normalizer = TrajectoryNormalizer(config.trajectory_low, config.trajectory_high)
        prior = kmeans_anchors(kinematic_prior_trajectories(poses), config.num_anchors)
        self.register_buffer("anchors", torch.as_tensor(prior))  # (M, T, 3) [m, m, rad]

        self.ego_standardizer = RunningStandardizer(config.num_history * 7)
        self.ego_embedding = nn.Sequential(
            nn.Linear(config.num_history * 7 + 4, d), nn.ReLU(), nn.Linear(d, d), nn.LayerNorm(d)
        )
        self.trajectory_embedding = nn.Sequential(nn.Linear(poses * 3, d), nn.ReLU(), nn.Linear(d, d))
        self.time_embedding = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.layers = nn.ModuleList(DenoiserLayer(d, config.num_heads) for _ in range(config.planner_layers))
        self.norm = nn.LayerNorm(d)
        degree = config.smooth_basis_degree
        self.offset_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, (degree or poses) * 3))
        if degree:
            time = torch.arange(1, poses + 1, dtype=torch.float32) / poses
            basis = time[:, None] ** torch.arange(1, degree + 1)  # (T, D)
            self.register_buffer("smooth_basis", basis, persistent=False)
            self.register_buffer("smooth_fit", torch.linalg.pinv(basis), persistent=False)  # (D, T) least squares
        self.score_head = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, 1))
        self.score_query = nn.Linear(d, d, bias=False)
        self.score_ego = nn.Linear(d, d, bias=False)
        # the reference plan: one more query, without a noisy trajectory, decoded by its own layers
        self.reference_query = nn.Parameter(torch.zeros(d))
        self.reference_layers = nn.ModuleList(DenoiserLayer(d, config.num_heads) for _ in range(config.planner_layers))
        self.reference_norm = nn.LayerNorm(d)
        self.reference_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, (degree or poses) * 3))

    def reference_parameters(self) -> list[nn.Parameter]:
        """The weights the reference plan, and nothing else, is computed by (RL keeps them as imitation made them)."""
        modules = (self.reference_layers, self.reference_norm, self.reference_head)
        return [self.reference_query, *(p for module in modules for p in module.parameters())]

    # -- anchors -------------------------------------------------------------------------------------------------

    def set_anchors(self, anchors, low, high) -> None:
        """Replace the anchors `(M, T, 3)` [m] and the normalisation range; call before training, not after."""
        anchors = torch.as_tensor(anchors, dtype=torch.float32, device=self.anchors.device)
        if anchors.shape != self.anchors.shape:
            raise ValueError(f"anchors must have shape {tuple(self.anchors.shape)}, got {tuple(anchors.shape)}")
        self.anchors.copy_(anchors)
        self.normalizer.set_range(low, high)

    def normalized_anchors(self) -> torch.Tensor:
        return self.normalizer.normalize(self.anchors).clamp(-1.0, 1.0)

    def scene_anchors(self, context: PlannerContext, reference: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, M, T, 3)` normalised: the anchors the chains start from and the smooth plans rest on. With
        `reference_anchor`, mode 0's is the scene's reference plan (`reference`, computed if None), detached, so
        only its own L1 trains the reference."""
        batch = context.ego.shape[0]
        anchors = self.normalized_anchors().unsqueeze(0).expand(batch, -1, -1, -1)
        if not self.config.reference_anchor:
            return anchors
        reference = self.reference_plan(context) if reference is None else reference
        return torch.cat([reference.detach().clamp(-1.0, 1.0).unsqueeze(1), anchors[:, 1:]], dim=1)

    # -- the denoiser --------------------------------------------------------------------------------------------

    def embed_ego(self, ego_history: torch.Tensor, command: torch.Tensor) -> torch.Tensor:
        """`(B, num_history, 7)` ego history and `(B, 4)` command → `(B, d)`."""
        return self.ego_embedding(torch.cat([self.ego_standardizer(ego_history.flatten(1)), command], dim=-1))

    def denoise(
        self,
        context: PlannerContext,
        x_t: torch.Tensor,
        t: torch.Tensor,
        anchor_index: torch.Tensor | None = None,
        anchors: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict `(x0 (B, M, T, 3), confidence logits (B, M))` from noisy trajectories `(B, M, T, 3)`.

        `t` is `(B, M)` (or broadcastable), so one call can score different denoising steps side by side.
        `anchor_index` `(M,)` or `(B, M)` names the anchor each query's chain started from; by default query j is
        anchor j. The smooth planner builds its plan on that anchor, so the noise in `x_t` reaches the plan only
        through the network, which learns to discard it (on `x_t` itself, 1.2 m of plan moved with the noise).
        `anchors` are the scene's anchors `(B, M, T, 3)` (`scene_anchors`; computed if None).
        """
        batch, modes = x_t.shape[:2]
        t = torch.as_tensor(t, device=x_t.device).expand(batch, modes)
        time = self.time_embedding(sinusoidal_embedding(t, self.config.d_model))
        ego = context.ego.unsqueeze(1).expand(-1, modes, -1)
        condition = time + ego
        queries = self.trajectory_embedding(x_t.flatten(2)) + ego
        for layer in self.layers:
            queries = layer(queries, context.tokens, condition)
        queries = self.norm(queries)
        if self.config.smooth_basis_degree:
            origin = self.normalizer.normalize(torch.zeros(3, device=x_t.device))  # the ego pose at t = 0
            anchors = self.scene_anchors(context) if anchors is None else anchors
            if anchor_index is None:
                if modes != anchors.shape[1]:
                    raise ValueError(
                        f"denoise got {modes} queries per scene for {anchors.shape[1]} anchors: pass anchor_index"
                    )
                base = anchors
            else:
                rows = torch.arange(batch, device=x_t.device)[:, None]
                base = anchors[rows, anchor_index.expand(batch, modes)]
            coefficients = self.offset_head(queries).view(batch, modes, self.config.smooth_basis_degree, 3)
            x0 = origin + self.smooth_basis @ (self.smooth_fit @ (base - origin) + coefficients)
        else:
            x0 = x_t + self.offset_head(queries).view_as(x_t)
        bilinear = (self.score_query(queries) * self.score_ego(ego)).sum(dim=-1) / math.sqrt(queries.shape[-1])
        return x0, self.score_head(torch.cat([queries, ego], dim=-1)).squeeze(-1) + bilinear

    def reference_plan(self, context: PlannerContext) -> torch.Tensor:
        """`(B, T, 3)` normalised: the unimodal plan (a regression on the demonstration) that guides the mode choice."""
        batch = context.ego.shape[0]
        queries = (self.reference_query + context.ego).unsqueeze(1)
        condition = context.ego.unsqueeze(1)
        for layer in self.reference_layers:
            queries = layer(queries, context.tokens, condition)
        out = self.reference_head(self.reference_norm(queries)).view(batch, -1, 3)
        origin = self.normalizer.normalize(torch.zeros(3, device=out.device))
        return origin + (self.smooth_basis @ out if self.config.smooth_basis_degree else out)

    def selection_logits(self, logits: torch.Tensor, plans: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """`(B, M)` logits the executed mode is chosen by, from the mode scores `(B, M)`, the modes' plans
        `(B, M, T, 3)` and the reference plan `(B, T, 3)` (both normalised); see `VLAConfig.mode_choice`."""
        if self.config.mode_choice == "confidence":
            return logits
        distance = mean_xy_distance(self.normalizer.denormalize(plans), self.normalizer.denormalize(reference))
        return logits - distance / self.config.mode_choice_tau

    # -- the DDIM Gaussian ---------------------------------------------------------------------------------------

    def timesteps(self, num_steps: int | None = None, start_timestep: int | None = None) -> torch.Tensor:
        """`(K,)` long: `K·s - 1, (K-1)·s - 1, …, s - 1` with `s = start_timestep // K` (each step goes to t - s)."""
        k = self.config.num_inference_steps if num_steps is None else int(num_steps)
        start = self.config.start_timestep if start_timestep is None else int(start_timestep)
        if not 0 < k <= start <= self.config.num_train_timesteps:
            raise ValueError(f"need 0 < num_steps ({k}) <= start_timestep ({start}) <= num_train_timesteps")
        stride = start // k
        return torch.arange(k, 0, -1, device=self.alphas_cumprod.device) * stride - 1

    def step_gaussian(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prev_t: torch.Tensor, eta: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DDIM reverse step as `(mean, std)`; `t`, `prev_t` broadcast against `x_t.shape[:-2]`, std has that shape."""
        alpha_t = self.alphas_cumprod[t]
        alpha_prev = torch.where(prev_t >= 0, self.alphas_cumprod[prev_t.clamp(min=0)], torch.ones_like(alpha_t))
        x0 = x0.clamp(-1.0, 1.0)
        a_t, a_prev = alpha_t[..., None, None], alpha_prev[..., None, None]
        eps = (x_t - a_t.sqrt() * x0) / (1.0 - a_t).sqrt()
        variance = (1.0 - alpha_prev) / (1.0 - alpha_t) * (1.0 - alpha_t / alpha_prev)
        std = eta * variance.clamp(min=0.0).sqrt()
        direction = (1.0 - a_prev - std[..., None, None] ** 2).clamp(min=0.0).sqrt()
        return a_prev.sqrt() * x0 + direction * eps, std

    # -- sampling and scoring (what PPO needs) -------------------------------------------------------------------

    def sample_chain(
        self,
        context: PlannerContext,
        num_steps: int | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
        min_std: float | None = None,
        start_timestep: int | None = None,
        mode_selection: Literal["confidence", "sample"] = "confidence",
    ) -> DenoisingChain:
        """Run the truncated reverse chain for every anchor and keep the selected mode's chain.

        With `deterministic=True` the anchors are not noised (x_K is their noisy mean) and every step takes its
        mean, so the result is reproducible; log-probabilities are still those of the stochastic policy.
        """
        eta = self.config.eta if eta is None else eta
        min_std = self.config.min_std if min_std is None else min_std
        steps = self.timesteps(num_steps, start_timestep)
        stride = int(steps[-1]) + 1
        batch = context.tokens.shape[0]
        reference = self.reference_plan(context)
        anchors = self.scene_anchors(context, reference)
        alpha = self.alphas_cumprod[steps[0]]
        x = alpha.sqrt() * anchors
        if not deterministic:
            x = x + (1.0 - alpha).sqrt() * _randn(anchors.shape, generator, anchors)
        samples, means, stds, log_probs = [x], [], [], []
        for t in steps:
            x0, logits = self.denoise(context, x, t, anchors=anchors)
            mean, std = self.step_gaussian(x0, x, t, t - stride, eta)
            std = std.clamp(min=min_std).expand(x.shape[:2])
            x = mean if deterministic else mean + std[..., None, None] * _randn(mean.shape, generator, mean)
            log_probs.append(gaussian_log_prob(x, mean, std))
            samples.append(x)
            means.append(mean)
            stds.append(std)
        logits = self.selection_logits(logits, x0.clamp(-1.0, 1.0), reference)
        if deterministic or mode_selection == "confidence":
            mode = logits.argmax(dim=1)
        elif mode_selection == "sample":
            mode = torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)
        else:
            raise ValueError(f"mode_selection must be 'confidence' or 'sample', got {mode_selection!r}")
        rows = torch.arange(batch, device=mode.device)

        def selected(values: list[torch.Tensor]) -> torch.Tensor:  # K tensors (B, M, …) → (B, K, …) of the mode
            return torch.stack(values, dim=2)[rows, mode]

        return DenoisingChain(
            samples=selected(samples),
            means=selected(means),
            stds=selected(stds),
            log_probs=selected(log_probs),
            timesteps=steps,
            mode_index=mode,
            modes=x0.clamp(-1.0, 1.0),
            confidences=logits,
        )

    def step_log_prob(
        self,
        context: PlannerContext,
        chain: DenoisingChain | torch.Tensor,
        min_std: float | None = None,
        eta: float | None = None,
        start_timestep: int | None = None,
        mode_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`(B, K)` log N(x_{k-1}; mean_θ(x_k), std²) of a stored chain under the current weights.

        `chain` is a `DenoisingChain` or its `samples` `(B, K+1, T, 3)` plus the anchor `mode_index` `(B,)` it
        started from; all K steps run in one decoder call.
        """
        eta = self.config.eta if eta is None else eta
        min_std = self.config.min_std if min_std is None else min_std
        samples = chain.samples if isinstance(chain, DenoisingChain) else chain
        steps = self.timesteps(samples.shape[1] - 1, start_timestep)
        if isinstance(chain, DenoisingChain) and not torch.equal(chain.timesteps.to(steps.device), steps):
            raise ValueError(f"chain was sampled at timesteps {chain.timesteps.tolist()}, not {steps.tolist()}")
        stride = int(steps[-1]) + 1
        inputs = samples[:, :-1]
        t = steps.unsqueeze(0).expand(samples.shape[0], -1)
        if isinstance(chain, DenoisingChain):
            mode_index = chain.mode_index
        if mode_index is None:
            raise ValueError("step_log_prob needs the chain's mode_index (its anchor) when given bare samples")
        x0, _ = self.denoise(context, inputs, t, anchor_index=mode_index[:, None].expand_as(t))
        mean, std = self.step_gaussian(x0, inputs, t, t - stride, eta)
        return gaussian_log_prob(samples[:, 1:], mean, std.clamp(min=min_std))

    # -- imitation -----------------------------------------------------------------------------------------------

    def forward(self, context: PlannerContext, **sampling) -> dict[str, torch.Tensor]:
        """Deterministic planning: the chosen mode in metres, every mode, the logits the choice was made by
        (`confidences`) and the reference plan."""
        chain = self.sample_chain(context, deterministic=True, **sampling)
        rows = torch.arange(chain.modes.shape[0], device=chain.modes.device)
        modes = self.normalizer.denormalize(chain.modes)
        return {
            "trajectory": modes[rows, chain.mode_index],
            "modes": modes,
            "confidences": chain.confidences,
            "reference": self.normalizer.denormalize(self.reference_plan(context)),
        }

    def imitation_loss(self, context: PlannerContext, trajectory: torch.Tensor) -> dict[str, torch.Tensor]:
        """DiffusionDrive's loss: noise the anchors to t ~ U[0, train_max_timestep), denoise once, then L1 of the
        mode whose anchor is nearest to the demonstration `(B, T, 3)` [m] (and of the next `regression_neighbours - 1`
        nearest) plus a focal loss on the mode scores, and the L1 of the reference plan (`reference_reg`). With `classification_target="prediction"` the positive mode
        is the one whose prediction lands nearest, and it is regressed as well; with `"soft"` the scores are trained
        by cross-entropy against softmax(-anchor distance / `soft_target_tau`). The L1's lateral (y) component is
        weighted by `lateral_weight`.

        Each scene is denoised from `noise_draws` independent noise levels: the planner is cheap next to the scene
        encoders, so extra draws give it more gradient per encoded scene for little cost."""
        weights = trajectory.new_tensor([1.0, self.config.lateral_weight, 1.0])  # x, y, heading
        reference = self.reference_plan(context)
        reference_loss = ((self.normalizer.denormalize(reference) - trajectory).abs() * weights).mean()
        anchors = self.scene_anchors(context, reference)
        draws = self.config.noise_draws
        if draws > 1:
            context = PlannerContext(context.tokens.repeat(draws, 1, 1), context.ego.repeat(draws, 1))
            trajectory, anchors = trajectory.repeat(draws, 1, 1), anchors.repeat(draws, 1, 1, 1)
        batch = trajectory.shape[0]
        t = torch.randint(0, self.config.train_max_timestep, (batch, 1), device=trajectory.device)
        noise = torch.randn_like(anchors)
        alpha = self.alphas_cumprod[t][..., None, None]
        x_t = (alpha.sqrt() * anchors + (1.0 - alpha).sqrt() * noise).clamp(-1.0, 1.0)
        x0, logits = self.denoise(context, x_t, t, anchors=anchors)
        anchor_distance = mean_xy_distance(self.normalizer.denormalize(anchors), trajectory)  # (B, M) [m]
        positives = anchor_distance.argsort(dim=1)[:, : self.config.regression_neighbours]  # (B, n), nearest first
        target = positives[:, 0]
        if self.config.classification_target == "prediction":  # the winner is trained to regress too
            with torch.no_grad():
                target = mean_xy_distance(self.normalizer.denormalize(x0), trajectory).argmin(dim=1)
            positives = torch.cat([positives, target[:, None]], dim=1)
        rows = torch.arange(batch, device=trajectory.device)[:, None]
        predicted = self.normalizer.denormalize(x0[rows, positives])  # (B, n, T, 3)
        regression = ((predicted - trajectory[:, None]).abs() * weights).mean()
        if self.config.classification_target == "soft":
            classification = soft_mode_loss(logits, anchor_distance, self.config.soft_target_tau)
        else:
            labels = F.one_hot(target, self.config.num_anchors).float()
            classification = sigmoid_focal_loss(logits, labels, self.config.focal_alpha, self.config.focal_gamma)
        return {"trajectory_reg": regression, "trajectory_cls": classification, "reference_reg": reference_loss}


def mean_xy_distance(modes: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
    """`(B, M)` mean xy distance of modes `(M, T, 3)` or `(B, M, T, 3)` to each trajectory `(B, T, 3)`."""
    return (modes[..., :2] - trajectory[:, None, :, :2]).norm(dim=-1).mean(dim=-1)


def nearest_anchor(anchors: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
    """Index `(B,)` of the anchor `(M, T, 3)` with the smallest mean xy distance to each trajectory `(B, T, 3)`."""
    return mean_xy_distance(anchors, trajectory).argmin(dim=1)


def sigmoid_focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal loss (Lin et al.) summed over modes, averaged over the batch; `gamma=0, alpha<0` is plain BCE.

    On small data sets the focal form (gamma 2, alpha 0.25) sits on a plateau of equal mode scores for
    hundreds of steps, which is why the default is the BCE of the DiffusionDrive paper.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    p_t = prob * labels + (1.0 - prob) * (1.0 - labels)
    weight = alpha * labels + (1.0 - alpha) * (1.0 - labels) if alpha >= 0 else torch.ones_like(ce)
    return (weight * (1.0 - p_t) ** gamma * ce).sum(dim=1).mean()


def soft_mode_loss(logits: torch.Tensor, distances: torch.Tensor, tau: float) -> torch.Tensor:
    """Cross-entropy of softmax(logits) against the target softmax(-distances / tau), averaged over the batch.

    Hydra-MDP-style soft imitation target: every mode gets probability mass by how near it (its anchor) lies to
    the demonstration, so the argmax of the confidences is the mode of least expected distance rather than a guess
    at one hard winner.
    """
    return F.cross_entropy(logits, torch.softmax(-distances / tau, dim=1))


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std² I) summed over the last two dims; `std` has the shape of `x.shape[:-2]`."""
    dims = x.shape[-2] * x.shape[-1]
    sq = ((x - mean) ** 2).sum(dim=(-2, -1))
    return -0.5 * sq / std**2 - dims * std.log() - 0.5 * dims * LOG_2PI


def _randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


__all__ = [
    "DenoisingChain",
    "DiffusionPlanner",
    "PlannerContext",
    "gaussian_log_prob",
    "nearest_anchor",
    "sigmoid_focal_loss",
]
