"""EPDMS for K candidate trajectories of one scene: rollouts, sub-metrics, human filter, aggregation (§4.1–§4.9).

`score_proposals` is navsim's `PDMScorer.score_proposals` on simulated states (PDM-Closed calls it to rank its
15 proposals). `score_trajectories` is the agent-facing call: it converts local 8-pose plans to rollouts,
scores each next to the cached PDM-Closed rollout (EP is normalised per pair, exactly as navsim scores one
agent at a time, so a batch gives the one-by-one answers), applies the human false-positive filter, adds
extended comfort against a previous plan when given, and aggregates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from irlvla_env.navsim.geometry import local_to_global
from irlvla_env.scoring.columns import HUMAN_FILTERED, METRIC_COLUMNS, MULTIPLIERS, SHORT_ORDER
from irlvla_env.scoring.drivable_map import PDMDrivableMap
from irlvla_env.scoring.metrics import (
    ScorerConfig,
    drivable_area_compliance,
    driving_direction_compliance,
    extended_comfort,
    history_comfort,
    lane_keeping,
    no_at_fault_collisions,
    normalise_progress,
    progress_along,
    time_to_collision,
    traffic_light_compliance,
)
from irlvla_env.scoring.observation import Observation
from irlvla_env.simulation import vehicle as V
from irlvla_env.simulation.simulator import local_trajectories_to_states, simulate

if TYPE_CHECKING:
    from irlvla_env.scoring.metric_cache import MetricCache

NUM_STEPS = 41
TRAFFIC_POLICIES = ("non_reactive", "reactive", "constant_velocity")
WEIGHTED = ("EP", "TTC", "LK", "HC", "EC")
TWO_STAGE_SIGMA_SQ = 0.1  # [m^2] Gaussian weighting of stage-two scenes by endpoint distance
EC_MAX_GAP_S = 0.55


@dataclass
class ProposalScores:
    """Sub-metrics `(K,)` by short name (EC absent), plus what aggregation needs."""

    metrics: dict[str, np.ndarray]
    raw_progress: np.ndarray
    multiplicative_prod: np.ndarray
    pdm_score: np.ndarray  # prod × (5 EP + 5 TTC + 2 LK + 2 HC) / 14, as navsim ranks PDM-Closed proposals


def _check_states(states: np.ndarray) -> np.ndarray:
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 3 or states.shape[1] != NUM_STEPS or states.shape[2] != V.STATE_SIZE:
        raise ValueError(f"states must have shape (K, {NUM_STEPS}, {V.STATE_SIZE}), got {states.shape}")
    if not np.all(np.isfinite(states)):
        raise ValueError("states contain NaN or inf")
    return states


def sub_metrics(
    states: np.ndarray,
    observation: Observation,
    centerline,
    route_lane_ids: Sequence[str],
    drivable_map: PDMDrivableMap,
    past_states: np.ndarray | None = None,
    config: ScorerConfig = ScorerConfig(),
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Unnormalised sub-metrics `(K,)` (EP missing) and raw progress `(K,)` for rollouts `(K, 41, 11)`."""
    states = _check_states(states)
    line = getattr(centerline, "linestring", centerline)
    coords = V.footprint_coords(states)
    areas = drivable_map.ego_areas(coords[:, :, :4], coords[:, :, V.CENTER], states[:, :, :2], set(route_lane_ids))
    metrics = {
        "NC": no_at_fault_collisions(states, coords, areas, observation),
        "DAC": drivable_area_compliance(areas),
        "DDC": driving_direction_compliance(coords, areas, config),
        "TLC": traffic_light_compliance(coords, observation),
        "TTC": time_to_collision(states, coords, areas, observation, config),
        "LK": lane_keeping(line, coords, areas, config),
        "HC": history_comfort(states, past_states),
    }
    return metrics, progress_along(line, coords)


def _weighted_score(metrics: dict[str, np.ndarray], prod: np.ndarray, config: ScorerConfig, with_ec: bool) -> np.ndarray:
    weights = config.weights
    names = [n for n in WEIGHTED if with_ec or n != "EC"]
    total = sum(weights[n] * metrics[n] for n in names)
    return prod * total / sum(weights[n] for n in names)


def score_proposals(
    states: np.ndarray,
    observation: Observation,
    centerline,
    route_lane_ids: Sequence[str],
    drivable_map: PDMDrivableMap,
    past_states: np.ndarray | None = None,
    config: ScorerConfig = ScorerConfig(),
) -> ProposalScores:
    """navsim's `PDMScorer.score_proposals`: every proposal scored, EP normalised by the best masked progress
    of the whole batch (so use it for sets that are ranked together, such as PDM-Closed's 15 proposals)."""
    metrics, raw = sub_metrics(states, observation, centerline, route_lane_ids, drivable_map, past_states, config)
    prod = np.prod([metrics[n] for n in MULTIPLIERS], axis=0)
    best = float(np.max(raw * prod)) if len(raw) else 0.0
    metrics["EP"] = normalise_progress(raw, prod, np.full_like(raw, best), config.progress_distance_threshold)
    return ProposalScores(metrics, raw, prod, _weighted_score(metrics, prod, config, with_ec=False))


