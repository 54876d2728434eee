"""IRL-VLA environment package: NAVSIM v2 data, simulation, scoring, observations and Gymnasium envs.

Importing it registers `IRLVLA-NAVSIM-v2` and its variants with Gymnasium (cheap: nothing heavy is imported).
"""

from irlvla_env.envs.registration import ENV_IDS, register_envs

register_envs()

__all__ = ["ENV_IDS", "register_envs"]
__version__ = "0.1.0"
