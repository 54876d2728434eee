"""IRL-VLA stage 1: the vision-language-action driving policy (semantic + 3D reasoning + diffusion planner).

`VLAAgent` is imported on first access, so the modules (config, planner, BEV, VLM) load without the feature
builders and the observation layer they pull in.
"""

from typing import Any

from agents.vla.config import VLAConfig
from agents.vla.planner import DenoisingChain, DiffusionPlanner, PlannerContext

__all__ = ["DenoisingChain", "DiffusionPlanner", "PlannerContext", "VLAAgent", "VLAConfig"]


def __getattr__(name: str) -> Any:
    if name == "VLAAgent":
        from agents.vla.policy import VLAAgent

        return VLAAgent
    raise AttributeError(f"module 'agents.vla' has no attribute {name!r}")
