"""Observation and metric-cache building, storage, aggregation, the human filter and the agent-facing scorer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from irlvla_env.navsim.dataclasses import (
    Annotations,
    Cameras,
    EgoStatus,
    Frame,
    Lidar,
    Scene,
    SceneMetadata,
)
from irlvla_env.scoring.columns import METRIC_COLUMNS
from irlvla_env.scoring.drivable_map import build_drivable_map
from irlvla_env.scoring.epdms import (
    PreviousPlan,
    aggregate,
    apply_human_filter,
    score_trajectories,
    two_stage_aggregate,
    two_stage_weights,
    validate_trajectories,
)
from irlvla_env.scoring.evaluate import pair_extended_comfort, results_frame, write_results
from irlvla_env.scoring.metric_cache import MetricCache, MetricCacheStore, history_states
from irlvla_env.scoring.observation import NUM_STEPS, build_observation
from irlvla_env.simulation import vehicle as V
from irlvla_env.simulation.simulator import local_trajectories_to_states, simulate
from test_scoring_metrics import ROAD, ROUTE, ROUTE_LANES, TIMES, cruise, moving, observation

T0_US = 1_600_000_000_000_000


def _frame(i: int, ego_x: float, boxes: list[tuple], lights: list[tuple[int, bool]]) -> Frame:
    """Frame `i` (0.5 s apart); ego at (ego_x, 0) heading 0 moving 8 m/s; boxes `(token, name, x, y, heading, vx)`
    given in the global frame and converted to this frame's ego frame."""
    ann = Annotations(
        boxes=np.array([[x - ego_x, y, 0.0, 4.0, 2.0, 1.5, h] for _, _, x, y, h, _ in boxes]).reshape(-1, 7),
        names=[n for _, n, *_ in boxes],
        velocity_3d=np.array([[vx, 0.0, 0.0] for *_, vx in boxes]).reshape(-1, 3),
        instance_tokens=[f"inst{i}_{t}" for t, *_ in boxes],
        track_tokens=[t for t, *_ in boxes],
    )
    status = EgoStatus(np.array([ego_x, 0.0, 0.0]), np.array([8.0, 0.0]), np.array([0.0, 0.0]), np.array([0, 1, 0, 0]),
                       in_global_frame=True)  # fmt: skip
    return Frame(f"{i:016x}", T0_US + 500_000 * (i - 3), ROUTE, lights, ann, status, Lidar(), Cameras())


def make_scene() -> Scene:
    frames = []
    for i in range(12):  # 4 history + 8 future frames
        t = 0.5 * (i - 3)
        ego_x = -40.0 + 8.0 * t
        boxes = [("car", "vehicle", -20.0 + 5.0 * t, 0.0, 0.0, 5.0)]
        if i == 5:
            boxes.append(("blink", "pedestrian", 30.0, -5.0, 0.3, 1.0))  # seen once → present at every step
        if 4 <= i <= 6:
            boxes.append(("spin", "vehicle", 50.0, 3.5, np.pi - 0.1 + 0.1 * (i - 4), 0.0))  # crosses ±π
        if i >= 3:
            boxes.append(("cone", "traffic_cone", 60.0, -1.0, 0.0, 3.0))  # static: velocity ignored
        lights = [(51, i >= 5), (999, True)]  # 999 is not on the route
        frames.append(_frame(i, ego_x, boxes, lights))
    meta = SceneMetadata("log_a", "scene_a", "us-ma-boston", frames[3].token, 4, 8)
    return Scene(meta, ROAD, frames)


def test_observation_is_interpolated_to_10_hz():
    obs = build_observation(make_scene())
    idx = {t: i for i, t in enumerate(obs.tokens)}
    car = idx["car"]
    assert obs.present[:, car].all()
    np.testing.assert_allclose(obs.centers[:, car, 0], -20.0 + 5.0 * TIMES, atol=1e-9)
    np.testing.assert_allclose(obs.velocities[:, car], np.tile([5.0, 0.0], (NUM_STEPS, 1)), atol=1e-9)
    assert obs.present[:, idx["blink"]].all()  # [Q] seen once → every step, unchanged
    np.testing.assert_allclose(obs.centers[:, idx["blink"]], np.tile([30.0, -5.0], (NUM_STEPS, 1)))
    spin = idx["spin"]
    assert obs.present[:, spin].tolist() == [0.5 <= t + 1e-9 and t <= 1.5 + 1e-9 for t in TIMES]
    # Frames 4 → 6 heading goes π−0.1 → π+0.1: the midpoint is π (unwrapped), not 0.
    assert abs(abs(obs.headings[10, spin]) - np.pi) < 1e-9
    cone = idx["cone"]
    assert np.all(obs.velocities[:, cone] == 0.0) and obs.first_speeds[cone] == 0.0
    assert obs.types[cone] == "traffic_cone" and not obs.is_agent[cone]
    np.testing.assert_allclose(obs.sizes[car], [4.0, 2.0])
    assert obs.red_light_ids.tolist() == ["51"]  # the off-route light is dropped
    assert obs.red_light_active[:, 0].tolist() == [t >= 1.0 - 1e-9 for t in TIMES]  # zero-order hold


