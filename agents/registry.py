"""Agents by name, so the command line, the evaluation and the RL stage build them the same way.

`make_agent("transfuser")` builds a fresh agent; `make_agent("transfuser", checkpoint=folder)` loads a trained one
from `config.json` + `model.safetensors` (a training run folder works too: its `model/` subfolder is used).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from agents.abstract_agent import CONFIG_NAME, AbstractAgent

# name -> "module:class", imported on demand so that the VLA's heavy dependencies load only when asked for.
AGENT_CLASSES = {
    "constant_velocity": "agents.baselines.constant_velocity:ConstantVelocityAgent",
    "ego_status_mlp": "agents.baselines.ego_status_mlp:EgoStatusMLPAgent",
    "human": "agents.baselines.human:HumanAgent",
    "transfuser": "agents.baselines.transfuser:TransfuserAgent",
    "vla": "agents.vla:VLAAgent",
    "vla_reward_guided": "agents.reward_guided:RewardGuidedAgent",
}
# Agents with nothing to learn; a checkpoint for them is a mistake worth reporting.
PARAMETER_FREE = frozenset({"constant_velocity", "human"})
# Agents put together from trained models rather than trained themselves (`irlvla guide` writes their checkpoint).
ASSEMBLED = frozenset({"vla_reward_guided"})


def agent_class(name: str) -> type[AbstractAgent]:
    """The class registered under `name`."""
    if name not in AGENT_CLASSES:
        raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(sorted(AGENT_CLASSES))}")
    module_name, class_name = AGENT_CLASSES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """The folder holding `config.json`: `checkpoint` itself or its `model/` subfolder (an IL run folder)."""
    path = Path(checkpoint).expanduser()
    for candidate in (path, path / "model"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise FileNotFoundError(f"no {CONFIG_NAME} in checkpoint folder {path} (nor in {path / 'model'})")


def make_agent(name: str, checkpoint: str | Path | None = None, **kwargs: Any) -> AbstractAgent:
    """Build agent `name`, from `checkpoint` if given; `kwargs` go to the constructor (or override the config)."""
    cls = agent_class(name)
    if checkpoint is None:
        agent = cls(**kwargs)
    elif name in PARAMETER_FREE:
        raise ValueError(f"agent {name!r} has no parameters, so it takes no checkpoint (got {checkpoint})")
    else:
        agent = cls.from_pretrained(resolve_checkpoint(checkpoint), **kwargs)
    agent.initialize()
    return agent
