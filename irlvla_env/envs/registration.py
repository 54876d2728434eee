"""Registers the NAVSIM environments with Gymnasium when `irlvla_env` is imported.

`gym.make("irlvla_env:IRLVLA-NAVSIM-v2")` imports the package itself (Gymnasium's module-prefix form), so no
import dance is needed.
"""

from __future__ import annotations

import gymnasium as gym

ENTRY_POINT = "irlvla_env.envs.navsim_env:NavsimEnv"
VECTOR_ENTRY_POINT = "irlvla_env.envs.vector_env:NavsimVectorEnv"

# id -> config overrides
ENV_IDS: dict[str, dict] = {
    "IRLVLA-NAVSIM-v2": {"reward_model": "rwm", "mode": "single"},
    "IRLVLA-NAVSIM-EPDMS-v2": {"reward_model": "epdms", "mode": "single"},
    "IRLVLA-NAVSIM-ClosedLoop-v2": {"reward_model": "rwm", "mode": "closed_loop"},
    "IRLVLA-NAVSIM-ClosedLoop-EPDMS-v2": {"reward_model": "epdms", "mode": "closed_loop"},
}


def register_envs() -> None:
    for env_id, overrides in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        single = overrides["mode"] == "single"
        gym.register(
            id=env_id,
            entry_point=ENTRY_POINT,
            vector_entry_point=VECTOR_ENTRY_POINT if single else None,
            kwargs=dict(overrides),
        )
