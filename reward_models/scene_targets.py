"""Training-only auxiliary targets for the cost-volume maps, rasterised from the privileged metric caches.

The candidate labels say only *whether* a trajectory collided or left the road, never where the road or the other
road users are, so the cost maps must discover both from 72 yes/no answers per scene. These targets say it directly:

- `static (N, 2, G, G)`: drivable area and active red-light zones at the fine grid (`G = lidar_bins / 2`);
- `dynamic (N, T, g, g)`: occupancy of other road users and objects at each pose time (0.5 s … 4 s), a cell counting
  as occupied when a box covers any part of it; on the grid the model's dynamic maps live on (`g = G / 2` for the
  cost-volume head, `g = G` for the attention head's map decoder).

They come from the same metric caches the labels came from (never from anything the model reads at inference) and
are supervised on the first static/dynamic map channels only (`irl.map_loss`); the remaining channels stay free.
Stored next to the labelled shards as one `.npz` per grid and version, written atomically and extended on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import shapely
from tqdm.auto import tqdm

from irlvla_env.navsim.geometry import rotate_vectors
from reward_models.labelling import save_npz_atomic

VERSION = 1  # bump when what a target means changes: caches of another version are rebuilt, not reused
STEPS_PER_POSE = 5  # metric-cache steps (0.1 s) per trajectory pose (0.5 s)
STATIC_TARGETS = ("drivable", "red_light")


@dataclass
class SceneTargets:
    """`static (N, 2, G, G)` and `dynamic (N, T, g, g)` uint8 targets of `tokens (N,)` (module docstring)."""

    tokens: np.ndarray
    static: np.ndarray
    dynamic: np.ndarray

    def rows(self, tokens: Sequence[str]) -> "SceneTargets":
        """The targets of `tokens`, in that order (KeyError naming a missing token)."""
        index = {str(t): i for i, t in enumerate(self.tokens)}
        missing = [t for t in tokens if str(t) not in index]
        if missing:
            raise KeyError(f"scene targets miss tokens {missing[:5]}")
        rows = np.array([index[str(t)] for t in tokens], dtype=np.int64)
        return SceneTargets(self.tokens[rows], self.static[rows], self.dynamic[rows])


def cell_centres(grid: int, range_m: float) -> np.ndarray:
    """`(G, G, 2)` ego-frame (x, y) of BEV cell centres in the LiDAR BEV layout (row 0 ahead, column 0 left)."""
    centres = range_m - (np.arange(grid) + 0.5) * (2 * range_m / grid)
    x, y = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([x, y], axis=-1)


def _to_global(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    return pose[:2] + rotate_vectors(points, pose[2])


def default_dynamic_grid(grid: int, dynamic_grid: int | None) -> int:
    """`dynamic_grid`, or the cost-volume head's mid grid `G / 2` when None."""
    return dynamic_grid or grid // 2


def rasterise(cache, grid: int, range_m: float, num_poses: int, dynamic_grid: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The `(2, G, G)` static and `(T, g, g)` dynamic targets of one `MetricCache` (`g = dynamic_grid`, default G/2)."""
    from irlvla_env.scoring.drivable_map import DRIVABLE_LAYERS

    pose = np.asarray(cache.ego_state[:3], dtype=np.float64)
    fine = _to_global(cell_centres(grid, range_m), pose).reshape(-1, 2)
    static = np.zeros((2, grid * grid), np.uint8)
    static[0] = cache.drivable_map.points_in_layers(fine, DRIVABLE_LAYERS)
    observation = cache.observation
    active = np.asarray(observation.red_light_active[0], bool) if observation.red_light_active.size else np.zeros(0, bool)
    for polygon in np.asarray(observation.red_light_polygons)[active]:
        static[1] |= shapely.contains_xy(polygon, fine[:, 0], fine[:, 1]).astype(np.uint8)

    mid_grid = default_dynamic_grid(grid, dynamic_grid)
    cell = 2 * range_m / mid_grid
    coarse = _to_global(cell_centres(mid_grid, range_m), pose).reshape(-1, 2)
    dynamic = np.zeros((num_poses, mid_grid * mid_grid), np.uint8)
    for t in range(num_poses):
        step = min((t + 1) * STEPS_PER_POSE, observation.present.shape[0] - 1)
        present = np.asarray(observation.present[step], bool)
        if not present.any():
            continue
        centres, headings = observation.centers[step, present], observation.headings[step, present]
        half = observation.sizes[present] / 2 + cell / 2  # a box touching any part of a cell occupies it
        offset = coarse[:, None, :] - centres[None]  # (cells, boxes, 2)
        c, s = np.cos(headings), np.sin(headings)
        along, across = offset[..., 0] * c + offset[..., 1] * s, -offset[..., 0] * s + offset[..., 1] * c
        dynamic[t] = ((np.abs(along) <= half[:, 0]) & (np.abs(across) <= half[:, 1])).any(1)
    return static.reshape(2, grid, grid), dynamic.reshape(num_poses, mid_grid, mid_grid)


def targets_path(labels_dir: str | Path, grid: int, range_m: float, dynamic_grid: int | None = None) -> Path:
    dynamic = default_dynamic_grid(grid, dynamic_grid)
    suffix = "" if dynamic == grid // 2 else f"-d{dynamic}"  # the cost-volume grid keeps its files' earlier name
    return Path(labels_dir) / f"scene_targets-v{VERSION}-g{grid}{suffix}-r{range_m:g}.npz"


def ensure_scene_targets(
    labels_dir: str | Path, tokens: Sequence[str], metric_cache_root: str | Path, grid: int, range_m: float,
    num_poses: int = 8, progress: bool = True, dynamic_grid: int | None = None,
) -> SceneTargets:
    """The targets of `tokens`, loaded from `labels_dir` and completed from the metric caches (then saved)."""
    from irlvla_env.scoring.metric_cache import MetricCacheStore

    dynamic_grid = default_dynamic_grid(grid, dynamic_grid)
    path = targets_path(labels_dir, grid, range_m, dynamic_grid)
    have = SceneTargets(np.zeros(0, str), np.zeros((0, 2, grid, grid), np.uint8),
                        np.zeros((0, num_poses, dynamic_grid, dynamic_grid), np.uint8))
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            have = SceneTargets(data["tokens"], data["static"], data["dynamic"])
    known = set(have.tokens.tolist())
    todo = [str(t) for t in tokens if str(t) not in known]
    if todo:
        store = MetricCacheStore(metric_cache_root)
        missing = [t for t in todo if t not in store]
        if missing:
            raise FileNotFoundError(f"no metric cache under {metric_cache_root} for tokens {missing[:5]} (label first)")
        built = [rasterise(store.get(t), grid, range_m, num_poses, dynamic_grid)
                 for t in tqdm(todo, desc="scene targets", unit="scene", disable=not progress)]
        have = SceneTargets(np.concatenate([have.tokens, np.asarray(todo, dtype=str)]),
                            np.concatenate([have.static, np.stack([b[0] for b in built])]),
                            np.concatenate([have.dynamic, np.stack([b[1] for b in built])]))
        save_npz_atomic(path, {"tokens": have.tokens, "static": have.static, "dynamic": have.dynamic})
    return have.rows(tokens)
