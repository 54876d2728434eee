"""The scenes an environment draws episodes from, with their observations cached for fast stepping."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from irlvla_env.navsim.loader import SceneLoader, load_split
from irlvla_env.observations import ObservationCache, ObservationConfig, required_sensors
from irlvla_env.rewards import check_observation_for, make_reward_model, observation_for
from irlvla_env.paths import data_root as default_data_root
from irlvla_env.paths import exp_root


def default_cache_root(data_root: Path) -> Path:
    """One observation cache per data set (its resolved path and manifest), so a regenerated world never
    serves stale observations."""
    from irlvla_env.synthetic.generate import MANIFEST_NAME

    manifest = data_root / MANIFEST_NAME
    identity = str(data_root.resolve()) + (manifest.read_text() if manifest.is_file() else "")
    return exp_root() / "observation_cache" / hashlib.sha1(identity.encode()).hexdigest()[:12]


class ScenePool:
    """Tokens of one split plus their observations.

    Observations are built once per token and kept on disk (`ObservationCache`) and in memory, so a `single`
    episode costs one dictionary lookup plus the reward-model call.

    :param split: split name understood by `load_split`.
    :param observation: observation config (decides which sensors are loaded).
    :param data_root: dataset root; None for the default.
    :param max_scenes: keep only the first `max_scenes` tokens (sorted, so the pool is reproducible).
    """

    def __init__(
        self,
        split: str,
        observation: ObservationConfig,
        data_root: str | Path | None = None,
        max_scenes: int | None = None,
        cache_root: Path | None = None,
    ) -> None:
        self.split = split
        self.data_root = Path(data_root) if data_root is not None else default_data_root()
        self.observation_config = observation
        self.loader: SceneLoader = load_split(
            split, data_root=data_root, sensor_config=required_sensors(observation)
        )
        tokens = sorted(self.loader.tokens)
        if max_scenes is not None:
            tokens = tokens[:max_scenes]
        if not tokens:
            raise ValueError(f"split {split!r} has no scenes under {self.loader_root}")
        self.tokens: list[str] = tokens
        self._cache = ObservationCache(cache_root or default_cache_root(self.data_root), observation)
        self._memory: dict[str, dict[str, np.ndarray]] = {}

    @property
    def loader_root(self) -> str:
        return str(getattr(self.loader, "data_path", "?"))

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._memory or token in set(self.tokens)

    def sample(self, rng: np.random.Generator) -> str:
        return self.tokens[int(rng.integers(len(self.tokens)))]

    def reward_model(self, spec: Any) -> Any:
        """Resolve a reward model; a privileged scorer without a loader gets this pool's, to build metric caches."""
        model = make_reward_model(spec)
        if getattr(model, "loader", False) is None:
            model.loader = self.loader
        return model

    def observation(self, token: str) -> dict[str, np.ndarray]:
        """The cached observation of `token` (built and stored on first use)."""
        obs = self._memory.get(token)
        if obs is None:
            if token not in self.tokens:
                raise KeyError(f"token {token!r} is not in the {self.split} scene pool ({len(self.tokens)} scenes)")
            obs = self._cache.get_or_build(token, self.loader)
            self._memory[token] = obs
        return obs


def pool_and_reward_model(config: Any, scene_pool: ScenePool | None = None) -> tuple[ScenePool, Any]:
    """The scene pool and reward model of an env built from `config` (an `EnvConfig`).

    `config.observation` is first extended by what the reward model reads (e.g. past LiDAR sweeps), so the
    observation holds what the policy sees and what the reward needs; a given `scene_pool` must hold it already.
    """
    reward_model = make_reward_model(config.reward_model)
    config.observation = observation_for(reward_model, config.observation)
    if scene_pool is not None:
        check_observation_for(reward_model, scene_pool.observation_config, "the given scene pool")
    pool = scene_pool or ScenePool(config.split, config.observation, config.data_root, config.max_scenes)
    return pool, pool.reward_model(reward_model)