def test_history_is_resampled_and_drops_the_last_sample():
    past = history_states(make_scene())
    assert past.shape == (14, V.STATE_SIZE)
    np.testing.assert_allclose(past[:, V.X], -40.0 + 8.0 * (-1.5 + 0.1 * np.arange(14)), atol=1e-9)
    np.testing.assert_allclose(past[:, V.VELOCITY_X], 8.0)


def make_cache(tracks: list[dict] | None = None, human: np.ndarray | None = None, token: str = "a" * 16,
               timestamp_us: int = T0_US, red=None) -> MetricCache:  # fmt: skip
    """A cache whose ego drives east at 8 m/s from (−40, 0); PDM-Closed plans the same."""
    ego = cruise(8.0)[0].copy()
    ego[V.ACCELERATION_X] = 0.0
    straight = np.column_stack([8.0 * 0.5 * np.arange(1, 11), np.zeros(10), np.zeros(10)])
    reference = local_trajectories_to_states(straight[None], 0.5, ego)
    centerline = np.column_stack([np.linspace(-60, 160, 221), np.zeros(221), np.zeros(221)])
    past = np.tile(ego, (14, 1))
    past[:, V.X] = -40.0 + 8.0 * (-1.5 + 0.1 * np.arange(14))
    return MetricCache(
        token=token, log_name="log_a", timestamp_us=timestamp_us, scene_type=int(len(token) == 17),
        map_location="us-ma-boston", ego_state=ego, pdm_closed_trajectory=np.concatenate([reference[0]] * 2)[:51],
        pdm_closed_rollout=simulate(ego, reference)[0],
        human_trajectory=straight[:8] if human is None else human, history_states=past, centerline=centerline,
        route_lane_ids=ROUTE_LANES, route_roadblock_ids=ROUTE,
        drivable_map=build_drivable_map(ROAD, np.array([-38.5, 0.0])), observation=observation(tracks, red),
        current_tracks=np.ones(len(tracks or []), dtype=bool), map_api=ROAD,
    )  # fmt: skip


def test_store_round_trip_is_exact_and_atomic(tmp_path):
    cache = make_cache([moving("lead", -20.0, 5.0)], red=[("51", TIMES > 1.0)])
    store = MetricCacheStore(tmp_path)
    assert cache.token not in store
    path = store.put(cache)
    assert cache.token in store and store.tokens() == [cache.token]
    assert path == tmp_path / "log_a" / "unknown" / cache.token / "metric_cache.npz"
    assert not list(path.parent.glob(".tmp-*"))
    loaded = store.get(cache.token)
    for name in ("ego_state", "pdm_closed_rollout", "history_states", "centerline", "human_trajectory"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(cache, name))
    assert loaded.route_lane_ids == cache.route_lane_ids
    np.testing.assert_array_equal(loaded.current_tracks, cache.current_tracks)
    for name in ("tokens", "types", "present", "centers", "red_light_ids", "red_light_active"):
        np.testing.assert_array_equal(getattr(loaded.observation, name), getattr(cache.observation, name))
    assert loaded.observation.red_light_polygons[0].equals(cache.observation.red_light_polygons[0])
    assert list(loaded.drivable_map.ids) == list(cache.drivable_map.ids)
    assert all(a.equals(b) for a, b in zip(loaded.drivable_map.polygons, cache.drivable_map.polygons))
    assert store.get(cache.token) is loaded  # one object per file and process: its memo outlives the call
    store.put(dataclasses.replace(cache, ego_state=cache.ego_state + 1.0))
    assert MetricCacheStore(tmp_path).get(cache.token) is not loaded  # a rewritten file is read again
    np.testing.assert_array_equal(store.get(cache.token).ego_state, cache.ego_state + 1.0)
    with pytest.raises(KeyError, match="no metric cache"):
        store.get("missing")
    path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="unreadable metric cache"):
        MetricCacheStore(tmp_path).get(cache.token)


