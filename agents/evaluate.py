"""Score several agents on one split with the rule-based EPDMS and write the comparison table.

    irlvla eval --agents constant_velocity,ego_status_mlp,transfuser,human --split navtest

Each agent's per-token rows go to `<run_dir>/<agent>.csv` (navsim's one-stage CSV); the table of every agent's
averaged sub-scores goes to `summary.csv` and `summary.md`. A learnable agent named without a checkpoint uses the
newest model trained by `irlvla train il` for it.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import pandas as pd

from agents.abstract_agent import CONFIG_NAME, AbstractAgent, atomic_write_text
from agents.registry import ASSEMBLED, PARAMETER_FREE, agent_class, make_agent
from agents.training.config import resolve_roots
from irlvla_env import paths
from irlvla_env.navsim.loader import load_split
from irlvla_env.scoring.columns import METRIC_COLUMNS
from irlvla_env.scoring.evaluate import SUMMARY_TOKEN, evaluate_agent
from irlvla_env.scoring.metric_cache import MetricCacheStore

TABLE_COLUMNS = (*METRIC_COLUMNS, "EPDMS")


def parse_agent_specs(text: str) -> list[tuple[str, Path | None]]:
    """`"a,b=path"` → `[("a", None), ("b", Path("path"))]`, checking every name is registered."""
    specs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, checkpoint = item.partition("=")
        agent_class(name)  # fails early, naming the unknown agent
        specs.append((name, Path(checkpoint).expanduser() if checkpoint else None))
    if not specs:
        raise ValueError("--agents is empty; give e.g. constant_velocity,ego_status_mlp")
    return specs


def latest_il_model(name: str) -> Path | None:
    """The `model/` folder of the newest finished IL run of agent `name`, if any."""
    runs = sorted((paths.exp_root() / "il" / name).glob(f"*/model/{CONFIG_NAME}"))
    return runs[-1].parent if runs else None


def load_agent(name: str, checkpoint: Path | None) -> AbstractAgent:
    """The agent to score: parameter-free agents as they are, learnable ones from a checkpoint."""
    if checkpoint is None and name in ASSEMBLED:
        raise FileNotFoundError(f"agent {name!r} is assembled from a trained VLA and RWM: run `irlvla guide --vla CKPT "
                                f"--reward-model RWM --out DIR` and pass {name}=DIR")
    if checkpoint is None and name not in PARAMETER_FREE:
        checkpoint = latest_il_model(name)
        if checkpoint is None:
            raise FileNotFoundError(
                f"agent {name!r} needs trained weights: run `irlvla train il --agent {name}` or pass {name}=CHECKPOINT"
            )
    return make_agent(name, checkpoint=checkpoint)


def summarise(rows: pd.DataFrame) -> dict[str, float]:
    """The short-named sub-scores and EPDMS of an agent's `average_all_frames` row."""
    summary = rows[rows["token"] == SUMMARY_TOKEN]
    if summary.empty:
        raise ValueError(f"evaluation result has no {SUMMARY_TOKEN!r} row")
    row = summary.iloc[0]
    values = {short: float(row[column]) for short, column in METRIC_COLUMNS.items()}
    values["EPDMS"] = float(row["score"])
    return values


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub Markdown table with three decimals (pandas' `to_markdown` needs the optional tabulate)."""
    header = ["agent", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"]
    for name, row in table.iterrows():
        lines.append("| " + " | ".join([str(name), *(f"{value:.3f}" for value in row)]) + " |")
    return "\n".join(lines) + "\n"


def evaluate_agents(
    specs: list[tuple[str, Path | None]],
    split: str = "navtest",
    max_scenes: int | None = None,
    data_root: str | Path | None = None,
    maps_root: str | Path | None = None,
    run_dir: str | Path | None = None,
    metric_cache: str | Path | None = None,
    num_workers: int = 1,
) -> pd.DataFrame:
    """Score every agent on `split`; write per-agent CSVs and the summary into `run_dir`; return the summary.

    Metric caches are shared with `irlvla score` (default `<exp_root>/metric_cache`) and built on first use;
    `num_workers > 1` scores over Ray.
    """
    run_dir = Path(run_dir) if run_dir else paths.exp_root() / "eval" / datetime.now().strftime("%Y.%m.%d.%H.%M.%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    root, maps = resolve_roots(data_root, maps_root)
    store = MetricCacheStore(Path(metric_cache) if metric_cache else paths.exp_root() / "metric_cache")
    table = {}
    for name, checkpoint in specs:
        agent = load_agent(name, checkpoint)
        scenes = load_split(split, root, agent.get_sensor_config(), maps)
        if len(scenes) == 0:
            raise ValueError(f"split {split!r} under {root} has no scenes to score")
        tokens = scenes.spread_tokens(max_scenes)  # a capped evaluation still covers every log
        rows = evaluate_agent(agent, scenes, store, tokens=tokens, num_workers=num_workers, write_csv=False)
        rows.to_csv(run_dir / f"{name}.csv")
        for token, error in list(rows.attrs.get("errors", {}).items())[:3]:
            print(f"{name}: invalid scene {token}: {error}")
        table[name] = summarise(rows)
    summary = pd.DataFrame.from_dict(table, orient="index", columns=list(TABLE_COLUMNS))
    summary.index.name = "agent"
    summary.attrs["run_dir"] = str(run_dir)
    summary.to_csv(run_dir / "summary.csv")
    atomic_write_text(run_dir / "summary.md", markdown_table(summary))
    return summary


def run_from_args(args: argparse.Namespace) -> int:
    summary = evaluate_agents(
        parse_agent_specs(args.agents),
        split=args.split,
        max_scenes=args.max_scenes,
        data_root=args.data_root,
        maps_root=args.maps_root,
        run_dir=args.run_dir,
        metric_cache=args.metric_cache,
        num_workers=args.workers,
    )
    print(markdown_table(summary))
    print(f"table: {summary.attrs['run_dir']}/summary.md")
    return 0
