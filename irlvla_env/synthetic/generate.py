"""Generate (once) and reuse the synthetic NAVSIM data set.

Plan every log from the config (split, map, scenario family, seed, tile position), build all tiles and write
one nuPlan GeoPackage per map, then simulate, render and write the logs in parallel. A manifest carrying the
config hash is written last: its presence with a matching hash is what "the data set is complete" means, so
an interrupted run is simply generated again.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from irlvla_env.navsim.map_api import NuPlanMap
from irlvla_env.navsim.map_io import gpkg_path, write_gpkg, write_maps_index
from irlvla_env.paths import data_root
from irlvla_env.synthetic.config import (
    LEFT_HAND_TRAFFIC, MAP_CRS, MAP_ORIGINS, MAP_VERSIONS, SPLITS, SynthConfig,
)  # fmt: skip
from irlvla_env.synthetic.episode import STEPS_PER_FRAME, run_episode
from irlvla_env.synthetic.log_writer import LogIdentity, build_frames, write_log, write_sensors
from irlvla_env.synthetic.render import SensorRenderer
from irlvla_env.synthetic.render_map import RenderMap
from irlvla_env.synthetic.road_network import in_memory_layers, merge_layers
from irlvla_env.synthetic.scenarios import build_tile
from irlvla_env.synthetic.tile import Tile
from irlvla_env.synthetic.sensors import LidarSpec, default_rig
from irlvla_env.synthetic.actors import token

MANIFEST_NAME = "synthetic_manifest.json"
TILE_SPACING = 3000.0  # [m] between tile origins; a tile spans well under a kilometre
TILE_COLUMNS = 8
IDS_PER_TILE = 100_000


@dataclass(frozen=True)
class LogSpec:
    """Everything a worker needs to produce one log, derived from the config alone."""

    split: str
    data_split: str
    location: str
    tile_index: int  # position of the log's tile in its map
    family: str
    seed: int
    num_frames: int
    log_name: str
    start_us: int
    vehicle: str

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


def plan_logs(config: SynthConfig) -> list[LogSpec]:
    """All logs of all splits, in a fixed order; families are dealt round-robin in a seeded order per split."""
    specs: list[LogSpec] = []
    families = list(config.families)
    for split, size in config.splits.items():
        plan = SPLITS[split]
        rng = np.random.default_rng([config.seed, plan.seed_offset])
        order = list(rng.permutation(families))
        per_location: dict[str, int] = {}
        for i in range(size.num_logs):
            location = plan.locations[i % len(plan.locations)]
            tile_index = per_location.get(location, 0)
            per_location[location] = tile_index + 1
            start = datetime(2021, 5, 1, tzinfo=timezone.utc) + timedelta(seconds=int(rng.integers(0, 200 * 86400)))
            vehicle = f"veh-{int(rng.integers(10, 60)):02d}"
            first = int(rng.integers(100, 9000))
            name = f"{start:%Y.%m.%d.%H.%M.%S}_{vehicle}_{first:05d}_{first + 20 * size.frames_per_log // 2:05d}"
            specs.append(LogSpec(split, plan.data_split, location, tile_index, order[i % len(order)],
                                 int(rng.integers(0, 2**31 - 1)), size.frames_per_log, name,
                                 int(start.timestamp() * 1e6), vehicle))  # fmt: skip
    return specs


def make_tile(spec: LogSpec, rng: np.random.Generator, config: SynthConfig) -> Tile:
    """The log's tile; roads are made long enough for the fastest ego over the whole log plus the scorer's 5 s."""
    x0, y0 = MAP_ORIGINS[spec.location]
    col, row = spec.tile_index % TILE_COLUMNS, spec.tile_index // TILE_COLUMNS
    origin = (x0 + col * TILE_SPACING, y0 + row * TILE_SPACING)
    travel = 16.0 * (spec.num_frames * 0.5 + config.warmup_s + 6.0)
    first_id = (spec.tile_index + 1) * IDS_PER_TILE
    return build_tile(spec.family, first_id, origin, rng, travel, spec.location in LEFT_HAND_TRAFFIC)


def write_maps(specs: list[LogSpec], config: SynthConfig, maps_root: Path) -> None:
    """One GPKG per map location holding the tiles of every log on it, plus the maps index."""
    by_location: dict[str, list[LogSpec]] = {}
    for spec in specs:
        by_location.setdefault(spec.location, []).append(spec)
    for location, group in sorted(by_location.items()):
        crs = MAP_CRS[location]
        layers = merge_layers([make_tile(s, s.rng(), config).network.to_layers(crs) for s in group])
        write_gpkg(gpkg_path(maps_root, location, MAP_VERSIONS[location]), layers, crs)
    write_maps_index(maps_root, {loc: MAP_VERSIONS[loc] for loc in by_location})


def generate_log(job: tuple[LogSpec, SynthConfig, str]) -> dict:
    """Worker: simulate, render and write one log; returns its manifest entry."""
    spec, config, root = job
    rng = spec.rng()
    tile = make_tile(spec, rng, config)
    episode = run_episode(tile, rng, spec.num_frames, config.warmup_s, spec.log_name)
    map_api = NuPlanMap(in_memory_layers(tile.network.to_layers(MAP_CRS[spec.location])), spec.location)
    rig = default_rig(tuple(config.image_size))
    ident = LogIdentity(spec.log_name, token(spec.log_name, "log"), spec.vehicle, spec.location, spec.start_us,
                        spec.tile_index)  # fmt: skip
    # Tokens also hash the config (and generator version): a regenerated world never reuses the tokens of an
    # older one, so token-keyed caches (metric caches, features) can never serve stale content.
    frames = build_frames(episode, ident, map_api, rig, f"{config.config_hash()}/{spec.log_name}")
    lidar = LidarSpec(num_beams=config.lidar_beams, horizontal_resolution_deg=config.lidar_azimuth_step_deg)
    renderer = SensorRenderer(RenderMap.from_map_api(map_api), rig, lidar, seed=spec.seed)
    sensor_rng = np.random.default_rng([spec.seed, 7])
    root_path = Path(root)
    write_log(
        frames,
        root_path / "navsim_logs" / spec.data_split,
        root_path / "sensor_blobs" / spec.data_split,
        lambda folder: write_sensors(frames, renderer, folder, sensor_rng, config.jpeg_quality),
    )
    commands = [int(np.argmax(f["driving_command"])) for f in frames]
    speeds = episode.ego_states[::STEPS_PER_FRAME, 3]
    return {**asdict(spec), "lane_changes": episode.lane_changes, "commands": commands,
            "mean_speed": float(np.mean(speeds))}  # fmt: skip


def default_maps_root(root: Path) -> Path:
    env = os.environ.get("NUPLAN_MAPS_ROOT")
    return Path(env).expanduser() if env else root / "maps"


def read_manifest(root: str | Path) -> dict | None:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def generate_dataset(root: Path, config: SynthConfig, maps_root: Path | None = None, progress: bool = True) -> Path:
    """Generate the whole data set into `root` (maps into `maps_root`), overwriting what is there."""
    root.mkdir(parents=True, exist_ok=True)
    maps_root = default_maps_root(root) if maps_root is None else Path(maps_root)
    stale = read_manifest(root)
    (root / MANIFEST_NAME).unlink(missing_ok=True)
    if stale is not None:  # drop the logs of an older config so the folders hold exactly one data set
        for entry in stale.get("logs", []):
            (root / "navsim_logs" / entry["data_split"] / f"{entry['log_name']}.pkl").unlink(missing_ok=True)
    started = time.perf_counter()
    specs = plan_logs(config)
    write_maps(specs, config, maps_root)
    jobs = [(spec, config, str(root)) for spec in specs]
    bar = tqdm(total=len(jobs), desc="synthetic logs", unit="log", disable=not progress)
    entries = []
    if config.n_workers <= 1:
        for job in jobs:
            entries.append(generate_log(job))
            bar.update()
    else:
        # fork, not spawn: spawned workers re-import the caller's __main__, which re-runs an unguarded script.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(config.n_workers) as pool:
            for entry in pool.imap_unordered(generate_log, jobs):
                entries.append(entry)
                bar.update()
    bar.close()
    order = {spec.log_name: i for i, spec in enumerate(specs)}
    entries.sort(key=lambda e: order[e["log_name"]])
    manifest = {
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
        "maps_root": str(maps_root),
        "generation_seconds": round(time.perf_counter() - started, 1),
        "logs": entries,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", dir=root)
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest, fh, indent=1)
    os.replace(tmp, root / MANIFEST_NAME)
    return root


def ensure_dataset(
    root: str | Path | None = None, config: SynthConfig | None = None, maps_root: str | Path | None = None,
    progress: bool = True,
) -> Path:  # fmt: skip
    """The data set root, generated first if it is missing or was made from another config.

    :param root: data root (default `irlvla_env.paths.data_root()`).
    :param config: what to generate (default `SynthConfig.default()`).
    :param maps_root: where maps go (default `$NUPLAN_MAPS_ROOT`, else `<root>/maps`).
    """
    root = Path(root).expanduser() if root is not None else data_root()
    config = SynthConfig.default() if config is None else config
    manifest = read_manifest(root)
    maps = default_maps_root(root) if maps_root is None else Path(maps_root)
    if manifest is not None and manifest.get("config_hash") == config.config_hash() and (maps / "nuplan-maps-v1.0.json").is_file():
        return root
    return generate_dataset(root, config, maps, progress)
