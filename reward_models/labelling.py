"""Label every candidate trajectory of every scene with the rule-based EPDMS scorer, in resumable shards.

This is the expensive, privileged half of reward learning (map, future boxes, traffic lights); it runs once. A shard
holds, for `shard_size` scenes, everything training and evaluation need and nothing they must recompute:

    tokens (S,)            str
    candidates (S, K, 8, 3) float32  local poses; row 0 of each scene is the human demonstration
    sources (S, K)         int8     `candidates.Source`
    labels (S, K, 9)       float32  sub-scores in `SUBSCORE_NAMES` order (NC … EC)
    epdms (S, K)           float32  the scorer's EPDMS
    obs_<key> (S, ...)     the policy's observation of the scene (camera, lidar_bev, ego_status, command)

Shards are written atomically, so a shard file that exists is complete and a crashed run resumes by skipping them.
`labelling.json` records the settings; reusing a folder with different settings is an error rather than a silent mix.
Scenes are labelled in parallel with Ray (a local cluster by default, any address if given), or in-process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from irlvla_env.parallel import map_chunks
from irlvla_env.rewards import SUBSCORE_NAMES, result_subscores
from reward_models.candidates import CandidateConfig, CandidateGenerator, PolicySampler

MANIFEST_NAME = "labelling.json"
CALIBRATION_NAME = "camera_calibration.json"
OBSERVATION_PREFIX = "obs_"


@dataclass
class LabellingConfig:
    """What gets labelled and how the work is spread.

    :param split: NAVSIM split whose scenes are labelled.
    :param data_root: dataset root (None: `$OPENSCENE_DATA_ROOT` or the synthetic world).
    :param maps_root: map root (None: `$NUPLAN_MAPS_ROOT` or the default).
    :param max_scenes: cap on scenes (None: all), spread over every log (`SceneLoader.spread_tokens`).
    :param shard_size: scenes per shard file (the unit of resumption and of parallel work).
    :param num_workers: parallel Ray workers; 1 labels in-process without Ray.
    :param ray_address: None starts a local Ray; `"auto"` or `"ray://host:port"` joins a cluster.
    :param metric_cache_root: where metric caches are stored for reuse (None: `exp_root()/metric_cache`).
    :param candidates: per-scene candidate counts and seed.
    :param observation: keyword arguments of `ObservationConfig` (sizes of what the policy sees).
    :param policy_id: identity of the policy whose samples fill the policy slots (e.g. a digest of its weights), so
        labels made with another policy go to another folder instead of being silently reused.
    """

    split: str = "navtrain"
    data_root: str | None = None
    maps_root: str | None = None
    max_scenes: int | None = None
    shard_size: int = 32
    num_workers: int = 1
    ray_address: str | None = None
    metric_cache_root: str | None = None
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    observation: dict[str, Any] = field(default_factory=dict)
    policy_id: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.candidates, dict):
            self.candidates = CandidateConfig(**self.candidates)
        if self.shard_size < 1 or self.num_workers < 1:
            raise ValueError(f"shard_size and num_workers must be >= 1, got {self.shard_size}, {self.num_workers}")

    def identity(self) -> dict[str, Any]:
        """The settings that change the labels (not how fast they are made)."""
        return {
            "split": self.split,
            "max_scenes": self.max_scenes,
            "scene_selection": "spread over logs",  # SceneLoader.spread_tokens; earlier labels took a prefix
            "shard_size": self.shard_size,
            "candidates": asdict(self.candidates),
            "observation": self.observation,
            "policy_id": self.policy_id,
        }

    def digest(self) -> str:
        """A short hash of `identity()`: labels made with other settings go to another folder."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:10]

    def default_folder(self) -> Path:
        """`exp_root()/rwm_labels/<split>-<digest>`."""
        from irlvla_env.paths import exp_root

        return exp_root() / "rwm_labels" / f"{self.split}-{self.digest()}"

    def resolved_metric_cache_root(self) -> str:
        from irlvla_env.paths import exp_root

        return str(self.metric_cache_root or exp_root() / "metric_cache")


# ----------------------------------------------------------------------------------------- one scene


@functools.lru_cache(maxsize=4)
def _sensor_loader(split: str, data_root: str | None, maps_root: str | None, observation_items: tuple) -> Any:
    """A loader that reads the sensors the observation needs; one per worker process."""
    from irlvla_env.navsim.loader import load_split
    from irlvla_env.observations import ObservationConfig, required_sensors

    config = ObservationConfig(**dict(observation_items))
    return load_split(split, data_root=data_root, sensor_config=required_sensors(config), maps_root=maps_root)


