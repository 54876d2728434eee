"""navsim's agent interface (spec §2.3), plus safetensors checkpoints in the diffusers/transformers style.

An agent is a `torch.nn.Module`. The privilege split lives in the types: feature builders see only the
`AgentInput` (what a deployed policy sees), target builders see the ground-truth `Scene` (what training may use).
`compute_trajectory` is a template method, so an agent that defines feature builders and `forward` runs in the
evaluation scripts unchanged.

Learnable agents also save and load as a folder holding `config.json` (the constructor's keyword arguments and the
agent's name) and `model.safetensors` (the state dict); see `save_pretrained` / `from_pretrained`.
"""

from __future__ import annotations

import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from irlvla_env.navsim.dataclasses import DEFAULT_SAMPLING, AgentInput, Scene, SensorConfig, Trajectory, TrajectorySampling

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class AbstractFeatureBuilder(ABC):
    """Turns an `AgentInput` into named tensors without a batch dimension (cached per token during training)."""

    @abstractmethod
    def get_unique_name(self) -> str:
        """Names the builder's cache file, so two builders of one agent must differ."""

    @abstractmethod
    def compute_features(self, agent_input: AgentInput) -> dict[str, torch.Tensor]:
        """Features of one sample."""


class AbstractTargetBuilder(ABC):
    """Turns a ground-truth `Scene` into named training targets without a batch dimension."""

    @abstractmethod
    def get_unique_name(self) -> str:
        """Names the builder's cache file, so two builders of one agent must differ."""

    @abstractmethod
    def compute_targets(self, scene: Scene) -> dict[str, torch.Tensor]:
        """Targets of one sample."""


class AbstractAgent(nn.Module, ABC):
    """A planner that maps an `AgentInput` to an 8-pose local `Trajectory` (navsim's `AbstractAgent`)."""

    def __init__(self, trajectory_sampling: TrajectorySampling = DEFAULT_SAMPLING, requires_scene: bool = False):
        super().__init__()
        self._trajectory_sampling = trajectory_sampling
        self.requires_scene = requires_scene

    @property
    def trajectory_sampling(self) -> TrajectorySampling:
        return self._trajectory_sampling

    @abstractmethod
    def name(self) -> str:
        """The agent's name, used in output folders and tables."""

    @abstractmethod
    def initialize(self) -> None:
        """Called once per worker before inference; agents that load weights lazily do it here."""

    @abstractmethod
    def get_sensor_config(self) -> SensorConfig:
        """The sensors (and history frames) the loader must read for this agent."""

    def compute_trajectory(self, agent_input: AgentInput, scene: Scene | None = None) -> Trajectory:
        """Plan one trajectory: run the feature builders, add a batch dimension, `forward` without gradients.

        `scene` is only for agents with `requires_scene=True` (privileged baselines such as log replay); the
        default implementation ignores it so a learned agent cannot peek at the future by accident.
        """
        self.eval()
        features: dict[str, torch.Tensor] = {}
        for builder in self.get_feature_builders():
            features.update(builder.compute_features(agent_input))
        device = _module_device(self)
        batch = {key: value.unsqueeze(0).to(device) for key, value in features.items()}
        with torch.no_grad():
            predictions = self.forward(batch)
        poses = predictions["trajectory"][0].detach().float().cpu().numpy()
        return Trajectory(poses, self._trajectory_sampling)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batched prediction; the result holds at least `"trajectory"` of shape `[B, T, 3]`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def get_feature_builders(self) -> list[AbstractFeatureBuilder]:
        raise NotImplementedError(f"{type(self).__name__} has no feature builders")

    def get_target_builders(self) -> list[AbstractTargetBuilder]:
        raise NotImplementedError(f"{type(self).__name__} has no target builders (it is not trainable)")

    def compute_loss(
        self,
        features: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        predictions: dict[str, torch.Tensor],
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """The training loss; may return a dict whose `"loss"` entry is optimised and the rest are logged."""
        raise NotImplementedError(f"{type(self).__name__} is not trainable")

    def get_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        """An optimizer, or `{"optimizer": ..., "lr_scheduler": ...}` as in navsim."""
        raise NotImplementedError(f"{type(self).__name__} is not trainable")

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable constructor keyword arguments that rebuild this agent's architecture."""
        raise NotImplementedError(f"{type(self).__name__} has no checkpoint config")

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` into `directory`, each atomically."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"agent": self.name(), **self.get_config()}
        atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True))
        state = {key: value.detach().cpu().contiguous() for key, value in self.state_dict().items()}
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".safetensors")
        os.close(fd)
        try:
            save_file(state, tmp)
            os.replace(tmp, directory / WEIGHTS_NAME)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides: Any) -> "AbstractAgent":
        """Rebuild the agent from `config.json` (updated by `overrides`) and load `model.safetensors` strictly.

        A folder written by another agent, or weights that do not fit the configured architecture, raise an error
        that names the folder and what disagrees.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint file missing: {path}")
        config = json.loads(config_path.read_text())
        saved_name = config.pop("agent", None)
        try:
            agent = cls(**{**config, **overrides})
        except TypeError as err:
            raise ValueError(f"checkpoint config {config_path} does not fit {cls.__name__}: {err}") from err
        if saved_name != agent.name():
            raise ValueError(f"checkpoint {directory} holds agent {saved_name!r}, not {agent.name()!r}")
        state = load_file(str(weights_path))
        try:
            agent.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"checkpoint {weights_path} does not match the architecture in {config_path}: {err}") from err
        return agent


def _module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU for a parameter-free agent)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
