"""The VLA with its executed mode chosen by the Reward World Model: argmax(selection logit + w · RWM reward).

Why this exists: the VLA plans 20 modes, and the best of them scores 0.96 one-stage EPDMS on synthetic navtest while
its own choice scores 0.83. The RWM alone ranks those modes worse than the VLA (0.77), but the two disagree in
useful places, and their sum ranks better than either. RL cannot teach this to the confidence head (fitting the head
to a reward's optimum on navtrain did not carry over to navtest; README), because the head has to guess per scene
what the RWM computes from the scene. So the RWM is kept at inference, as Hydra-MDP keeps its learned scorer.

The weight `w` was chosen on the 1,320 navtrain scenes the default RWM was not trained on (its 1,500 labelled scenes
left out), with `examples/mode_selection.py --exclude-spread 1500`: w = 80 picked modes scoring 0.885 there against
0.860 for the VLA's own choice. The RWM only reads what the VLA reads (cameras, LiDAR, ego status, command).

A checkpoint is a folder with `config.json` (`reward_weight`), `planner/` (a VLA checkpoint) and `reward_model/`
(an RWM checkpoint), so it loads like any agent: `make_agent("vla_reward_guided", checkpoint=folder)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.abstract_agent import CONFIG_NAME, AbstractAgent, atomic_write_text
from irlvla_env.navsim.dataclasses import AgentInput, Scene, SensorConfig, Trajectory
from irlvla_env.observations.builder import batch_observations, build_observation, required_sensors
from irlvla_env.rewards import EPDMSReward, observation_for

DEFAULT_REWARD_WEIGHT = 80.0


class RewardGuidedAgent(AbstractAgent):
    """A mode-planning VLA whose executed mode is argmax over modes of `selection logit + reward_weight · reward`.

    :param planner: a `VLAAgent` (anything whose forward gives `modes` `(B, M, T, 3)` and `confidences` `(B, M)`).
    :param reward_model: a `RewardModel` that reads only sensor inputs (a trained RWM, not the privileged scorer).
    :param reward_weight: `w`; 0 gives the planner's own choice.
    """

    def __init__(self, planner: Any, reward_model: Any, reward_weight: float = DEFAULT_REWARD_WEIGHT) -> None:
        if not np.isfinite(reward_weight) or reward_weight < 0:
            raise ValueError(f"reward_weight must be finite and >= 0, got {reward_weight}")
        if isinstance(reward_model, EPDMSReward):
            raise ValueError(f"reward model {getattr(reward_model, 'name', reward_model)!r} scores from privileged "
                             "scene data; a deployed agent may only use one that reads its sensor inputs (an RWM)")
        super().__init__(planner.trajectory_sampling)
        self.planner = planner
        self.reward_model = reward_model
        self.reward_weight = float(reward_weight)
        self.observation_config = observation_for(reward_model, planner.observation_config)

    def name(self) -> str:
        return "vla_reward_guided"

    def initialize(self) -> None:
        """Both models are loaded by the constructor or `from_pretrained`."""

    def get_sensor_config(self) -> SensorConfig:
        return required_sensors(self.observation_config)

    @torch.no_grad()
    def choose(self, observations: dict[str, Any], token: str = "scene") -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One scene's observation (no batch dim) -> the executed plan `(T, 3)` and every mode's scores."""
        self.planner.eval()
        batch = batch_observations([observations])
        out = self.planner(self.planner.observation_features(batch))
        modes = out["modes"][0].float().cpu().numpy()
        logits = out["confidences"][0].float().cpu().numpy()
        repeated = {key: np.repeat(np.asarray(value), len(modes), axis=0) for key, value in batch.items()
                    if not isinstance(value, list)}
        reward = self.reward_model.predict(repeated, modes, [token] * len(modes)).reward
        score = logits + self.reward_weight * reward
        return modes[int(np.argmax(score))], {"confidences": logits, "reward": reward, "score": score}

    def compute_trajectory(self, agent_input: AgentInput, scene: Scene | None = None) -> Trajectory:
        plan, _ = self.choose(build_observation(agent_input, self.observation_config))
        return Trajectory(plan.astype(np.float32), self.trajectory_sampling)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """`planner/`, `reward_model/` and `config.json` (written last, so a folder with it is complete)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.planner.save_pretrained(directory / "planner")
        self.reward_model.model.save_pretrained(directory / "reward_model")
        config = {"agent": self.name(), "reward_weight": self.reward_weight}
        atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides: Any) -> "RewardGuidedAgent":
        from agents.vla import VLAAgent
        from reward_models.model import RWMRewardModel

        directory = Path(directory)
        config_path = directory / CONFIG_NAME
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path} is not valid JSON: {err}") from err
        if config.get("agent") != "vla_reward_guided":
            raise ValueError(f"checkpoint {directory} holds agent {config.get('agent')!r}, not 'vla_reward_guided'")
        unknown = set(overrides) - {"reward_weight"}
        if unknown:
            raise ValueError(f"RewardGuidedAgent takes only reward_weight as an override, got {sorted(unknown)}")
        weight = overrides.get("reward_weight", config.get("reward_weight", DEFAULT_REWARD_WEIGHT))
        return cls(VLAAgent.from_pretrained(directory / "planner"),
                   RWMRewardModel.from_pretrained(directory / "reward_model"), reward_weight=weight)

    @classmethod
    def assemble(cls, directory: str | Path, planner_checkpoint: str | Path, reward_checkpoint: str | Path,
                 reward_weight: float = DEFAULT_REWARD_WEIGHT) -> Path:
        """Write the checkpoint folder of a trained VLA (IL or RL run) and a trained RWM; returns `directory`."""
        from agents.registry import make_agent
        from reward_models.model import RWMRewardModel

        agent = cls(make_agent("vla", checkpoint=planner_checkpoint),
                    RWMRewardModel.from_pretrained(reward_checkpoint), reward_weight)
        return agent.save_pretrained(directory)
