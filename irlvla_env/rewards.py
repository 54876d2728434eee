"""The `RewardModel` protocol, the rule-based EPDMS reward, and a registry of reward models by name.

Everything that scores a candidate trajectory — the rule-based scorer that needs privileged scene data, or a
learned Reward World Model that sees only sensors — answers the same batch call, so the Gymnasium env, the
PPO loop and the evaluation swap one for the other with a single argument (`reward_model="epdms"`, `"rwm"`, a
checkpoint folder, or an object).

Higher layers register themselves by *string entry points* (`"reward_models.registry:rwm"`), resolved only
when asked for, so importing `irlvla_env` never imports `reward_models`.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from irlvla_env.scoring.columns import METRIC_COLUMNS, MULTIPLIERS, SHORT_ORDER, WEIGHTS

# Sub-score short names in the order of the EPDMS formula (`NC` … `EC`); navsim's long names in METRIC_COLUMNS.
SUBSCORE_NAMES = SHORT_ORDER


def compose_epdms(subscores: dict[str, np.ndarray], ec_available: bool = True) -> np.ndarray:
    """EPDMS = NC·DAC·DDC·TLC·(5 EP + 5 TTC + 2 LK + 2 HC + 2 EC)/16 (spec §4.1).

    Without a predecessor frame (one-stage scoring) EC's value *and* weight drop out, giving a denominator of 14.
    Works on numpy arrays of any matching shape, including expected values of predicted distributions.
    """
    product = np.ones_like(np.asarray(subscores["NC"], dtype=np.float64))
    for name in MULTIPLIERS:
        product = product * np.asarray(subscores[name], dtype=np.float64)
    weights = {k: w for k, w in WEIGHTS.items() if ec_available or k != "EC"}
    weighted = sum(w * np.asarray(subscores[k], dtype=np.float64) for k, w in weights.items())
    return product * weighted / sum(weights.values())


@dataclass
class RewardOutput:
    """One batch of rewards: per-sub-score values, the composed EPDMS, the reward RL maximises, uncertainty.

    :param subscores: short name (`NC` … `EC`) -> `(B,)`.
    :param epdms: `(B,)` the EPDMS of each trajectory.
    :param reward: `(B,)` what RL maximises (EPDMS for the rule-based scorer; a model's choice otherwise).
    :param uncertainty: `(B,)` e.g. ensemble disagreement, or `None` for an exact scorer.
    """

    subscores: dict[str, np.ndarray]
    epdms: np.ndarray
    reward: np.ndarray
    uncertainty: np.ndarray | None = None

    def __post_init__(self) -> None:
        size = np.shape(self.epdms)
        if len(size) != 1:
            raise ValueError(f"RewardOutput.epdms must be 1-D (B,), got shape {size}")
        arrays = {"reward": self.reward, **{f"subscores[{k}]": v for k, v in self.subscores.items()}}
        if self.uncertainty is not None:
            arrays["uncertainty"] = self.uncertainty
        for name, value in arrays.items():
            if np.shape(value) != size:
                raise ValueError(f"RewardOutput.{name} has shape {np.shape(value)}, expected {size}")
        missing = [k for k in SUBSCORE_NAMES if k not in self.subscores]
        if missing:
            raise ValueError(f"RewardOutput.subscores misses {missing}")

    def __len__(self) -> int:
        return len(self.epdms)


@runtime_checkable
class RewardModel(Protocol):
    """A batch scorer of candidate trajectories. Row `b` of every input belongs to scene `tokens[b]`."""

    name: str

    def predict(
        self, observations: dict[str, np.ndarray], trajectories: np.ndarray, tokens: Sequence[str]
    ) -> RewardOutput: ...


def observation_for(model: Any, config: Any) -> Any:
    """`config` (an `ObservationConfig`) extended by what `model` reads beyond it.

    A model may declare `observation_needs`, a dict of `ObservationConfig` fields (e.g. `{"lidar_history": 2}` for
    a Reward World Model that sees past LiDAR sweeps); counts are raised to at least the model's, never lowered,
    so a policy keeps what it reads too.
    """
    from dataclasses import replace

    needs = dict(getattr(model, "observation_needs", None) or {})
    raised = {key: value for key, value in needs.items() if getattr(config, key) < value}
    return replace(config, **raised) if raised else config


def check_observation_for(model: Any, config: Any, where: str) -> None:
    """Raise a ValueError naming the fields when observations built with `config` miss inputs `model` reads."""
    if observation_for(model, config) != config:
        needs = getattr(model, "observation_needs", {})
        raise ValueError(f"{where} builds observations with {config}, but reward model "
                         f"{getattr(model, 'name', model)!r} reads {needs}; build it with those ObservationConfig fields")


def check_trajectories(trajectories: np.ndarray, tokens: Sequence[str] | None = None) -> np.ndarray:
    """Validate a `(B, 8, 3)` batch of local trajectories (and its tokens); returns it as float32."""
    array = np.asarray(trajectories)
    if array.ndim != 3 or array.shape[1:] != (8, 3):
        raise ValueError(f"trajectories must have shape (B, 8, 3), got {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = np.unique(np.nonzero(~np.isfinite(array))[0])
        raise ValueError(f"trajectories contain NaN or inf in rows {bad[:10].tolist()}")
    if tokens is not None and len(tokens) != len(array):
        raise ValueError(f"got {len(tokens)} tokens for {len(array)} trajectories")
    return array.astype(np.float32, copy=False)


def group_rows_by_token(tokens: Sequence[str]) -> dict[str, np.ndarray]:
    """token -> the row indices that belong to it, in first-seen order; scene work is then done once per token."""
    groups: dict[str, list[int]] = {}
    for row, token in enumerate(tokens):
        groups.setdefault(str(token), []).append(row)
    return {token: np.asarray(rows, dtype=np.int64) for token, rows in groups.items()}


class EPDMSReward:
    """The rule-based EPDMS (the NAVSIM v2 scorer), as a `RewardModel`.

    It needs privileged scene data (map, future boxes, traffic lights), read from metric caches by token. The store
    keeps the caches it read in memory for the whole process (`MetricCacheStore.get`); missing ones are built
    through `loader` (any object with `get_scene_from_token`) and written to the store, so a second run starts warm.

    :param metric_cache_root: folder of a `MetricCacheStore`; default `exp_root()/metric_cache`.
    :param loader: optional scene loader used to build caches that are not on disk yet, or a split name
        (`"navtest"`) whose loader is made on the first missing cache.
    :param scorer_config: a `ScorerConfig`, default the navsim settings.
    """

    name = "epdms"

    def __init__(
        self,
        metric_cache_root: str | Path | None = None,
        loader: Any | str | None = None,
        scorer_config: Any | None = None,
    ) -> None:
        from irlvla_env.paths import exp_root
        from irlvla_env.scoring.metric_cache import MetricCacheStore

        self.metric_cache_root = Path(metric_cache_root) if metric_cache_root else exp_root() / "metric_cache"
        self.store = MetricCacheStore(self.metric_cache_root)
        self.loader = loader
        self.scorer_config = scorer_config

    def metric_cache(self, token: str) -> Any:
        """The metric cache of `token`: from the store (in memory after its first read), else built from the loader
        and written to the store."""
        if token in self.store:
            return self.store.get(token)
        if self.loader is None:
            raise KeyError(
                f"no metric cache for token {token!r} in {self.metric_cache_root}; pass loader=... to build it, "
                "or run `irlvla score` on the split first"
            )
        from irlvla_env.scoring.metric_cache import build_metric_cache

        if isinstance(self.loader, str):
            from irlvla_env.navsim.loader import load_split

            self.loader = load_split(self.loader)
        cache = build_metric_cache(self.loader.get_scene_from_token(token))
        self.store.put(cache)
        return cache

    def score_scene(self, token: str, trajectories: np.ndarray, previous: Any | None = None) -> Any:
        """The full `EPDMSResult` of `(K, 8, 3)` trajectories of one scene."""
        from irlvla_env.scoring.epdms import score_trajectories

        kwargs = {} if self.scorer_config is None else {"config": self.scorer_config}
        return score_trajectories(self.metric_cache(token), check_trajectories(trajectories), previous, **kwargs)

    def predict(
        self, observations: dict[str, np.ndarray], trajectories: np.ndarray, tokens: Sequence[str]
    ) -> RewardOutput:
        """Score every row against its own scene; `observations` are not needed by a privileged scorer."""
        trajectories = check_trajectories(trajectories, tokens)
        batch = len(trajectories)
        subscores = {name: np.zeros(batch, dtype=np.float64) for name in SUBSCORE_NAMES}
        epdms = np.zeros(batch, dtype=np.float64)
        for token, rows in group_rows_by_token(tokens).items():
            result = self.score_scene(token, trajectories[rows])
            for name, values in result_subscores(result).items():
                subscores[name][rows] = values
            epdms[rows] = np.asarray(result.score, dtype=np.float64)
        return RewardOutput(subscores=subscores, epdms=epdms, reward=epdms.copy(), uncertainty=None)


def result_subscores(result: Any) -> dict[str, np.ndarray]:
    """Short name -> `(K,)` float64 from an `EPDMSResult` (whose columns use navsim's long names)."""
    return {short: np.asarray(result.columns[long], dtype=np.float64) for short, long in METRIC_COLUMNS.items()}


# ----------------------------------------------------------------------------------------------- registry

RewardFactory = Callable[..., RewardModel]
_REGISTRY: dict[str, RewardFactory | str] = {}


def register_reward_model(name: str, factory: RewardFactory | str, overwrite: bool = False) -> None:
    """Make `name` resolvable by `make_reward_model`.

    :param factory: a callable returning a `RewardModel`, or a `"module:attr"` string imported on first use
        (how higher layers register without being imported here).
    """
    if isinstance(factory, str) and ":" not in factory:
        raise ValueError(f"reward model entry point must look like 'module:attr', got {factory!r}")
    if name in _REGISTRY and not overwrite and _REGISTRY[name] != factory:
        raise ValueError(f"reward model {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = factory


def available_reward_models() -> list[str]:
    return sorted(_REGISTRY)


def _resolve_factory(name: str) -> RewardFactory:
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module_name, attr = factory.split(":", 1)
        factory = getattr(importlib.import_module(module_name), attr)
        _REGISTRY[name] = factory
    return factory


CHECKPOINT_TYPE_KEY = "reward_model_type"


def _checked(model: Any, what: str) -> RewardModel:
    if not callable(getattr(model, "predict", None)):
        raise TypeError(f"{what} gave {model!r}, which has no predict(observations, trajectories, tokens)")
    return model


def make_reward_model(spec: RewardModel | str | Path, **kwargs: Any) -> RewardModel:
    """Resolve a reward model from an object, a registered name, or a checkpoint folder.

    A checkpoint folder holds `config.json` with a `"reward_model_type"` key naming a registered factory, which
    is called with `checkpoint=<folder>`. Keyword arguments go to the factory.
    """
    if not isinstance(spec, (str, Path)):
        return _checked(spec, "reward model object")
    if isinstance(spec, str) and spec in _REGISTRY:
        return _checked(_resolve_factory(spec)(**kwargs), f"factory of {spec!r}")
    path = Path(spec).expanduser()
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"reward model folder {path} has no config.json")
        try:
            kind = json.loads(config_path.read_text())[CHECKPOINT_TYPE_KEY]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{config_path} must be a JSON object with a {CHECKPOINT_TYPE_KEY!r} key") from err
        if kind not in _REGISTRY:
            raise ValueError(f"{config_path}: unknown {CHECKPOINT_TYPE_KEY} {kind!r}; known: {available_reward_models()}")
        return _checked(_resolve_factory(kind)(checkpoint=path, **kwargs), f"factory of {kind!r}")
    raise ValueError(
        f"unknown reward model {str(spec)!r}: not a registered name ({', '.join(available_reward_models())}) "
        "and not a checkpoint folder"
    )


register_reward_model("epdms", EPDMSReward)
for _name, _attr in (
    ("rwm", "rwm"),
    ("rwm-irl-only", "rwm_irl_only"),
    ("rwm-supervised-only", "rwm_supervised_only"),
    ("rwm-no-camera", "rwm_no_camera"),
    ("rwm-no-lidar", "rwm_no_lidar"),
    ("rwm-map-head", "rwm_map_head"),
    ("rwm-mirror", "rwm_mirror"),
    ("rwm-large", "rwm_large"),
):
    register_reward_model(_name, f"reward_models.registry:{_attr}")