@dataclass
class EPDMSResult:
    """Scores of K trajectories of one scene.

    :ivar columns: navsim column name → `(K,)` (the human-filtered values when the filter applies; EC is NaN when
        no previous plan was given).
    :ivar score: `(K,)` EPDMS per trajectory (§4.1; EC weight dropped when EC is unavailable).
    :ivar multiplicative_prod: `(K,)` NC·DAC·DDC·TLC as used in `score`.
    :ivar weighted: `(K, 5)` EP, TTC, LK, HC, EC as used in `score` (EC 0 when unavailable).
    :ivar rollouts: `(K, 41, 11)` simulated global states.
    :ivar endpoints: `(K, 2)` global position of each *planned* last pose (two-stage weighting).
    :ivar start_point: `(2,)` global rear axle at t0.
    :ivar start_time_s: t0 in seconds.
    :ivar raw_progress: `(K,)` metres along the centerline.
    """

    columns: dict[str, np.ndarray]
    score: np.ndarray
    multiplicative_prod: np.ndarray
    weighted: np.ndarray
    rollouts: np.ndarray
    endpoints: np.ndarray
    start_point: np.ndarray
    start_time_s: float
    raw_progress: np.ndarray
    human_filtered: bool = False
    extra: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        """A column by navsim name or short name (`NC`, `EP`, ...), or `score`."""
        if name == "score":
            return self.score
        return self.columns[METRIC_COLUMNS.get(name, name)]

    def __len__(self) -> int:
        return len(self.score)

    def to_frame(self) -> pd.DataFrame:
        """One row per trajectory with navsim's column names and `score`."""
        return pd.DataFrame({**{c: self.columns[c] for c in METRIC_COLUMNS.values()}, "score": self.score})


