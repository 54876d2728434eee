"""Per-scene metric cache: everything the scorer needs, computed once per token (spec §4.11).

navsim writes one lzma pickle of nuPlan objects per token. We write one `.npz` (arrays, WKB-hex geometry and a
JSON header, loaded with `allow_pickle=False`) per token at `<root>/<log_name>/unknown/<token>/metric_cache.npz`,
atomically, so a crashed or parallel run never leaves a half-written cache and a cache file cannot execute code.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irlvla_env.navsim.dataclasses import Scene
from irlvla_env.parallel import chunks, map_chunks
from irlvla_env.scoring.drivable_map import PDMDrivableMap, build_drivable_map
from irlvla_env.scoring.observation import Observation, build_observation
from irlvla_env.simulation import vehicle as V

CACHE_FILE = "metric_cache.npz"
FORMAT_VERSION = 2
SYNTHETIC_TOKEN_LENGTH = 17
ORIGINAL, SYNTHETIC = 0, 1
HISTORY_STEP_US = 100_000


@dataclass
class MetricCache:
    """What scoring one scene needs (navsim's `MetricCache`, as arrays).

    :ivar ego_state: `(11,)` global rear-axle state at t0 (log velocity/acceleration in the body frame).
    :ivar pdm_closed_trajectory: `(51, 11)` PDM-Closed plan at 0.1 s (t0 … t0 + 5 s).
    :ivar pdm_closed_rollout: `(41, 11)` that plan tracked by the LQR + bicycle simulation.
    :ivar human_trajectory: `(8, 3)` logged future, local to t0 (None for synthetic scenes).
    :ivar history_states: `(H, 11)` logged past resampled at 0.1 s, last sample dropped (HC, spec §4.5).
    :ivar centerline: `(M, 3)` PDM-Closed centerline poses (EP, LK).
    :ivar route_lane_ids: lanes and connectors of the corrected route (DDC).
    :ivar route_roadblock_ids: the corrected route.
    :ivar current_tracks: `(T,)` bool, the observation's tracks annotated in the t0 frame (navsim's
        `current_tracked_objects`; step 0 of the observation also holds tracks seen once later, quirk U7).
    """

    token: str
    log_name: str
    timestamp_us: int
    scene_type: int
    map_location: str
    ego_state: np.ndarray
    pdm_closed_trajectory: np.ndarray
    pdm_closed_rollout: np.ndarray
    human_trajectory: np.ndarray | None
    history_states: np.ndarray
    centerline: np.ndarray
    route_lane_ids: list[str]
    route_roadblock_ids: list[str]
    drivable_map: PDMDrivableMap
    observation: Observation
    current_tracks: np.ndarray
    map_api: Any = field(default=None, repr=False, compare=False)  # not stored; needed by reactive traffic only
    memo: dict = field(default_factory=dict, repr=False, compare=False)  # per-process results (human run, path)

    @property
    def start_time_s(self) -> float:
        return self.timestamp_us * 1e-6

    @property
    def is_synthetic(self) -> bool:
        return self.scene_type == SYNTHETIC

    @property
    def centerline_path(self):
        """The centerline as D1's `PDMPath` (built once)."""
        if "path" not in self.memo:
            from irlvla_env.scoring.route import PDMPath

            self.memo["path"] = PDMPath(self.centerline)
        return self.memo["path"]

    def get_map(self):
        """The map (loaded by location when the cache came from disk)."""
        if self.map_api is None:
            from irlvla_env.navsim.map_api import load_map

            self.map_api = load_map(self.map_location)
        return self.map_api

    # ------------------------------------------------------------------------------------------ (de)serialise
    def to_arrays(self) -> dict[str, np.ndarray]:
        header = {
            "format_version": FORMAT_VERSION, "token": self.token, "log_name": self.log_name,
            "timestamp_us": int(self.timestamp_us), "scene_type": int(self.scene_type),
            "map_location": self.map_location, "route_lane_ids": list(map(str, self.route_lane_ids)),
            "route_roadblock_ids": list(map(str, self.route_roadblock_ids)),
            "has_human_trajectory": self.human_trajectory is not None,
        }  # fmt: skip
        arrays = {
            "header": np.array(json.dumps(header)),
            "ego_state": self.ego_state, "pdm_closed_trajectory": self.pdm_closed_trajectory,
            "pdm_closed_rollout": self.pdm_closed_rollout, "history_states": self.history_states,
            "centerline": self.centerline, "current_tracks": self.current_tracks,
            "human_trajectory": self.human_trajectory if self.human_trajectory is not None else np.zeros((0, 3)),
        }  # fmt: skip
        arrays.update({f"observation/{k}": v for k, v in self.observation.to_arrays().items()})
        arrays.update({f"drivable_map/{k}": v for k, v in self.drivable_map.to_arrays().items()})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], source: str = "<arrays>") -> "MetricCache":
        try:
            header = json.loads(str(arrays["header"]))
            if header.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {header.get('format_version')} (expected {FORMAT_VERSION})")
            obs = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("observation/")}
            dmap = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("drivable_map/")}
            return cls(
                token=header["token"], log_name=header["log_name"], timestamp_us=int(header["timestamp_us"]),
                scene_type=int(header["scene_type"]), map_location=header["map_location"],
                ego_state=np.asarray(arrays["ego_state"], dtype=np.float64),
                pdm_closed_trajectory=np.asarray(arrays["pdm_closed_trajectory"], dtype=np.float64),
                pdm_closed_rollout=np.asarray(arrays["pdm_closed_rollout"], dtype=np.float64),
                human_trajectory=np.asarray(arrays["human_trajectory"]) if header["has_human_trajectory"] else None,
                history_states=np.asarray(arrays["history_states"], dtype=np.float64),
                centerline=np.asarray(arrays["centerline"], dtype=np.float64),
                route_lane_ids=list(header["route_lane_ids"]), route_roadblock_ids=list(header["route_roadblock_ids"]),
                drivable_map=PDMDrivableMap.from_arrays(dmap), observation=Observation.from_arrays(obs),
                current_tracks=np.asarray(arrays["current_tracks"], dtype=bool),
            )  # fmt: skip
        except (KeyError, ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"{source}: not a valid metric cache ({err})") from err


