"""Gymnasium environments over NAVSIM scenes with a reward model as step function.

Heavy classes are imported lazily so that `import irlvla_env` (which registers the ids) stays light.
"""

from __future__ import annotations

from irlvla_env.lazy import lazy_exports

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

__getattr__ = lazy_exports(__name__, globals(), _LAZY)
