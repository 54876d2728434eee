"""IRL-VLA stage 1: the vision-language-action driving policy (semantic + 3D reasoning + diffusion planner).

`VLAAgent` is imported on first access, so the modules (config, planner, BEV, VLM) load without the feature
builders and the observation layer they pull in.
"""

from agents.vla.config import VLAConfig
from agents.vla.planner import DenoisingChain, DiffusionPlanner, PlannerContext
from irlvla_env.lazy import lazy_exports

__all__ = ["DenoisingChain", "DiffusionPlanner", "PlannerContext", "VLAAgent", "VLAConfig"]

__getattr__ = lazy_exports(__name__, globals(), {"VLAAgent": "agents.vla.policy"})
