"""`irlvla data synth`, `irlvla data info` and `irlvla viz scene`."""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import Counter, defaultdict
from pathlib import Path

from irlvla_env.cli import command_group


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    data = command_group(sub, groups, "data", "generate or inspect the NAVSIM-layout data set")
    synth = data.add_parser("synth", help="generate the synthetic data set (skipped if it is already there)")
    synth.add_argument("--root", type=Path, default=None, help="data root (default $OPENSCENE_DATA_ROOT or cache)")
    synth.add_argument("--maps-root", type=Path, default=None, help="map root (default $NUPLAN_MAPS_ROOT or <root>/maps)")
    synth.add_argument("--tiny", action="store_true", help="the tiny test configuration")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None, help="parallel processes (default from the config)")
    synth.add_argument("--force", action="store_true", help="regenerate even if a matching data set exists")
    synth.set_defaults(func=_synth)

    info = data.add_parser("info", help="scene counts per split and scenario family")
    info.add_argument("--root", type=Path, default=None)
    info.set_defaults(func=_info)

    viz = command_group(sub, groups, "viz", "draw scenes")
    scene = viz.add_parser("scene", help="PNG of one scene: cameras, BEV map, agents, ego past and future")
    scene.add_argument("token")
    scene.add_argument("--split", default="navtest", choices=["navtrain", "navtest", "navmini"])
    scene.add_argument("--root", type=Path, default=None)
    scene.add_argument("--maps-root", type=Path, default=None)
    scene.add_argument("--out", type=Path, default=None, help="output PNG (default <token>.png)")
    scene.set_defaults(func=_viz_scene)


def _synth(args: argparse.Namespace) -> int:
    from irlvla_env.synthetic.config import SynthConfig
    from irlvla_env.synthetic.generate import ensure_dataset, generate_dataset
    from irlvla_env.paths import data_root

    config = SynthConfig.tiny(args.seed) if args.tiny else dataclasses.replace(SynthConfig.default(), seed=args.seed)
    if args.workers is not None:
        config = dataclasses.replace(config, n_workers=args.workers)
    root = args.root if args.root is not None else data_root()
    started = time.perf_counter()
    if args.force:
        generate_dataset(Path(root), config, args.maps_root)
    else:
        ensure_dataset(root, config, args.maps_root)
    print(f"data set ready at {root} ({time.perf_counter() - started:.1f} s)")
    return 0


def scene_counts(manifest: dict) -> dict[str, dict[str, int]]:
    """Scenes per split and family, by the split filters' window arithmetic (every synthetic frame has a route)."""
    from irlvla_env.navsim.loader import SPLITS as LOADER_SPLITS

    counts: dict[str, Counter] = defaultdict(Counter)
    for entry in manifest["logs"]:
        scene_filter = LOADER_SPLITS[entry["split"]].scene_filter()
        n = entry["num_frames"] - scene_filter.num_frames
        counts[entry["split"]][entry["family"]] += 0 if n < 0 else n // scene_filter.frame_interval + 1
    return {split: dict(sorted(c.items())) for split, c in counts.items()}


def _info(args: argparse.Namespace) -> int:
    from irlvla_env.paths import data_root
    from irlvla_env.synthetic.generate import read_manifest

    root = args.root if args.root is not None else data_root()
    manifest = read_manifest(root)
    if manifest is None:
        print(f"no synthetic data set at {root}; run `irlvla data synth`")
        return 1
    counts = scene_counts(manifest)
    families = sorted({f for c in counts.values() for f in c})
    splits = sorted(counts)
    logs = Counter(e["split"] for e in manifest["logs"])
    print(f"root: {root}   config hash: {manifest['config_hash']}   generated in {manifest['generation_seconds']} s")
    print(f"{'family':26s}" + "".join(f"{s:>10s}" for s in splits))
    for family in families:
        print(f"{family:26s}" + "".join(f"{counts[s].get(family, 0):10d}" for s in splits))
    print(f"{'scenes':26s}" + "".join(f"{sum(counts[s].values()):10d}" for s in splits))
    print(f"{'logs':26s}" + "".join(f"{logs[s]:10d}" for s in splits))
    return 0


def _viz_scene(args: argparse.Namespace) -> int:
    from irlvla_env.navsim.dataclasses import SensorConfig
    from irlvla_env.navsim.loader import load_split
    from irlvla_env.paths import data_root
    from irlvla_env.synthetic.generate import read_manifest
    from irlvla_env.synthetic.viz import CAMERA_ORDER, render_scene

    maps_root = args.maps_root
    if maps_root is None:  # a synthetic data set remembers where its maps went
        manifest = read_manifest(args.root if args.root is not None else data_root())
        maps_root = manifest["maps_root"] if manifest else None
    sensors = SensorConfig(**{name: [3] for name in CAMERA_ORDER})
    loader = load_split(args.split, args.root, sensor_config=sensors, maps_root=maps_root, tokens=[args.token])
    if args.token not in loader.tokens:
        print(f"token {args.token} is not a scene of split {args.split}")
        return 1
    out = render_scene(loader.get_scene_from_token(args.token), loader.get_agent_input_from_token(args.token),
                       args.out or Path(f"{args.token}.png"))  # fmt: skip
    print(f"wrote {out}")
    return 0
