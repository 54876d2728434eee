"""`VLACore`: the IRL-VLA policy (`agents.vla.VLAAgent`) seen by PPO as a `DiffusionCore`.

RL fine-tunes the diffusion planner (as DPPO fine-tunes the denoiser and ReCogDrive its DiT planner, both with
the perception backbone fixed); the semantic (VLM) and 3D (BEV) reasoning modules are frozen by default. A frozen
encoder is a deterministic function of the observation, so its tokens are cached by an observation digest: the
scene is encoded once when the rollout meets it, and the PPO epochs and the KL reference reuse those exact
tensors. On two CPU cores the encoders cost over ten times the planner, so this is what makes RL affordable, and
reusing bit-identical tokens keeps the first PPO ratio at exactly 1.

The policy is the VLA's whole sampler: every anchor (mode) is denoised, one mode is drawn from the softmax of the
final confidences, and its `x_0` is executed. The stored chain holds all modes' visited samples, every mode's `x_0`
and the executed mode's index, so the likelihood covers both the denoiser and the mode choice (the confidence head
shares the decoder), and a learned env can score every mode's plan, not only the executed one
(`candidate_trajectories`, used by `RLConfig.mode_beta`). Scoring only the executed mode while choosing it by argmax
lets each update silently change which mode is executed: on a toy reward that undid learning (mean reward
0.18 → 0.10 with 4 modes, 0.20 → 0.62 with 1).

The observation arrives as Stable-Baselines3 tensors: `camera` `(B, 3, H, W)` uint8 (channel-first), `lidar_bev`
`(B, 2, S, S)`, `ego_status` `(B, num_history, 7)` and `command` `(B, 4)`.
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from agents.ppo.core import ChainScore
from agents.vla.config import VLAConfig
from agents.vla.planner import DiffusionPlanner, PlannerContext, gaussian_log_prob
from agents.vla.semantic import PromptTokenizer, driving_prompt

# The planner's parameters that only the confidence (mode choice) reads: the all-mode update trains them at its
# own rate (`RLConfig.mode_learning_rate`).
MODE_PARAMETERS = ("planner.score_head.", "planner.score_query.", "planner.score_ego.")
# The modules that read sensors; their outputs are what the cache holds.
SCENE_MODULES = ("semantic", "bev")
MODULE_NAMES = (*SCENE_MODULES, "planner")
# What `freeze` takes: the modules, and the planner's reference plan (which anchors mode 0 and guides the choice).
FREEZABLE = (*MODULE_NAMES, "reference")
OBSERVATION_KEYS = ("camera", "lidar_bev", "ego_status", "command")


def num_decisions(config: VLAConfig, num_steps: int | None = None, execute_mean: bool = False,
                  per_mode: bool = False) -> int:
    """K Gaussian denoising steps (K - 1 when the last step executes its mean), then the mode choice; with
    `per_mode` every Gaussian step has one column per mode (M of them)."""
    gaussian = int(num_steps or config.num_inference_steps) - (1 if execute_mean else 0)
    return gaussian * (config.num_anchors if per_mode else 1) + 1


def chain_size(config: VLAConfig, num_steps: int | None = None, noise_free_plans: bool = False) -> int:
    """Width of a flattened VLA chain: K x M visited samples, M final `x_0` (one per mode), with `noise_free_plans`
    M more (each mode's plan had its steps taken their means), then the executed mode index."""
    k = int(num_steps or config.num_inference_steps)
    plans = k + 1 + (1 if noise_free_plans else 0)
    return plans * config.num_anchors * config.num_poses * 3 + 1


def observation_digests(observations: dict[str, torch.Tensor]) -> list[bytes]:
    """One 16-byte BLAKE2b digest per sample over every sensor array (shape, dtype and bytes)."""
    arrays = [np.ascontiguousarray(observations[key].detach().cpu().numpy()) for key in OBSERVATION_KEYS]
    digests = []
    for row in range(len(arrays[0])):
        h = hashlib.blake2b(digest_size=16)
        for array in arrays:
            h.update(str((array.dtype.str, array.shape[1:])).encode())
            h.update(array[row].tobytes())
        digests.append(h.digest())
    return digests


class SceneTokenCache:
    """Least-recently-used store of frozen-encoder outputs, one `(N, d)` tensor per (module, observation).

    Keys carry `id(module)`, so a KL reference that shares a frozen module with the trained core shares its
    entries, while a module that was copied gets its own.

    :param capacity: entries kept (per module and observation); a rollout plus its next observation must fit.
    """

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"SceneTokenCache capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._store: OrderedDict[tuple[int, bytes], torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()

    def get_or_compute(
        self, module: nn.Module, digests: list[bytes], compute: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Stack the cached rows; `compute(rows)` encodes the missing ones (a long index tensor) in one batch."""
        owner = id(module)
        found = [self._store.get((owner, d)) for d in digests]
        missing = [i for i, value in enumerate(found) if value is None]
        self.hits += len(digests) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = compute(torch.as_tensor(missing, dtype=torch.long))
            for i, value in zip(missing, computed):
                found[i] = value
                self._store[(owner, digests[i])] = value
        for d in digests:
            self._store.move_to_end((owner, d))
        while len(self._store) > self.capacity:
            self._store.popitem(last=False)
        return torch.stack(found)  # type: ignore[arg-type]


class VLACore(nn.Module):
    """The VLA's three modules as a stochastic policy over denoising chains.

    Its state dict has exactly the keys of a `VLAAgent` (`semantic.*`, `bev.*`, `planner.*`), so `to_vla_agent`
    is a strict load.

    :param config: the agent's `VLAConfig`.
    :param tokenizer: the agent's prompt tokenizer (the VLM reads a driving prompt built from ego status and command).
    :param semantic: semantic reasoning module (VLM).
    :param bev: 3D reasoning module (BEV encoder).
    :param planner: the diffusion planner.
    :param num_steps: K, the denoising steps of the inner MDP (None: the planner's inference steps).
    :param cache_capacity: frozen-encoder outputs kept in memory.
    :param execute_mean: execute the last step's mean, the predicted `x_0`, instead of a Gaussian sample around it.
        Exploration then comes from the earlier steps and the mode choice, which reach the plan through the
        denoiser, so a smooth planner (`smooth_basis_degree`) explores with smooth plans instead of per-pose noise
        (which the comfort metrics and the reward model punish whatever the policy does). The last step is then no
        decision: it has no log-probability column.
    :param mode_temperature: the mode is drawn from softmax(confidence / temperature). Imitation trains the
        confidences with a per-mode BCE, so at temperature 1 their softmax over 20 modes is flat and rollouts
        execute modes the deterministic policy never picks (rollout EPDMS 0.5 against 0.81 deterministic, measured);
        a low temperature explores among the plausible modes only.
    :param per_mode: score each Gaussian step of each mode as its own decision (`(B, steps · M + 1)` log-probs,
        step-major), so every mode's chain can get its own advantage (`RLConfig.mode_advantage`). Otherwise a
        step's column sums all M modes.
    :param noise_free_plans: the chain also holds every mode's noise-free plan: from the same noised anchor, each
        step takes its mean. Its reward is the per-mode baseline of `RLConfig.mode_advantage`, and
        `candidate_trajectories` then returns 2M plans (sampled ones first).
    """

    def __init__(
        self,
        config: VLAConfig,
        tokenizer: PromptTokenizer,
        semantic: nn.Module,
        bev: nn.Module,
        planner: DiffusionPlanner,
        num_steps: int | None = None,
        cache_capacity: int = 4096,
        execute_mean: bool = False,
        mode_temperature: float = 1.0,
        per_mode: bool = False,
        noise_free_plans: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.semantic, self.bev, self.planner = semantic, bev, planner
        self.num_steps = int(num_steps or config.num_inference_steps)
        self.timesteps = planner.timesteps(self.num_steps)  # validates K against the schedule
        self.context_dim = 2 * config.d_model
        self._visited_size = self.num_steps * config.num_anchors * config.num_poses * 3
        self.noise_free_plans = bool(noise_free_plans)
        self.chain_size = chain_size(config, self.num_steps, self.noise_free_plans)
        self.execute_mean = bool(execute_mean)
        if not mode_temperature > 0:
            raise ValueError(f"VLACore mode_temperature must be > 0, got {mode_temperature}")
        self.mode_temperature = float(mode_temperature)
        self.per_mode = bool(per_mode)
        self.num_decisions = num_decisions(config, self.num_steps, self.execute_mean, self.per_mode)
        self.num_modes = config.num_anchors
        self.num_candidates = self.num_modes * (2 if self.noise_free_plans else 1)
        self.frozen: set[str] = set()
        self.cache = SceneTokenCache(cache_capacity)

    @classmethod
    def from_agent(
        cls,
        agent: nn.Module,
        num_steps: int | None = None,
        cache_capacity: int = 4096,
        execute_mean: bool = False,
        mode_temperature: float = 1.0,
        **options: bool,
    ) -> "VLACore":
        """Wrap a `VLAAgent`; the core trains the agent's own modules in place (`options`: `per_mode`,
        `noise_free_plans`)."""
        return cls(agent.config, agent.tokenizer, agent.semantic, agent.bev, agent.planner, num_steps, cache_capacity,
                   execute_mean, mode_temperature, **options)

    # ------------------------------------------------------------------------------------------ set-up
    def freeze(self, names: Sequence[str]) -> None:
        """Fix the weights of `names` (`FREEZABLE`). `reference` is the planner's reference plan: left trainable, the
        mode-choice gradient moves it, and with it mode 0's anchor and every step of mode 0's chain."""
        unknown = sorted(set(names) - set(FREEZABLE))
        if unknown:
            raise ValueError(f"cannot freeze unknown VLA module(s) {unknown}; the choices are {list(FREEZABLE)}")
        for name in names:
            if name == "reference":
                for p in self.planner.reference_parameters():
                    p.requires_grad_(False)
                continue
            getattr(self, name).requires_grad_(False).eval()
            self.frozen.add(name)

    def train(self, mode: bool = True) -> "VLACore":
        """Frozen modules stay in eval mode whatever SB3 asks, so their outputs (and the cache) stay valid."""
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Loading new weights invalidates every cached encoder output."""
        self.cache.clear()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def reference_copy(self) -> "VLACore":
        """A frozen copy: frozen modules (and the cache) are shared, trainable ones are deep-copied."""
        parts = {name: getattr(self, name) if name in self.frozen else copy.deepcopy(getattr(self, name))
                 for name in MODULE_NAMES}
        reference = VLACore(self.config, self.tokenizer, **parts, num_steps=self.num_steps,
                            execute_mean=self.execute_mean, mode_temperature=self.mode_temperature,
                            per_mode=self.per_mode, noise_free_plans=self.noise_free_plans)
        reference.cache = self.cache
        reference.freeze(MODULE_NAMES)
        return reference

    def to_vla_agent(self):
        """A `VLAAgent` holding the current weights (a copy, in eval mode), ready for `save_pretrained`."""
        from agents.vla.policy import VLAAgent

        agent = VLAAgent(config=self.config)
        agent.load_state_dict(self.state_dict(), strict=True)
        return agent.eval()

    # ------------------------------------------------------------------------------------------ encoding
    def encode(self, observations: dict[str, torch.Tensor]) -> PlannerContext:
        missing = [key for key in OBSERVATION_KEYS if key not in observations]
        if missing:
            raise KeyError(f"VLACore.encode: observation lacks {missing}; it has {sorted(observations)}")
        camera = observations["camera"]
        expected = (3, self.config.camera_height, self.config.camera_width)
        if tuple(camera.shape[1:]) != expected:
            raise ValueError(f"VLACore.encode: camera must be channel-first {expected}, got {tuple(camera.shape[1:])}")
        device = self.planner.anchors.device
        camera = camera.to(device).float() / 255.0  # 0..255 whether the buffer kept uint8 or not
        lidar = observations["lidar_bev"].to(device).float()
        ego = observations["ego_status"].to(device).float()
        command = observations["command"].to(device).float()
        digests = observation_digests(observations) if self.frozen & set(SCENE_MODULES) else []

        def semantic(rows: torch.Tensor) -> torch.Tensor:
            ego_np, command_np = ego[rows].cpu().numpy(), command[rows].cpu().numpy()
            ids, mask = self.tokenizer.encode([driving_prompt(c, e) for c, e in zip(command_np, ego_np)])
            return self.semantic(camera[rows], ids.to(device), mask.to(device))

        def bev(rows: torch.Tensor) -> torch.Tensor:
            return self.bev.planner_tokens(self.bev(lidar[rows], camera[rows]))

        everything = torch.arange(len(camera), device=device)
        tokens = []
        for name, compute in (("semantic", semantic), ("bev", bev)):
            if name in self.frozen:
                with torch.no_grad():
                    tokens.append(self.cache.get_or_compute(getattr(self, name), digests, compute))
            else:
                tokens.append(compute(everything))
        return PlannerContext(torch.cat(tokens, dim=1), self.planner.embed_ego(ego, command))

    def pooled(self, context: PlannerContext) -> torch.Tensor:
        return torch.cat([context.tokens.mean(dim=1), context.ego], dim=-1)

    # ------------------------------------------------------------------------------------------ the chain
    def _plans(self, chain: torch.Tensor) -> torch.Tensor:
        """Every mode's `x_0` `(B, M, T, 3)` of a flat chain, then (with `noise_free_plans`) every noise-free one."""
        if chain.shape[-1] != self.chain_size:
            raise ValueError(f"chain has width {chain.shape[-1]}, expected {self.chain_size} (K={self.num_steps}, "
                             f"M={self.config.num_anchors}, noise_free_plans={self.noise_free_plans})")
        return chain[:, self._visited_size : -1].view(chain.shape[0], self.num_candidates, self.config.num_poses, 3)

    def _split(self, chain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat chain → visited samples `(B, K, M, T, 3)`, executed `x_0` `(B, T, 3)`, mode index `(B,)`."""
        finals, batch = self._plans(chain)[:, : self.num_modes], chain.shape[0]
        visited = chain[:, : self._visited_size].view(batch, self.num_steps, *finals.shape[1:])
        mode = chain[:, -1].round().long()
        return visited, finals[torch.arange(batch, device=chain.device), mode], mode

    def sample(self, context: PlannerContext, deterministic: bool, min_std: float) -> torch.Tensor:
        """Denoise every anchor (mode), pick a mode from the final confidences, sample its `x_0`.

        Stochastic: anchors noised to the start level, Gaussian steps, mode ~ softmax(confidence). Deterministic:
        un-noised anchors, step means, the most confident mode: exactly the imitation policy's plan. With
        `noise_free_plans`, a second set of M chains starts from the same noised anchors and takes every step's mean
        (one decoder call for both sets); a deterministic chain is its own noise-free plan.
        """
        planner, steps = self.planner, self.timesteps.to(context.ego.device)
        stride = int(steps[-1]) + 1
        batch, m = context.tokens.shape[0], self.num_modes
        reference = planner.reference_plan(context)
        anchors = planner.scene_anchors(context, reference)
        alpha = planner.alphas_cumprod[steps[0]]
        x = alpha.sqrt() * anchors
        if not deterministic:
            x = x + (1.0 - alpha).sqrt() * torch.randn_like(anchors)
        twin = self.noise_free_plans and not deterministic  # M noise-free chains ride along as M more queries
        if twin:
            x = torch.cat([x, x], dim=1)
        anchor_index = torch.arange(m, device=x.device).repeat(2 if twin else 1)
        visited = []
        for i, t in enumerate(steps):
            visited.append(x[:, :m])
            x0, logits = planner.denoise(context, x, t, anchor_index=anchor_index, anchors=anchors)
            mean, std = planner.step_gaussian(x0, x, t, t - stride, self.config.eta)
            last = i == len(steps) - 1
            if deterministic or (last and self.execute_mean):
                x = mean
            else:
                noise = std.clamp(min=min_std)[..., None, None] * torch.randn_like(mean)
                if twin:
                    noise[:, m:] = 0.0
                x = mean + noise
        logits = planner.selection_logits(logits[:, :m], x0[:, :m].clamp(-1.0, 1.0), reference)
        if deterministic:
            mode = logits.argmax(dim=1)
        else:
            mode = torch.distributions.Categorical(logits=logits / self.mode_temperature).sample()
        plans = torch.cat([x, x], dim=1) if self.noise_free_plans and deterministic else x  # twin: already 2M
        return torch.cat([torch.stack(visited, dim=1).flatten(1), plans.flatten(1), mode[:, None].float()], dim=1)

    def score(self, context: PlannerContext, chain: torch.Tensor, min_std: float) -> ChainScore:
        """Every denoising step of every mode in one decoder call (modes and steps are independent queries).

        Columns: step k < K-1 scores the next samples of all M modes (the mode choice depends on all of them);
        step K-1 the executed mode's `x_0` (no column with `execute_mean`); the last column the mode choice, log
        softmax of the confidences at `x_1`. With `per_mode`, each Gaussian step has M columns instead (mode j's
        sample at step k in column k·M + j; step K-1 then scores every mode's `x_0`).
        """
        visited, final, mode = self._split(chain)
        batch, k, m = visited.shape[:3]
        steps = self.timesteps.to(chain.device)
        stride = int(steps[-1]) + 1
        t = steps.view(1, k, 1).expand(batch, k, m).flatten(1)
        inputs = visited.flatten(1, 2)
        anchor_index = torch.arange(m, device=chain.device).repeat(k)  # query k·M + j descends from anchor j
        reference = self.planner.reference_plan(context)
        anchors = self.planner.scene_anchors(context, reference)
        x0, logits = self.planner.denoise(context, inputs, t, anchor_index=anchor_index, anchors=anchors)
        mean, std = self.planner.step_gaussian(x0, inputs, t, t - stride, self.config.eta)
        mean, std = mean.view_as(visited), std.clamp(min=min_std).view(batch, k, m)
        rows = torch.arange(batch, device=chain.device)
        inner = gaussian_log_prob(visited[:, 1:], mean[:, :-1], std[:, :-1])  # (B, K-1, M)
        plans = x0.view_as(visited)[:, -1].clamp(-1.0, 1.0)
        logits = self.planner.selection_logits(logits.view(batch, k, m)[:, -1], plans, reference)
        selection = (logits / self.mode_temperature).log_softmax(dim=-1)  # (B, M)
        if self.per_mode:
            columns = [inner.flatten(1)]
            if not self.execute_mean:
                columns.append(gaussian_log_prob(self._plans(chain)[:, :m], mean[:, -1], std[:, -1]))
        else:
            columns = [inner.sum(dim=-1)]
            if not self.execute_mean:
                columns.append(gaussian_log_prob(final, mean[rows, -1, mode], std[rows, -1, mode])[:, None])
        log_prob = torch.cat([*columns, selection[rows, mode][:, None]], dim=1)
        return ChainScore(log_prob, {"mean": mean, "std": std, "selection": selection, "mode": mode})

    def mode_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters that only the mode choice reads (the confidence head)."""
        return [p for name, p in self.named_parameters() if name.startswith(MODE_PARAMETERS) and p.requires_grad]

    def mode_log_probs(self, score: ChainScore) -> torch.Tensor:
        """`(B, M)` log-probabilities of choosing each mode, at the scored chain's states."""
        return score.params["selection"]

    def decision_weights(self, denoising_gamma: float) -> torch.Tensor:
        """`gamma^(K-1), …, gamma, 1` for the denoising steps (without the 1 when the last executes its mean; each
        repeated M times with `per_mode`), then 1 for the mode choice."""
        k = self.num_steps
        steps = [denoising_gamma ** (k - i - 1) for i in range(k - 1 if self.execute_mean else k)]
        return torch.tensor([w for w in steps for _ in range(self.num_modes if self.per_mode else 1)] + [1.0])

    def kl(self, score: ChainScore, reference: ChainScore) -> torch.Tensor:
        """Gaussian KLs at the visited states (equal stds: `|Δmean|² / 2σ²`) plus KL of the mode choice."""
        mean, std, mode, selection = (score.params[k] for k in ("mean", "std", "mode", "selection"))
        delta = ((mean - reference.params["mean"]) ** 2).sum(dim=(-2, -1)) / (2.0 * std**2)  # (B, K, M)
        rows = torch.arange(len(mode), device=mode.device)
        gaussian = delta[:, :-1].sum(dim=(1, 2)) + delta[rows, -1, mode]
        categorical = (selection.exp() * (selection - reference.params["selection"])).sum(dim=-1)
        return gaussian + categorical

    def trajectory(self, context: PlannerContext, chain: torch.Tensor) -> torch.Tensor:
        return self.planner.normalizer.denormalize(self._split(chain)[1])

    def candidate_trajectories(self, context: PlannerContext, chain: torch.Tensor) -> torch.Tensor:
        """Every mode's plan `(B, M, T, 3)` in metres: what the executed one would have been under each choice; with
        `noise_free_plans`, `(B, 2M, T, 3)`: then every mode's noise-free plan."""
        return self.planner.normalizer.denormalize(self._plans(chain))
