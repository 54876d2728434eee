"""Factories behind the reward-model names registered in `irlvla_env.rewards` (`rwm` and its ablations).

`irlvla_env.rewards` names these as `"reward_models.registry:<attr>"` strings, so this module — and torch — load only
when a learned reward is actually asked for. Each factory loads `checkpoint` if given, else the variant's latest
trained model under `exp_root()/<variant>/latest`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from irlvla_env.paths import exp_root
from reward_models.model import RWMRewardModel


def default_checkpoint(variant: str) -> Path:
    """`exp_root()/<variant>/latest`, or an error that says how to make it."""
    path = exp_root() / variant / "latest"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no trained reward model {variant!r} at {path}. Train one with `irlvla train rwm --variant {variant}`, "
            'or use the rule-based reward (reward_model="epdms").'
        )
    return path


def load_variant(variant: str, checkpoint: str | Path | None = None, device: str = "cpu", **_: Any) -> RWMRewardModel:
    """The RWM of `variant` as a `RewardModel` (named after the variant)."""
    folder = Path(checkpoint).expanduser() if checkpoint is not None else default_checkpoint(variant)
    return RWMRewardModel.from_pretrained(folder, name=variant, device=device)


rwm = functools.partial(load_variant, "rwm")
rwm_irl_only = functools.partial(load_variant, "rwm-irl-only")
rwm_supervised_only = functools.partial(load_variant, "rwm-supervised-only")
rwm_no_camera = functools.partial(load_variant, "rwm-no-camera")
rwm_no_lidar = functools.partial(load_variant, "rwm-no-lidar")
rwm_map_head = functools.partial(load_variant, "rwm-map-head")
rwm_mirror = functools.partial(load_variant, "rwm-mirror")
rwm_large = functools.partial(load_variant, "rwm-large")
