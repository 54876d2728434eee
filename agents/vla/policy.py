"""`VLAAgent`: stage 1 of IRL-VLA — semantic reasoning + 3D reasoning + the unified diffusion planner.

    camera, prompt ──► SemanticReasoning (VLM) ──► semantic tokens ─┐
    LiDAR BEV, camera ─► BEVReasoning ──► BEV + agent tokens ────────┼─► DiffusionPlanner ─► M modes ─► top-1
    ego history, command ──► ego embedding ──────────────────────────┘

Trained by imitation (`agents.training.il`) with DiffusionDrive's planner loss plus TransFuser's BEV-map and
agent-box losses, then fine-tuned by PPO (`agents.ppo`) through `encode_context`, `planner.sample_chain` and
`planner.step_log_prob`. Saves as `config.json` (the full `VLAConfig`) + `model.safetensors` (weights, anchors and
the trajectory normalisation).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.abstract_agent import AbstractAgent, AbstractFeatureBuilder, AbstractTargetBuilder
from agents.features import ObservationFeatureBuilder, PerceptionTargetBuilder, TrajectoryTargetBuilder
from agents.vla.anchors import fit_range, kmeans_anchors
from agents.vla.bev import BEVOutput, BEVReasoning, perception_losses
from agents.vla.config import VLAConfig
from agents.vla.planner import DenoisingChain, DiffusionPlanner, PlannerContext
from agents.vla.semantic import PromptTokenizer, SemanticReasoning, driving_prompt
from irlvla_env.navsim.dataclasses import DEFAULT_SAMPLING, AgentInput, SensorConfig, TrajectorySampling
from irlvla_env.observations import ObservationConfig, required_sensors


class PromptFeatureBuilder(AbstractFeatureBuilder):
    """`"prompt_ids"` long `(L,)` and `"prompt_mask"` bool `(L,)`: the tokenised driving prompt of the scene."""

    def __init__(self, tokenizer: PromptTokenizer):
        self.tokenizer = tokenizer

    def get_unique_name(self) -> str:
        return f"vla_prompt_{self.tokenizer.max_tokens}"

    def compute_features(self, agent_input: AgentInput) -> dict[str, torch.Tensor]:
        statuses = agent_input.ego_statuses
        history = np.stack([np.concatenate([s.ego_pose, s.ego_velocity, s.ego_acceleration]) for s in statuses])
        ids, mask = self.tokenizer.encode([driving_prompt(statuses[-1].driving_command, history)])
        return {"prompt_ids": ids[0], "prompt_mask": mask[0]}


class VLAAgent(AbstractAgent):
    """The IRL-VLA policy. `VLAAgent()` is the CPU preset; `VLAAgent(preset="real", vlm_path=...)` the NAVSIM size.

    :param config: a `VLAConfig` or its dict (as stored in `config.json`); None builds `preset`.
    :param preset: `"cpu"` or `"real"`, used when `config` is None.
    :param overrides: `VLAConfig` fields to change (e.g. `num_inference_steps=5`).
    """

    def __init__(self, config: VLAConfig | dict[str, Any] | None = None, preset: str = "cpu", **overrides: Any):
        if config is None:
            if preset not in ("cpu", "real"):
                raise ValueError(f"unknown VLA preset {preset!r}; choose 'cpu' or 'real'")
            config = (VLAConfig.cpu if preset == "cpu" else VLAConfig.real)()
        base = config.to_dict() if isinstance(config, VLAConfig) else dict(config)
        self.config = VLAConfig.from_dict({**base, **overrides})
        super().__init__(TrajectorySampling(num_poses=self.config.num_poses, interval_length=DEFAULT_SAMPLING.interval_length))
        self.tokenizer = PromptTokenizer(self.config)
        self.semantic = SemanticReasoning(self.config, self.tokenizer.vocab_size)
        self.bev = BEVReasoning(self.config)
        self.planner = DiffusionPlanner(self.config)
        self.observation_config = ObservationConfig(
            image_height=self.config.camera_height,
            image_width=self.config.camera_width,
            lidar_bev_size=self.config.lidar_bev_size,
            lidar_bev_range=self.config.lidar_range,
            num_history=self.config.num_history,
        )

    # -- navsim interface ----------------------------------------------------------------------------------------

    def name(self) -> str:
        return "vla"

    def initialize(self) -> None:
        """Weights are loaded by `from_pretrained`; nothing is deferred."""

    def get_config(self) -> dict[str, Any]:
        return {"config": self.config.to_dict()}

    def get_sensor_config(self) -> SensorConfig:
        return required_sensors(self.observation_config)

    def get_feature_builders(self) -> list[AbstractFeatureBuilder]:
        return [ObservationFeatureBuilder(self.observation_config), PromptFeatureBuilder(self.tokenizer)]

    def get_target_builders(self) -> list[AbstractTargetBuilder]:
        c = self.config
        return [
            TrajectoryTargetBuilder(self._trajectory_sampling),
            PerceptionTargetBuilder((c.bev_semantic_height, c.bev_semantic_width), c.bev_semantic_resolution, c.max_agents),
        ]

    # -- model ---------------------------------------------------------------------------------------------------

    def encode(self, features: dict[str, torch.Tensor]) -> tuple[PlannerContext, BEVOutput]:
        """Scene features → the planner's context and the BEV module's outputs (for the auxiliary losses)."""
        _require(features, ("camera", "lidar_bev", "ego_history", "command", "prompt_ids", "prompt_mask"))
        camera = features["camera"].float()
        semantic = self.semantic(camera, features["prompt_ids"].long(), features["prompt_mask"].bool())
        bev = self.bev(features["lidar_bev"].float(), camera)
        tokens = torch.cat([semantic, self.bev.planner_tokens(bev)], dim=1)
        ego = self.planner.embed_ego(features["ego_history"].float(), features["command"].float())
        return PlannerContext(tokens, ego), bev

    def encode_context(self, features: dict[str, torch.Tensor]) -> PlannerContext:
        """The scene encoding the planner conditions on; compute once, reuse for sampling and every PPO epoch."""
        return self.encode(features)[0]

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`trajectory` `(B, T, 3)` [m] (top mode), `modes` `(B, M, T, 3)`, `confidences` `(B, M)` logits, the
        perception outputs and the context (so `compute_loss` need not encode the scene again)."""
        context, bev = self.encode(features)
        predictions = self.planner(context)
        predictions.update(
            bev_semantic_logits=bev.semantic_logits,
            agent_states=bev.agent_states,
            agent_logits=bev.agent_logits,
            context_tokens=context.tokens,
            context_ego=context.ego,
        )
        return predictions

    def compute_loss(
        self, features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], predictions: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Weighted sum of the planner's L1 + focal terms and the BEV-map / agent-box terms (`VLAConfig` weights)."""
        c = self.config
        if self.training:  # imitation alone fits the ego statistics, so PPO's rollout and update agree on them
            self.planner.ego_standardizer.update(features["ego_history"].float().flatten(1))
        context = PlannerContext(predictions["context_tokens"], predictions["context_ego"])
        terms = self.planner.imitation_loss(context, targets["trajectory"].float())
        terms.update(
            perception_losses(
                predictions["bev_semantic_logits"], predictions["agent_states"], predictions["agent_logits"], targets
            )
        )
        weights = {
            "trajectory_reg": c.trajectory_reg_weight,
            "trajectory_cls": c.trajectory_cls_weight,
            "reference_reg": c.reference_reg_weight,
            "bev_semantic": c.bev_semantic_weight,
            "agent_class": c.agent_class_weight,
            "agent_box": c.agent_box_weight,
        }
        terms["loss"] = sum(weights[name] * value for name, value in terms.items())
        return terms

    def get_optimizers(self) -> torch.optim.Optimizer:
        """AdamW; the VLM's parameters at `lr · vlm_lr_scale`, frozen ones left out."""
        vlm = [p for p in self.semantic.vlm.parameters() if p.requires_grad]
        vlm_ids = {id(p) for p in vlm}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in vlm_ids]
        groups = [{"params": rest, "lr": self.config.lr}]
        if vlm:
            groups.append({"params": vlm, "lr": self.config.lr * self.config.vlm_lr_scale})
        return torch.optim.AdamW(groups, lr=self.config.lr, weight_decay=self.config.weight_decay)

    # -- data-dependent set-up and RL helpers --------------------------------------------------------------------

    def fit_anchors(self, trajectories: np.ndarray, seed: int = 0) -> None:
        """k-means anchors and the normalisation range from training futures `(N, T, 3)`; call before training.

        With `reference_anchor`, mode 0 starts from the scene's reference plan, so M - 1 clusters fill the other
        slots and slot 0 holds the mean future (a placeholder the planner never reads)."""
        trajectories = np.asarray(trajectories, dtype=np.float64)
        if self.config.reference_anchor:
            clusters = kmeans_anchors(trajectories, self.config.num_anchors - 1, seed=seed)
            anchors = np.concatenate([trajectories.mean(axis=0, keepdims=True), clusters])
        else:
            anchors = kmeans_anchors(trajectories, self.config.num_anchors, seed=seed)
        low, high = fit_range(trajectories)
        low[2], high[2] = max(low[2], -np.pi), min(high[2], np.pi)
        self.planner.set_anchors(anchors, low, high)
        self.config.trajectory_low, self.config.trajectory_high = tuple(low.tolist()), tuple(high.tolist())

    def observation_features(self, observations: dict[str, Any]) -> dict[str, torch.Tensor]:
        """A batch of environment observations (`irlvla_env.observations` keys, leading batch dim) → features."""
        _require(observations, ("camera", "lidar_bev", "ego_status", "command"))
        device = next(self.parameters()).device
        camera = torch.as_tensor(np.asarray(observations["camera"]), device=device)
        if camera.dtype == torch.uint8:
            camera = camera.float() / 255.0
        ego = np.asarray(observations["ego_status"], dtype=np.float32)
        command = np.asarray(observations["command"], dtype=np.float32)
        prompts = [driving_prompt(c, e) for c, e in zip(command, ego)]
        ids, mask = self.tokenizer.encode(prompts)
        return {
            "camera": camera.permute(0, 3, 1, 2).contiguous(),
            "lidar_bev": torch.as_tensor(np.asarray(observations["lidar_bev"], dtype=np.float32), device=device),
            "ego_history": torch.as_tensor(ego, device=device),
            "command": torch.as_tensor(command, device=device),
            "prompt_ids": ids.to(device),
            "prompt_mask": mask.to(device),
        }

    def chain_trajectory(self, chain: DenoisingChain | torch.Tensor) -> torch.Tensor:
        """The executed trajectory `(B, T, 3)` [m, m, rad] of a chain: its last sample, denormalised."""
        samples = chain.samples if isinstance(chain, DenoisingChain) else chain
        return self.planner.normalizer.denormalize(samples[:, -1])


def _require(mapping: dict[str, Any], keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if key not in mapping]
    if missing:
        raise KeyError(f"VLAAgent input lacks {missing}; it has {sorted(mapping)}")


__all__ = ["PromptFeatureBuilder", "VLAAgent"]