def test_aggregation_formula():
    m = {"NC": [1.0, 0.5], "DAC": [1.0, 1.0], "DDC": [1.0, 0.5], "TLC": [1.0, 1.0],
         "EP": [0.8, 1.0], "TTC": [1.0, 0.0], "LK": [0.0, 1.0], "HC": [1.0, 1.0], "EC": [1.0, 0.0]}  # fmt: skip
    score, prod, weighted = aggregate({k: np.array(v) for k, v in m.items()})
    np.testing.assert_allclose(prod, [1.0, 0.25])
    np.testing.assert_allclose(score, [(5 * 0.8 + 5 + 0 + 2 + 2) / 16, 0.25 * (5 + 0 + 2 + 2 + 0) / 16])
    score_no_ec, _, weighted_no_ec = aggregate({k: np.array(v) for k, v in m.items()}, ec_available=False)
    np.testing.assert_allclose(score_no_ec, [(5 * 0.8 + 5 + 2) / 14, 0.25 * (5 + 2 + 2) / 14])
    assert weighted.shape == (2, 5) and np.all(weighted_no_ec[:, 4] == 0.0)


def test_human_filter_resets_only_columns_the_human_failed():
    agent = {n: np.array([0.0]) for n in ("NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC")}
    human = {"NC": 0.5, "DAC": 0.0, "DDC": 1.0, "TLC": 0.0, "EP": 1.0, "TTC": 0.0, "LK": 1.0, "HC": 1.0}
    out = apply_human_filter(agent, human)
    assert {n: float(v[0]) for n, v in out.items()} == {
        "NC": 0.0, "DAC": 1.0, "DDC": 0.0, "TLC": 1.0, "EP": 0.0, "TTC": 1.0, "LK": 0.0, "HC": 0.0
    }


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.full((8, 2), 1.0), "shape"),
        (np.zeros((2, 7, 3)), "shape"),
        (np.zeros((0, 8, 3)), "shape"),
        (np.where(np.arange(24).reshape(8, 3) == 5, np.nan, 0.0), "non-finite"),
        (np.where(np.arange(24).reshape(8, 3) == 0, np.inf, 0.0), "non-finite"),
    ],
)
def test_bad_trajectories_raise_value_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        validate_trajectories(bad)
    with pytest.raises(ValueError, match=message):
        score_trajectories(make_cache(), bad)


def test_two_stage_weights_and_aggregation():
    w = two_stage_weights(np.array([0.0, 0.0]), np.array([[0.0, 0.0], [1.0, 0.0]]))
    np.testing.assert_allclose(w, np.array([1.0, np.exp(-1 / 0.2)]) / (1.0 + np.exp(-1 / 0.2)))
    np.testing.assert_allclose(two_stage_weights(np.zeros(2), np.array([[100.0, 0], [200.0, 0]])), [0.5, 0.5])
    cols = [*METRIC_COLUMNS.values(), "score"]
    rows = pd.DataFrame(
        [
            {"token": "o", **{c: 1.0 for c in cols}, "endpoint_x": 0.0, "endpoint_y": 0.0},
            {"token": "p", **{c: 0.5 for c in cols}, "endpoint_x": 10.0, "endpoint_y": 0.0},
            {"token": "n1", **{c: 0.8 for c in cols}, "start_point_x": 0.0, "start_point_y": 0.0},
            {"token": "n2", **{c: 0.2 for c in cols}, "start_point_x": 50.0, "start_point_y": 0.0},
            {"token": "q1", **{c: 1.0 for c in cols}, "start_point_x": 10.0, "start_point_y": 0.0},
            {"token": "q2", **{c: 0.0 for c in cols}, "start_point_x": 90.0, "start_point_y": 0.0},
        ]
    ).set_index("token")
    out = two_stage_aggregate(rows, [["o", "p", [["n1", "q1"], ["n2", "q2"]]]])
    assert out["score"].iloc[0] == pytest.approx(0.5 * (1.0 * 0.8 + 0.5 * 1.0))


