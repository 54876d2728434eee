"""`irlvla score`: one-stage EPDMS of an agent on a split, printed per sub-metric and written as navsim's CSV."""

from __future__ import annotations

import argparse

from irlvla_env.scoring.columns import METRIC_COLUMNS
from irlvla_env.scoring.epdms import TRAFFIC_POLICIES


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    parser = sub.add_parser("score", help="score an agent with the rule-based EPDMS (one-stage, navsim columns)")
    parser.add_argument("--agent", required=True, help="agent name from agents.registry (e.g. human, constant_velocity)")
    parser.add_argument("--checkpoint", default=None, help="trained agent folder (config.json + safetensors)")
    parser.add_argument("--split", default="navtest", help="split name (navtest, navmini, ...)")
    parser.add_argument("--max-scenes", type=int, default=None, help="score N scenes spread over every log (runs of consecutive scenes)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address; default: local workers")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes (1 = in-process)")
    parser.add_argument("--traffic", choices=TRAFFIC_POLICIES[:2], default="non_reactive", help="traffic agents")
    parser.add_argument("--experiment", default=None, help="output folder name under $NAVSIM_EXP_ROOT")
    parser.add_argument("--metric-cache", default=None, help="metric cache root (default $NAVSIM_EXP_ROOT/metric_cache)")
    parser.set_defaults(func=run_score)


def format_table(frame) -> str:
    """The `average_all_frames` row as a two-column table (short name, navsim column, value in %)."""
    summary = frame[frame["token"] == "average_all_frames"].iloc[0]
    valid = frame[frame["token"] != "average_all_frames"]["valid"].astype(bool)
    lines = [f"{'metric':<6} {'column':<32} {'value':>8}"]
    for short, column in METRIC_COLUMNS.items():
        lines.append(f"{short:<6} {column:<32} {100 * summary[column]:8.2f}")
    lines.append(f"{'EPDMS':<6} {'score':<32} {100 * summary['score']:8.2f}")
    lines.append(f"scenes: {len(valid)} ({int(valid.sum())} valid)")
    return "\n".join(lines)


def run_score(args: argparse.Namespace) -> int:
    from agents.registry import make_agent  # higher layer, imported only when the command runs

    from irlvla_env.navsim.loader import load_split
    from irlvla_env.paths import exp_root
    from irlvla_env.scoring.evaluate import evaluate_agent
    from irlvla_env.scoring.metric_cache import MetricCacheStore

    agent = make_agent(args.agent, checkpoint=args.checkpoint)
    loader = load_split(args.split, sensor_config=agent.get_sensor_config())
    tokens = loader.spread_tokens(args.max_scenes)
    store = MetricCacheStore(args.metric_cache or exp_root() / "metric_cache")
    frame = evaluate_agent(
        agent, loader, store, experiment=args.experiment or f"score_{args.agent}_{args.split}", tokens=tokens,
        traffic=args.traffic, ray_address=args.ray_address, num_workers=args.workers,
    )  # fmt: skip
    print(format_table(frame))
    for token, error in list(frame.attrs.get("errors", {}).items())[:5]:
        print(f"invalid {token}: {error}")
    print(f"results: {frame.attrs.get('csv_path')}")
    return 0