# ---------------------------------------------------------------------------------------------------- build
def ego_state_of(scene: Scene, index: int) -> np.ndarray:
    """`(11,)` state of frame `index`: global pose, log body-frame velocity/acceleration, angular terms 0."""
    status = scene.frames[index].ego_status
    state = np.zeros(V.STATE_SIZE)
    state[[V.X, V.Y, V.HEADING]] = status.ego_pose
    state[[V.VELOCITY_X, V.VELOCITY_Y]] = status.ego_velocity[:2]
    state[[V.ACCELERATION_X, V.ACCELERATION_Y]] = status.ego_acceleration[:2]
    return state


def history_states(scene: Scene) -> np.ndarray:
    """The logged past (frames 0 … t0) resampled every 0.1 s from its start up to, excluding, its end, with the
    last resampled state dropped again [Q] → normally 14 states (−1.5 … −0.2 s). Linear in every field,
    heading unwrapped (nuPlan's `InterpolatedTrajectory`)."""
    cur = scene.current_index
    times = np.array([scene.frames[i].timestamp for i in range(cur + 1)], dtype=np.int64)
    states = np.stack([ego_state_of(scene, i) for i in range(cur + 1)])
    if len(times) < 2:
        return np.zeros((0, V.STATE_SIZE))
    if np.any(np.diff(times) <= 0):
        raise ValueError(f"scene {scene.token}: history frame timestamps are not increasing: {times.tolist()}")
    sample = np.clip(np.arange(times[0], times[-1], HISTORY_STEP_US, dtype=np.int64), times[0], times[-1])[:-1]
    states[:, V.HEADING] = np.unwrap(states[:, V.HEADING])
    out = np.stack([np.interp(sample, times, states[:, c]) for c in range(V.STATE_SIZE)], axis=1)
    out[:, V.HEADING] = np.arctan2(np.sin(out[:, V.HEADING]), np.cos(out[:, V.HEADING]))
    return out