def label_scene(
    scene: Any,
    generator: CandidateGenerator,
    observation_config: Any,
    metric_cache_root: str | Path | None = None,
) -> dict[str, Any]:
    """Candidates, rule-based labels and the observation of one scene (one row of a shard)."""
    from irlvla_env.observations import build_observation
    from irlvla_env.scoring.epdms import score_trajectories
    from irlvla_env.scoring.metric_cache import MetricCacheStore, build_metric_cache

    token = scene.token
    agent_input = scene.get_agent_input()
    candidates = generator.generate(token, scene.get_future_trajectory(8).poses, agent_input)
    store = MetricCacheStore(metric_cache_root) if metric_cache_root else None
    if store is not None and token in store:
        cache = store.get(token)
    else:
        cache = build_metric_cache(scene)
        if store is not None:
            store.put(cache)
    result = score_trajectories(cache, candidates.trajectories)
    subscores = result_subscores(result)
    labels = np.stack([subscores[name] for name in SUBSCORE_NAMES], axis=-1).astype(np.float32)
    return {
        "token": token,
        "candidates": candidates.trajectories,
        "sources": candidates.sources,
        "labels": labels,
        "epdms": np.asarray(result.score, dtype=np.float32),
        "observation": build_observation(agent_input, observation_config),
    }


