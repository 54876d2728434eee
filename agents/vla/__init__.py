"""IRL-VLA stage 1: the vision-language-action driving policy (semantic + 3D reasoning + diffusion planner)."""

from agents.vla.config import VLAConfig
from agents.vla.planner import DenoisingChain, DiffusionPlanner, PlannerContext
from agents.vla.policy import VLAAgent

__all__ = ["DenoisingChain", "DiffusionPlanner", "PlannerContext", "VLAAgent", "VLAConfig"]