def build_metric_cache(scene: Scene) -> MetricCache:
    """Everything the scorer needs for `scene` (spec §4.11). ValueError naming the token when its route is
    missing or cannot be linked to the ego (navsim's scene filter drops route-less scenes)."""
    from irlvla_env.scoring.pdm_closed import plan_pdm_closed
    from irlvla_env.scoring.route import plan_route
    from irlvla_env.simulation.simulator import simulate

    cur = scene.current_index
    frame = scene.frames[cur]
    token = scene.token
    if not frame.roadblock_ids:
        raise ValueError(f"scene {token}: current frame has no route (empty roadblock_ids)")
    ego_state = ego_state_of(scene, cur)
    try:
        route = plan_route(scene.map_api, [str(r) for r in frame.roadblock_ids], ego_state[:3])
    except ValueError as err:
        raise ValueError(f"scene {token}: broken route: {err}") from err
    center = V.centers(ego_state[None, :3])[0]
    drivable_map = build_drivable_map(scene.map_api, center)
    observation = build_observation(scene)
    synthetic = len(token) == SYNTHETIC_TOKEN_LENGTH
    red_at_t0 = [str(c) for c, red in frame.traffic_lights if red]
    t0_tracks = np.isin(observation.tokens.astype(str), [str(t) for t in frame.annotations.track_tokens])
    pdm_plan = plan_pdm_closed(
        ego_state, observation, route, drivable_map, scene.map_api, red_connector_ids=red_at_t0, t0_tracks=t0_tracks
    )
    pdm_rollout = simulate(ego_state, pdm_plan[None, :41])[0]
    human = None
    if not synthetic:
        human = scene.get_future_trajectory(8).poses.astype(np.float64)
    return MetricCache(
        token=token, log_name=scene.scene_metadata.log_name, timestamp_us=int(frame.timestamp),
        scene_type=SYNTHETIC if synthetic else ORIGINAL, map_location=scene.scene_metadata.map_name,
        ego_state=ego_state, pdm_closed_trajectory=np.asarray(pdm_plan, dtype=np.float64),
        pdm_closed_rollout=pdm_rollout, human_trajectory=human, history_states=history_states(scene),
        centerline=route.centerline.poses, route_lane_ids=list(route.lane_ids),
        route_roadblock_ids=list(route.roadblock_ids), drivable_map=drivable_map, observation=observation,
        current_tracks=t0_tracks, map_api=scene.map_api,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- store
class MetricCacheStore:
    """One `.npz` per token under `root` (navsim's `<log>/unknown/<token>/` layout); writes are atomic."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self._index: dict[str, Path] | None = None

    def path_for(self, log_name: str, token: str) -> Path:
        return self.root / log_name / "unknown" / token / CACHE_FILE

    def _scan(self) -> dict[str, Path]:
        self._index = {p.parent.name: p for p in self.root.glob(f"*/unknown/*/{CACHE_FILE}")} if self.root.is_dir() else {}
        return self._index

    def _lookup(self, token: str) -> Path | None:
        index = self._index if self._index is not None else self._scan()
        if token not in index:
            index = self._scan()
        return index.get(token)

    def __contains__(self, token: str) -> bool:
        return self._lookup(token) is not None

    def __len__(self) -> int:
        return len(self._scan())

    def tokens(self) -> list[str]:
        return sorted(self._scan())

    def __iter__(self) -> Iterator[str]:
        return iter(self.tokens())

    def put(self, cache: MetricCache) -> Path:
        path = self.path_for(cache.log_name, cache.token)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez_compressed(handle, **cache.to_arrays())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self._index is not None:
            self._index[cache.token] = path
        return path

    def get(self, token: str) -> MetricCache:
        """The cache of `token`, shared within the process while its file is unchanged (see `_load`)."""
        path = self._lookup(token)
        if path is None:
            raise KeyError(f"no metric cache for token {token!r} under {self.root}")
        try:
            stat = path.stat()
        except OSError as err:
            raise ValueError(f"{path}: unreadable metric cache ({err})") from err
        return _load(str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2048)
def _load(path: str, inode: int, mtime_ns: int, size: int) -> MetricCache:
    """Read one cache file; memoised per process on (path, inode, mtime, size), so a rewritten file is read again.

    Scoring a split for several agents, or the RL reward over the same scenes, then decompresses each file once,
    and the cache's `memo` (the PDM-Closed and human runs) survives between calls. One cache holds about 0.2 MB,
    so the bound costs at most ~0.4 GB per process.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable metric cache ({err})") from err
    return MetricCache.from_arrays(arrays, source=path)


def _build_and_store(loader, store_root: str, tokens: list[str]) -> tuple[list[str], list[str]]:
    """Worker: build and store the caches of `tokens`; returns (built, failures as 'token: reason')."""
    store = MetricCacheStore(store_root)
    built, failed = [], []
    for token in tokens:
        try:
            store.put(build_metric_cache(loader.get_scene_from_token(token)))
            built.append(token)
        except ValueError as err:
            failed.append(f"{token}: {err}")
    return built, failed


def build_metric_caches(
    loader,
    store: MetricCacheStore,
    tokens: Iterable[str] | None = None,
    ray_address: str | None = None,
    num_workers: int | None = None,
    chunk_size: int = 8,
    force: bool = False,
) -> list[str]:
    """Build the caches of `tokens` (default: all of the loader's) that `store` lacks; returns the failures.

    Runs in-process for one worker; otherwise over Ray: a local instance (`num_workers` CPUs, no dashboard)
    or the cluster at `ray_address`. Scenes whose route is missing or broken are reported, not cached.
    """
    wanted = list(loader.tokens if tokens is None else tokens)
    todo = [t for t in wanted if force or t not in store]
    failures: list[str] = []
    if not todo:
        return failures
    for _, failed in map_chunks(_build_and_store, (loader, str(store.root)), chunks(todo, chunk_size), num_workers,
                                ray_address, desc="metric caches"):
        failures += failed
    store._scan()
    return failures