def test_score_trajectories_end_to_end():
    cache = make_cache([moving("lead", 0.0, 8.0)])
    straight = np.column_stack([8.0 * 0.5 * np.arange(1, 9), np.zeros(8), np.zeros(8)])
    stop = np.zeros((8, 3))
    off_road = straight.copy()
    off_road[:, 1] = -np.linspace(0.5, 12.0, 8)
    batch = np.stack([straight, stop, off_road])
    result = score_trajectories(cache, batch)
    assert result.rollouts.shape == (3, NUM_STEPS, V.STATE_SIZE)
    assert result["NC"].tolist() == [1.0, 1.0, 1.0]
    assert result["DAC"].tolist() == [1.0, 1.0, 0.0]
    assert result["EP"][0] == pytest.approx(1.0, abs=0.02) and result["EP"][1] < 0.5  # braking from 8 m/s still rolls ~9 m
    assert np.isnan(result["EC"]).all()
    assert result.score[0] == pytest.approx(1.0, abs=0.01)  # EC weight dropped: 14/14
    assert result.score[2] == 0.0
    np.testing.assert_allclose(result.endpoints[0], [-40.0 + 32.0, 0.0])
    for k in range(3):  # batched = one by one
        alone = score_trajectories(cache, batch[k])
        assert alone.score[0] == pytest.approx(result.score[k])
        for column, values in result.columns.items():
            if column != METRIC_COLUMNS["EC"]:
                assert alone.columns[column][0] == pytest.approx(values[k], abs=1e-9), column
    # EC against the same plan made 0.5 s earlier (its rollout shifted by 5 steps) is comfortable.
    previous = PreviousPlan(result.rollouts[0], cache.start_time_s - 0.5)
    with_ec = score_trajectories(cache, straight, previous=previous)
    assert with_ec["EC"][0] in (0.0, 1.0)
    weights = np.array([5, 5, 2, 2, 2.0])
    assert with_ec.score[0] == pytest.approx(with_ec.multiplicative_prod[0] * with_ec.weighted[0] @ weights / 16)


def test_a_plan_leaving_the_map_scores_zero_without_crashing():
    far = np.column_stack([np.linspace(100, 1000, 8), np.linspace(0, 500, 8), np.zeros(8)])
    result = score_trajectories(make_cache(), far, human_filter=False)
    assert result["DAC"][0] == 0.0 and result.score[0] == 0.0 and np.isfinite(result.rollouts).all()


def test_human_filter_in_the_scorer_and_the_pre_fix_variant():
    from irlvla_env.scoring.metrics import ScorerConfig

    # The human drives off the road, so every agent gets DAC reset to 1.
    human = np.column_stack([8.0 * 0.5 * np.arange(1, 9), -np.linspace(0.5, 12.0, 8), np.zeros(8)])
    off_road = human.copy()
    filtered = score_trajectories(make_cache(human=human), off_road)
    assert filtered["DAC"][0] == 1.0 and filtered.score[0] > 0.0
    raw = score_trajectories(make_cache(human=human), off_road, human_filter=False)
    assert raw["DAC"][0] == 0.0 and raw.score[0] == 0.0
    pre_fix = score_trajectories(make_cache(human=human), off_road, config=ScorerConfig(human_filter_prefix_bug=True))
    assert pre_fix["DAC"][0] == 1.0 and pre_fix.score[0] == 0.0  # columns rewritten, score untouched
    synthetic = score_trajectories(make_cache(human=human, token="b" * 17), off_road)
    assert synthetic["DAC"][0] == 0.0  # no filter on synthetic scenes


def test_one_stage_pairing_and_csv(tmp_path):
    rows = []
    for i, t in enumerate([0.0, 0.5, 1.0, 5.0]):
        cache = make_cache(token=f"{i:016x}", timestamp_us=T0_US + int(t * 1e6))
        res = score_trajectories(cache, np.column_stack([4.0 * np.arange(1, 9), np.zeros(8), np.zeros(8)]))
        rows.append({"token": cache.token, "valid": True, **{c: float(v[0]) for c, v in res.columns.items()},
                     "score": float(res.score[0]), "log_name": "log_a", "start_time": res.start_time_s,
                     "rollout": res.rollouts[0], "prod": float(res.multiplicative_prod[0]), "weighted": res.weighted[0]})  # fmt: skip
    rows.append({"token": "broken", "valid": False})
    pair_extended_comfort(rows)
    ec = [r.get(METRIC_COLUMNS["EC"]) for r in rows[:4]]
    assert np.isnan(ec[0]) and not np.isnan(ec[1]) and not np.isnan(ec[2]) and np.isnan(ec[3])
    frame = results_frame(rows)
    assert list(frame.columns) == ["token", "valid", *METRIC_COLUMNS.values(), "score"]
    assert frame["token"].iloc[-1] == "average_all_frames"
    assert frame["score"].iloc[-1] == pytest.approx(np.nanmean(frame["score"].iloc[:-1]))
    path = write_results(frame, "exp", root=tmp_path)
    again = pd.read_csv(path, index_col=0)
    assert list(again.columns) == list(frame.columns) and len(again) == 6