def stack_rows(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Scene rows -> the arrays of one shard."""
    arrays = {
        "tokens": np.asarray([r["token"] for r in rows], dtype=str),
        "candidates": np.stack([r["candidates"] for r in rows]).astype(np.float32),
        "sources": np.stack([r["sources"] for r in rows]).astype(np.int8),
        "labels": np.stack([r["labels"] for r in rows]).astype(np.float32),
        "epdms": np.stack([r["epdms"] for r in rows]).astype(np.float32),
    }
    for key in rows[0]["observation"]:
        value = rows[0]["observation"][key]
        if isinstance(value, np.ndarray):  # text prompts are rebuilt from the scene, not stored
            arrays[OBSERVATION_PREFIX + key] = np.stack([r["observation"][key] for r in rows])
    return arrays


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)
    return path


def label_shard(
    config: LabellingConfig,
    tokens: Sequence[str],
    vocabulary: np.ndarray,
    path: str,
    policy: PolicySampler | None = None,
    loader: Any | None = None,
    progress: bool = False,
) -> str:
    """Label `tokens` and write them as one shard at `path` (the unit of work a Ray task runs)."""
    from irlvla_env.observations import ObservationConfig

    observation_config = ObservationConfig(**config.observation)
    if loader is None:
        loader = _sensor_loader(
            config.split, config.data_root, config.maps_root, tuple(sorted(config.observation.items()))
        )
    generator = CandidateGenerator(vocabulary, config.candidates, policy)
    rows = [
        label_scene(loader.get_scene_from_token(token), generator, observation_config, config.resolved_metric_cache_root())
        for token in tqdm(tokens, desc=Path(path).stem, unit="scene", leave=False, disable=not progress)
    ]
    return str(save_npz_atomic(Path(path), stack_rows(rows)))


# ---------------------------------------------------------------------------------------------- a split


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard_{index:05d}.npz"


def _check_manifest(folder: Path, config: LabellingConfig, tokens: list[str], vocabulary: np.ndarray) -> None:
    manifest = {
        "config": config.identity(),
        "tokens": tokens,
        "vocabulary_sha": array_digest(vocabulary),
        "subscores": list(SUBSCORE_NAMES),
        "ec_available": False,  # one-stage scoring: no predecessor frame
    }
    path = folder / MANIFEST_NAME
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing != manifest:
            differs = sorted(k for k in manifest if existing.get(k) != manifest[k])
            raise ValueError(
                f"labels in {folder} were made with other settings (differs in {differs}); "
                "delete that folder or label into another one"
            )
        return
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json.tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(manifest, handle, indent=1)
    os.replace(tmp, path)


def array_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()[:16]


def label_split(
    folder: str | Path,
    config: LabellingConfig,
    vocabulary: np.ndarray,
    tokens: Sequence[str] | None = None,
    policy: PolicySampler | None = None,
    loader: Any | None = None,
) -> Path:
    """Label a split into `folder` (resumes: finished shards are skipped).

    :param tokens: scenes to label (default: the split's tokens, capped at `config.max_scenes`).
    :param loader: a sensor-reading loader for in-process labelling (default: built from the config).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if tokens is None:
        from irlvla_env.navsim.loader import load_split

        tokens = load_split(config.split, config.data_root, maps_root=config.maps_root).spread_tokens(config.max_scenes)
    tokens = [str(t) for t in tokens][: config.max_scenes]
    if not tokens:
        raise ValueError(f"no scenes to label for split {config.split!r}")
    _check_manifest(folder, config, tokens, vocabulary)
    if not (folder / CALIBRATION_NAME).is_file():
        _write_calibration(folder, config, tokens[0], loader)
    chunks = [tokens[i : i + config.shard_size] for i in range(0, len(tokens), config.shard_size)]
    todo = [(i, chunk) for i, chunk in enumerate(chunks) if not shard_path(folder, i).is_file()]
    if not todo:
        return folder
    workers = 1 if len(todo) == 1 else config.num_workers
    jobs = [(str(shard_path(folder, i)), chunk) for i, chunk in todo]
    for _ in map_chunks(_label_job, (config, vocabulary, policy, loader if workers <= 1 else None), jobs, workers,
                        config.ray_address, desc=f"labelling {config.split}", size=lambda job: len(job[1])):
        pass  # each job writes its shard atomically; a worker's error re-raises here with its traceback
    return folder


def _write_calibration(folder: Path, config: LabellingConfig, token: str, loader: Any | None) -> None:
    """The camera rig of the split (read from its first scene), for models that project the ground into the strip."""
    from irlvla_env.observations import ObservationConfig
    from reward_models.projection import strip_calibration

    if loader is None:
        loader = _sensor_loader(config.split, config.data_root, config.maps_root, tuple(sorted(config.observation.items())))
    calibration = strip_calibration(loader.get_agent_input_from_token(token), ObservationConfig(**config.observation))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json.tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(calibration, handle, indent=1)
    os.replace(tmp, folder / CALIBRATION_NAME)


def _label_job(config: LabellingConfig, vocabulary: np.ndarray, policy: PolicySampler | None, loader: Any | None,
               job: tuple[str, list[str]]) -> str:
    """One shard: `(path, tokens)` → the written path."""
    path, tokens = job
    label_shard(config, tokens, vocabulary, path, policy, loader, progress=False)
    return path


# ------------------------------------------------------------------------------------------- reading back


@dataclass
class LabelledScenes:
    """All shards of a folder in memory: per-scene arrays with a leading scene axis (see module docstring)."""

    tokens: np.ndarray
    candidates: np.ndarray
    sources: np.ndarray
    labels: np.ndarray
    epdms: np.ndarray
    observations: dict[str, np.ndarray]
    ec_available: bool = False
    camera_calibration: list | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_candidates(self) -> int:
        return self.candidates.shape[1]

    def subset(self, index: np.ndarray) -> "LabelledScenes":
        return LabelledScenes(
            self.tokens[index], self.candidates[index], self.sources[index], self.labels[index], self.epdms[index],
            {k: v[index] for k, v in self.observations.items()}, self.ec_available, self.camera_calibration,
        )

    def split(self, val_fraction: float, seed: int = 0) -> tuple["LabelledScenes", "LabelledScenes"]:
        """Disjoint (train, validation) scene subsets."""
        order = np.random.default_rng(seed).permutation(len(self))
        n_val = int(round(val_fraction * len(self)))
        return self.subset(np.sort(order[n_val:])), self.subset(np.sort(order[:n_val]))

    @classmethod
    def load(cls, folder: str | Path) -> "LabelledScenes":
        folder = Path(folder)
        shards = sorted(folder.glob("shard_*.npz"))
        if not shards:
            raise FileNotFoundError(f"no labelled shards in {folder}; run `irlvla train rwm` (it labels first)")
        manifest_path = folder / MANIFEST_NAME
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        parts: dict[str, list[np.ndarray]] = {}
        for path in shards:
            with np.load(path, allow_pickle=False) as data:
                for key in data.files:
                    parts.setdefault(key, []).append(data[key])
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        required = ("tokens", "candidates", "sources", "labels", "epdms")
        missing = [k for k in required if k not in arrays]
        if missing:
            raise ValueError(f"shards in {folder} miss arrays {missing}")
        if arrays["labels"].shape[-1] != len(SUBSCORE_NAMES):
            raise ValueError(f"shards in {folder} have {arrays['labels'].shape[-1]} label columns, expected 9")
        observations = {k[len(OBSERVATION_PREFIX):]: v for k, v in arrays.items() if k.startswith(OBSERVATION_PREFIX)}
        return cls(
            arrays["tokens"], arrays["candidates"], arrays["sources"], arrays["labels"], arrays["epdms"],
            observations, bool(manifest.get("ec_available", False)),
            json.loads((folder / CALIBRATION_NAME).read_text()) if (folder / CALIBRATION_NAME).is_file() else None,
        )
