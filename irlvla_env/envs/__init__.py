"""Gymnasium environments over NAVSIM scenes with a reward model as step function.

Heavy classes are imported lazily so that `import irlvla_env` (which registers the ids) stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "NavsimEnv": "irlvla_env.envs.navsim_env",
    "NavsimVectorEnv": "irlvla_env.envs.vector_env",
    "EnvConfig": "irlvla_env.envs.config",
    "ScenePool": "irlvla_env.envs.scene_pool",
    "BadActionError": "irlvla_env.envs.action",
    "trajectory_space": "irlvla_env.envs.action",
    "SB3NavsimVecEnv": "irlvla_env.envs.wrappers",
    "make_sb3_env": "irlvla_env.envs.wrappers",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'irlvla_env.envs' has no attribute {name!r}")
