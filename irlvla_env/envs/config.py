"""One typed config for the NAVSIM environments (HighwayEnv-style `default_config()` returns it as a dict)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from irlvla_env.observations import ObservationConfig

MODES = ("single", "closed_loop")
BAD_ACTION_POLICIES = ("raise", "penalty")


@dataclass
class EnvConfig:
    """Everything that shapes an episode.

    :param split: NAVSIM split the scenes come from (`navtest`, `navtrain`, `navmini`).
    :param mode: `single` (one scene, one plan, one reward: the IRL-VLA setting) or `closed_loop`.
    :param reward_model: a RewardModel object, a registered name (`rwm`, `epdms`, ablations) or a checkpoint folder.
    :param observation: which sensors and sizes the observation holds.
    :param data_root: dataset root; None uses `$OPENSCENE_DATA_ROOT` or the embedded synthetic world.
    :param max_scenes: cap on the scene pool (None: all scenes of the split).
    :param bad_action: `raise` a BadActionError on NaN/inf/out-of-bounds actions, or pay `bad_action_penalty`.
    :param audit_epdms: also score every action with the rule-based EPDMS and put it in `info["epdms_rule"]`.
    :param horizon: closed loop only: number of 0.5 s planning steps per episode.
    :param execute_steps: closed loop only: 10 Hz simulation steps of each plan the ego executes (5 = 0.5 s).
    """

    split: str = "navtest"
    mode: str = "single"
    reward_model: Any = "rwm"
    observation: ObservationConfig = field(default_factory=ObservationConfig)
    data_root: str | None = None
    max_scenes: int | None = None
    bad_action: str = "raise"
    bad_action_penalty: float = -1.0
    audit_epdms: bool = False
    horizon: int = 6
    execute_steps: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.observation, dict):
            self.observation = ObservationConfig(**self.observation)
        if self.mode not in MODES:
            raise ValueError(f"EnvConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.bad_action not in BAD_ACTION_POLICIES:
            raise ValueError(f"EnvConfig.bad_action must be one of {BAD_ACTION_POLICIES}, got {self.bad_action!r}")
        if self.horizon < 1 or not 1 <= self.execute_steps <= 40:
            raise ValueError(f"EnvConfig.horizon must be >= 1 and execute_steps in [1, 40], got {self.horizon}, {self.execute_steps}")

    @classmethod
    def build(cls, config: "EnvConfig | dict | None" = None, **overrides: Any) -> "EnvConfig":
        """Merge a config object or dict with keyword overrides; unknown keys are an error that names them."""
        base = config if isinstance(config, EnvConfig) else cls()
        merged = dict(config) if isinstance(config, dict) else {}
        merged.update(overrides)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"unknown env config keys {unknown}; known keys: {sorted(known)}")
        return replace(base, **merged)

    def to_dict(self) -> dict:
        out = asdict(self)
        if not isinstance(self.reward_model, (str, type(None))):
            out["reward_model"] = getattr(self.reward_model, "name", type(self.reward_model).__name__)
        return out
