"""One-stage EPDMS evaluation of an agent over a split (navsim's `run_pdm_score_one_stage.py`, spec §4.12).

Every scene: the agent plans, the plan is simulated and scored against the scene's metric cache. Afterwards
extended comfort pairs each token with its predecessor in the same log (≤ 0.55 s earlier) and the score is
recomputed with EC's weight; unpaired tokens keep the 14-weight score. The result CSV has navsim's columns and
a final `average_all_frames` row, under `$NAVSIM_EXP_ROOT/<experiment>/<YYYY.MM.DD.HH.MM.SS>.csv`.
"""

from __future__ import annotations

import datetime as dt
import os
import traceback
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from irlvla_env.parallel import chunks, map_chunks
from irlvla_env.paths import exp_root
from irlvla_env.scoring.columns import METRIC_COLUMNS
from irlvla_env.scoring.epdms import EC_MAX_GAP_S, ScorerConfig, score_trajectories
from irlvla_env.scoring.metric_cache import ORIGINAL, MetricCacheStore, build_metric_caches
from irlvla_env.scoring.metrics import extended_comfort

CSV_COLUMNS = ["token", "valid", *METRIC_COLUMNS.values(), "score"]
SUMMARY_TOKEN = "average_all_frames"


def _score_tokens(agent, loader, store_root: str, tokens: list[str], traffic: str, config: ScorerConfig) -> list[dict]:
    """Worker: plan and score `tokens`; a failing token becomes an invalid row (NaN) with the error kept."""
    store = MetricCacheStore(store_root)
    rows = []
    for token in tokens:
        try:
            agent_input = loader.get_agent_input_from_token(token)
            if getattr(agent, "requires_scene", False):
                trajectory = agent.compute_trajectory(agent_input, loader.get_scene_from_token(token))
            else:
                trajectory = agent.compute_trajectory(agent_input)
            cache = store.get(token)
            result = score_trajectories(
                cache, np.asarray(trajectory.poses)[None], config=config, traffic=traffic,
                interval_s=trajectory.trajectory_sampling.interval_length,
            )  # fmt: skip
            rows.append({
                "token": token, "valid": True, **{c: float(v[0]) for c, v in result.columns.items()},
                "score": float(result.score[0]), "log_name": cache.log_name, "start_time": result.start_time_s,
                "frame_type": cache.scene_type,
                "rollout": result.rollouts[0], "prod": float(result.multiplicative_prod[0]),
                "weighted": result.weighted[0],
            })  # fmt: skip
        except Exception as err:  # noqa: BLE001 — one bad scene must not end a split-wide evaluation
            rows.append({"token": token, "valid": False, "error": f"{type(err).__name__}: {err}",
                         "traceback": traceback.format_exc()})  # fmt: skip
    return rows


def pair_extended_comfort(rows: list[dict], config: ScorerConfig = ScorerConfig()) -> None:
    """Fill EC and rescore in place: within each log, sorted by start time, a token is paired with its
    predecessor when 0 < Δt < 0.55 s (navsim's one-stage inference of pairs; original scenes only)."""
    valid = sorted(
        (r for r in rows if r["valid"] and r.get("frame_type", ORIGINAL) == ORIGINAL),
        key=lambda r: (r["log_name"], r["start_time"]),
    )
    for prev, cur in zip(valid, valid[1:]):
        gap = cur["start_time"] - prev["start_time"]
        if cur["log_name"] != prev["log_name"] or not 0.0 < gap < EC_MAX_GAP_S:  # EC's own bound is strict
            continue
        ec = float(extended_comfort(cur["rollout"][None], prev["rollout"][None], gap)[0])
        weighted = np.array(cur["weighted"], dtype=np.float64)
        weighted[4] = ec
        weights = np.array(list(config.weights.values()))
        cur[METRIC_COLUMNS["EC"]] = ec
        cur["score"] = float(cur["prod"] * np.dot(weights, weighted) / weights.sum())


def results_frame(rows: list[dict]) -> pd.DataFrame:
    """navsim's one-stage table: one row per token plus the NaN-skipping `average_all_frames` row."""
    frame = pd.DataFrame([{c: r.get(c, np.nan) for c in CSV_COLUMNS} for r in rows], columns=CSV_COLUMNS)
    numeric = CSV_COLUMNS[2:]
    frame[numeric] = frame[numeric].astype(float)
    summary = {"token": SUMMARY_TOKEN, "valid": bool(frame["valid"].all()) if len(frame) else False}
    summary.update({c: frame[c].mean(skipna=True) for c in numeric})
    return pd.concat([frame, pd.DataFrame([summary])], ignore_index=True)


def write_results(frame: pd.DataFrame, experiment: str, root: Path | None = None) -> Path:
    """`<root>/<experiment>/<YYYY.MM.DD.HH.MM.SS>.csv` (pandas, leading unnamed index), written atomically."""
    folder = (root or exp_root()) / experiment
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dt.datetime.now().strftime('%Y.%m.%d.%H.%M.%S')}.csv"
    tmp = path.with_suffix(".csv.tmp")
    frame.to_csv(tmp)
    os.replace(tmp, path)
    return path


def evaluate_agent(
    agent,
    loader,
    store: MetricCacheStore,
    experiment: str | None = None,
    tokens: Iterable[str] | None = None,
    traffic: str = "non_reactive",
    config: ScorerConfig = ScorerConfig(),
    ray_address: str | None = None,
    num_workers: int | None = None,
    chunk_size: int = 16,
    write_csv: bool = True,
) -> pd.DataFrame:
    """Score `agent` on `tokens` (default: every scene of `loader`) and return navsim's result table.

    Missing metric caches are built first. One worker runs in-process; more run over Ray (local with
    `num_workers` CPUs, or the cluster at `ray_address`). Invalid tokens stay in the table with NaN metrics.
    """
    wanted = list(loader.tokens if tokens is None else tokens)
    failures = build_metric_caches(loader, store, wanted, ray_address=ray_address, num_workers=num_workers)
    failed = {f.split(":", 1)[0] for f in failures}
    todo = [t for t in wanted if t not in failed]
    rows: list[dict] = [{"token": t, "valid": False, "error": reason} for t, reason in
                        (f.split(": ", 1) for f in failures)]  # fmt: skip
    name = getattr(agent, "name", lambda: "agent")()
    for part in map_chunks(_score_tokens, (agent, loader, str(store.root)), chunks(todo, chunk_size), num_workers,
                           ray_address, desc=f"scoring {name}", extra=(traffic, config)):
        rows += part
    pair_extended_comfort(rows, config)
    order = {t: i for i, t in enumerate(wanted)}
    rows.sort(key=lambda r: order.get(r["token"], len(order)))
    frame = results_frame(rows)
    errors = [r for r in rows if not r["valid"]]
    frame.attrs["errors"] = {r["token"]: r.get("error", "") for r in errors}
    if write_csv:
        name = experiment or f"score_{getattr(agent, 'name', lambda: 'agent')()}"
        frame.attrs["csv_path"] = str(write_results(frame, name))
    return frame