def validate_trajectories(trajectories: np.ndarray, num_poses: int = 8) -> np.ndarray:
    """`(K, num_poses, 3)` float64 from `(num_poses, 3)` or `(K, num_poses, 3)`; ValueError naming the problem."""
    array = np.asarray(trajectories, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (num_poses, 3) or len(array) == 0:
        raise ValueError(f"trajectories must have shape (K, {num_poses}, 3) with K >= 1, got {np.shape(trajectories)}")
    bad = ~np.isfinite(array)
    if bad.any():
        k, pose, col = np.argwhere(bad)[0]
        raise ValueError(
            f"trajectories contain {int(bad.sum())} non-finite values (first: trajectory {k}, pose {pose}, "
            f"column {'xyh'[col]} = {array[k, pose, col]})"
        )
    return array


def apply_human_filter(agent: dict[str, np.ndarray], human: dict[str, float]) -> dict[str, np.ndarray]:
    """Columns where the human scored exactly 0 are set to 1 for the agent (EC never; spec §4.8)."""
    out = dict(agent)
    for name in HUMAN_FILTERED:
        if human[name] == 0.0:
            out[name] = np.ones_like(agent[name])
    return out


def aggregate(
    metrics: dict[str, np.ndarray], config: ScorerConfig = ScorerConfig(), ec_available: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """§4.1: `(score, multiplicative_prod, weighted (K, 5))` from short-name columns `(K,)`.

    Without EC its value and weight are both dropped (denominator 14 instead of 16)."""
    prod = np.prod([np.asarray(metrics[n], dtype=np.float64) for n in MULTIPLIERS], axis=0)
    ec = np.asarray(metrics["EC"], dtype=np.float64) if ec_available else np.zeros_like(prod)
    weighted = np.stack([np.asarray(metrics[n], dtype=np.float64) for n in WEIGHTED[:4]] + [ec], axis=1)
    values = {**{n: weighted[:, i] for i, n in enumerate(WEIGHTED)}}
    return _weighted_score(values, prod, config, with_ec=ec_available), prod, weighted


def rescore_with_ec(result: EPDMSResult, ec: np.ndarray, config: ScorerConfig = ScorerConfig()) -> EPDMSResult:
    """The same result with EC filled in and the score recomputed with EC's weight (one-stage pairing)."""
    weighted = result.weighted.copy()
    weighted[:, 4] = ec
    values = {n: weighted[:, i] for i, n in enumerate(WEIGHTED)}
    score = _weighted_score(values, result.multiplicative_prod, config, with_ec=True)
    columns = {**result.columns, METRIC_COLUMNS["EC"]: np.asarray(ec, dtype=np.float64)}
    return EPDMSResult(**{**result.__dict__, "columns": columns, "score": score, "weighted": weighted})


def two_stage_weights(endpoint: np.ndarray, start_points: np.ndarray, sigma_sq: float = TWO_STAGE_SIGMA_SQ) -> np.ndarray:
    """§4.9: Gaussian weights `(n,)` of stage-two scenes by the squared distance of their start points to the
    stage-one planned endpoint, normalised to 1 (uniform when they vanish)."""
    d2 = np.sum((np.asarray(start_points, dtype=np.float64) - np.asarray(endpoint, dtype=np.float64)) ** 2, axis=-1)
    w = np.exp(-d2 / (2.0 * sigma_sq))
    total = w.sum()
    if len(w) == 0:
        return w
    if not np.isfinite(total) or total < 1e-12:
        return np.full(len(w), 1.0 / len(w))
    return w / total


def two_stage_aggregate(rows: pd.DataFrame, mapping: Sequence, sigma_sq: float = TWO_STAGE_SIGMA_SQ) -> pd.DataFrame:
    """§4.9 step 6: one row per mapping entry `[orig, prev, [[now_i, prev_i], ...]]`.

    `rows` is indexed by token with the metric columns, `score`, `endpoint_x/y` (stage one) and
    `start_point_x/y` (stage two). For each column c: `G_c = ½ [S1_c(orig) Σ w_i S2_c(now_i) +
    S1_c(prev) Σ w'_i S2_c(prev_i)]`; the benchmark EPDMS is the mean of `G_score`.
    """
    columns = [*METRIC_COLUMNS.values(), "score"]
    out = []
    for orig, prev, pairs in mapping:
        if orig not in rows.index and prev not in rows.index:
            continue
        missing = [t for t in (orig, prev, *(t for pair in pairs for t in pair)) if t not in rows.index]
        if missing:
            raise KeyError(f"two-stage entry {orig}: no result for token(s) {missing}")
        halves = []
        for stage_one, group in ((orig, [p[0] for p in pairs]), (prev, [p[1] for p in pairs])):
            s1 = rows.loc[stage_one]
            s2 = rows.loc[group]
            w = two_stage_weights(
                s1[["endpoint_x", "endpoint_y"]].to_numpy(float), s2[["start_point_x", "start_point_y"]].to_numpy(float),
                sigma_sq,
            )
            halves.append({c: float(s1[c]) * float(np.dot(w, s2[c].to_numpy(float))) for c in columns})
        out.append({"token": orig, **{c: 0.5 * (halves[0][c] + halves[1][c]) for c in columns}})
    return pd.DataFrame(out)




@dataclass
class PreviousPlan:
    """The rollout(s) `(41, 11)` or `(K, 41, 11)` of the plan made 0.5 s earlier in the same log (EC)."""

    rollouts: np.ndarray
    start_time_s: float


def traffic_observation(cache: "MetricCache", rollouts: np.ndarray, traffic: str) -> Observation:
    """The other agents for one ego rollout `(41, 11)` under a traffic policy (spec §4.3).

    Policies live in `irlvla_env.simulation.traffic`: `log_replay(observation, ego_state_t0)`,
    `constant_velocity(observation, ego_state_t0)` and, for reactive traffic,
    `idm_reactive(observation, ego_state_t0, ego_rollout, map_api, t0_tracks)`."""
    from irlvla_env.simulation import traffic as policies

    if traffic == "non_reactive":
        return policies.log_replay(cache.observation, cache.ego_state)
    if traffic == "reactive":
        return policies.idm_reactive(
            cache.observation, cache.ego_state, rollouts, cache.get_map(), t0_tracks=cache.current_tracks
        )
    if traffic == "constant_velocity":
        return policies.constant_velocity(cache.observation, cache.ego_state)
    raise ValueError(f"unknown traffic policy {traffic!r}; expected one of {TRAFFIC_POLICIES}")


def _rollouts(cache: "MetricCache", trajectories: np.ndarray, interval_s: float) -> np.ndarray:
    return simulate(cache.ego_state, local_trajectories_to_states(trajectories, interval_s, cache.ego_state))


def _pair_scores(
    cache: "MetricCache",
    states: np.ndarray,
    observation: Observation,
    config: ScorerConfig,
    past: np.ndarray | None,
    pdm_masked: float | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """Sub-metrics of agent rollouts `(K, 41, 11)` (EP not yet normalised), their raw progress, and the
    PDM-Closed rollout's multiplier-masked progress under the same observation (computed unless given)."""
    with_pdm = pdm_masked is None
    both = np.concatenate([cache.pdm_closed_rollout[None], states]) if with_pdm else states
    metrics, raw = sub_metrics(
        both, observation, cache.centerline_path, cache.route_lane_ids, cache.drivable_map, past, config
    )
    if with_pdm:
        pdm_masked = float(raw[0] * np.prod([metrics[n][0] for n in MULTIPLIERS]))
        metrics = {n: v[1:] for n, v in metrics.items()}
        raw = raw[1:]
    return metrics, raw, float(pdm_masked)


def _human_metrics(cache: "MetricCache", traffic: str, config: ScorerConfig) -> dict[str, float]:
    """The human trajectory scored alone (no history → HC 1; EP against itself → 1), memoised per policy."""
    key = ("human", traffic, config)
    if key not in cache.memo:
        states = _rollouts(cache, cache.human_trajectory[None], 0.5)
        observation = traffic_observation(cache, states[0], traffic)
        scores = score_proposals(
            states, observation, cache.centerline_path, cache.route_lane_ids, cache.drivable_map, None, config
        )
        cache.memo[key] = {n: float(v[0]) for n, v in scores.metrics.items()}
    return cache.memo[key]


def score_trajectories(
    cache: "MetricCache",
    trajectories: np.ndarray,
    previous: PreviousPlan | None = None,
    config: ScorerConfig = ScorerConfig(),
    traffic: str = "non_reactive",
    human_filter: bool = True,
    interval_s: float = 0.5,
) -> EPDMSResult:
    """EPDMS of `K` planned trajectories `(K, 8, 3)` (local to t0, `interval_s` apart) of the cached scene.

    Each trajectory is simulated and scored next to PDM-Closed, as navsim scores one agent plan. The human
    filter (spec §4.8) applies to original scenes when both `human_filter` and `config.human_penalty_filter`
    are on. With `previous`, EC is computed and weighted; without, EC is NaN and its weight dropped.
    Raises ValueError on NaN/inf or wrongly shaped input, naming the problem.
    """
    if traffic not in TRAFFIC_POLICIES:
        raise ValueError(f"unknown traffic policy {traffic!r}; expected one of {TRAFFIC_POLICIES}")
    trajectories = validate_trajectories(trajectories, num_poses=int(round(4.0 / interval_s)))
    states = _rollouts(cache, trajectories, interval_s)
    past = cache.history_states if len(cache.history_states) else None

    if traffic == "reactive":  # every rollout moves the IDM agents differently: simulate them in one batch
        from irlvla_env.simulation.traffic import idm_reactive_batch

        observations = idm_reactive_batch(
            cache.observation, cache.ego_state, states, cache.get_map(), t0_tracks=cache.current_tracks
        )
        parts = [
            _pair_scores(cache, states[k : k + 1], observations[k], config, past) for k in range(len(states))
        ]
        metrics = {n: np.concatenate([p[0][n] for p in parts]) for n in parts[0][0]}
        raw = np.concatenate([p[1] for p in parts])
        pdm_masked = np.array([p[2] for p in parts])
    else:
        key = ("observation", traffic)
        if key not in cache.memo:
            cache.memo[key] = traffic_observation(cache, cache.pdm_closed_rollout, traffic)
        observation = cache.memo[key]
        metrics, raw, pdm_masked = _pair_scores(
            cache, states, observation, config, past, cache.memo.get(("pdm_masked", traffic, config))
        )
        cache.memo[("pdm_masked", traffic, config)] = pdm_masked

    prod = np.prod([metrics[n] for n in MULTIPLIERS], axis=0)
    metrics["EP"] = normalise_progress(raw, prod, pdm_masked, config.progress_distance_threshold)

    filtered = dict(metrics)
    use_filter = human_filter and config.human_penalty_filter and not cache.is_synthetic
    if use_filter and cache.human_trajectory is not None:
        filtered = apply_human_filter(metrics, _human_metrics(cache, traffic, config))
    scored = metrics if config.human_filter_prefix_bug else filtered

    ec_available = previous is not None
    if ec_available:
        before = np.broadcast_to(np.asarray(previous.rollouts, dtype=np.float64), states.shape)
        filtered["EC"] = extended_comfort(states, before, cache.start_time_s - previous.start_time_s)
    else:
        filtered["EC"] = np.full(len(states), np.nan)
    score, prod, weighted = aggregate({**scored, "EC": filtered["EC"]}, config, ec_available)

    endpoints = local_to_global(trajectories[:, -1], cache.ego_state[:3])[:, :2]
    return EPDMSResult(
        columns={METRIC_COLUMNS[n]: np.asarray(filtered[n], dtype=np.float64) for n in SHORT_ORDER},
        score=score, multiplicative_prod=prod, weighted=weighted, rollouts=states, endpoints=endpoints,
        start_point=cache.ego_state[:2].copy(), start_time_s=cache.start_time_s, raw_progress=raw,
        human_filtered=use_filter and cache.human_trajectory is not None,
    )  # fmt: skip