def test_build_metric_cache_from_a_scene(tmp_path):
    from irlvla_env.scoring.metric_cache import ORIGINAL, build_metric_cache

    scene = make_scene()
    cache = build_metric_cache(scene)
    assert cache.token == scene.token and cache.scene_type == ORIGINAL and cache.log_name == "log_a"
    assert cache.route_lane_ids == ROUTE_LANES and cache.route_roadblock_ids == ROUTE
    assert cache.pdm_closed_trajectory.shape == (51, V.STATE_SIZE)
    assert cache.pdm_closed_rollout.shape == (NUM_STEPS, V.STATE_SIZE)
    np.testing.assert_allclose(cache.human_trajectory[:, 0], 4.0 * np.arange(1, 9), atol=1e-6)
    assert set(cache.drivable_map.ids) >= {"1", "2", "3", "11", "21", "31", "51"}
    assert "101" not in set(cache.drivable_map.ids)  # roadblock-connector polygons are not added (§3.3)
    tokens = list(cache.observation.tokens)
    assert cache.current_tracks[tokens.index("car")] and not cache.current_tracks[tokens.index("blink")]
    result = score_trajectories(cache, cache.human_trajectory)
    assert result.score[0] == pytest.approx(1.0)
    store = MetricCacheStore(tmp_path)
    store.put(cache)
    again = score_trajectories(store.get(cache.token), cache.human_trajectory)
    assert again.score[0] == result.score[0]
    no_route = make_scene()
    no_route.frames[3].roadblock_ids = []
    with pytest.raises(ValueError, match="no route"):
        build_metric_cache(no_route)


class _LogLoader:
    """Three consecutive scenes (0.5 s apart) of one log, with the SceneLoader methods evaluation uses."""

    def __init__(self) -> None:
        frames = make_scene().frames
        extra = []
        for i in range(12, 14):
            t = 0.5 * (i - 3)
            extra.append(_frame(i, -40.0 + 8.0 * t, [("car", "vehicle", -20.0 + 5.0 * t, 0.0, 0.0, 5.0)], []))
        self._frames = frames + extra
        self.tokens = [self._frames[j + 3].token for j in range(3)]

    def get_scene_from_token(self, token: str) -> Scene:
        j = self.tokens.index(token)
        meta = SceneMetadata("log_a", "scene_a", "us-ma-boston", token, 4, 8)
        return Scene(meta, ROAD, self._frames[j : j + 12])

    def get_agent_input_from_token(self, token: str):
        return self.get_scene_from_token(token).get_agent_input()


class _ReplayAgent:
    requires_scene = True

    def name(self) -> str:
        return "replay"

    def compute_trajectory(self, agent_input, scene):
        return scene.get_future_trajectory(8)


def test_evaluate_agent_in_process(tmp_path, monkeypatch):
    from irlvla_env.scoring.evaluate import evaluate_agent

    monkeypatch.setenv("NAVSIM_EXP_ROOT", str(tmp_path / "exp"))
    loader = _LogLoader()
    store = MetricCacheStore(tmp_path / "cache")
    frame = evaluate_agent(_ReplayAgent(), loader, store, experiment="unit", num_workers=1)
    assert list(frame["token"]) == [*loader.tokens, "average_all_frames"]
    assert frame["valid"].all() and len(store) == 3
    ec = frame[METRIC_COLUMNS["EC"]].to_numpy()
    assert np.isnan(ec[0]) and np.isfinite(ec[1:3]).all()  # the first scene has no predecessor
    assert (frame["score"].iloc[:3] > 0.9).all()
    assert frame.attrs["csv_path"].startswith(str(tmp_path / "exp" / "unit"))
