"""The RewardModel protocol, the rule-based EPDMS reward, the reward-model registry, and rule-based labelling."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from irlvla_env.rewards import (
    SUBSCORE_NAMES,
    EPDMSReward,
    RewardOutput,
    check_trajectories,
    compose_epdms,
    group_rows_by_token,
    make_reward_model,
    register_reward_model,
)


def _subscores(value: float = 1.0, size: int = 3, **overrides: float) -> dict[str, np.ndarray]:
    out = {name: np.full(size, value) for name in SUBSCORE_NAMES}
    out.update({k: np.full(size, v) for k, v in overrides.items()})
    return out


def test_compose_epdms_follows_the_official_formula():
    assert compose_epdms(_subscores()) == pytest.approx([1.0] * 3)
    s = _subscores(EP=0.5, HC=0.0, EC=0.0)
    assert compose_epdms(s, ec_available=True)[0] == pytest.approx((5 * 0.5 + 5 + 2 + 0 + 0) / 16)
    assert compose_epdms(s, ec_available=False)[0] == pytest.approx((5 * 0.5 + 5 + 2 + 0) / 14)
    assert compose_epdms(_subscores(NC=0.5, DDC=0.5))[0] == pytest.approx(0.25)
    assert compose_epdms(_subscores(EC=np.nan), ec_available=False)[0] == pytest.approx(1.0)


def test_reward_output_checks_shapes():
    out = RewardOutput(_subscores(), np.ones(3), np.ones(3), None)
    assert len(out) == 3
    with pytest.raises(ValueError, match="reward"):
        RewardOutput(_subscores(), np.ones(3), np.ones(4), None)
    with pytest.raises(ValueError, match="misses"):
        RewardOutput({"NC": np.ones(3)}, np.ones(3), np.ones(3), None)
    with pytest.raises(ValueError, match="uncertainty"):
        RewardOutput(_subscores(), np.ones(3), np.ones(3), np.ones(2))


def test_trajectory_checks_and_token_grouping():
    with pytest.raises(ValueError, match=r"\(B, 8, 3\)"):
        check_trajectories(np.zeros((2, 8)))
    bad = np.zeros((3, 8, 3))
    bad[2, 0, 1] = np.inf
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        check_trajectories(bad)
    with pytest.raises(ValueError, match="2 tokens for 3"):
        check_trajectories(np.zeros((3, 8, 3)), ["a", "b"])
    groups = group_rows_by_token(["b", "a", "b", "c"])
    assert list(groups) == ["b", "a", "c"] and groups["b"].tolist() == [0, 2]


class Constant:
    """A reward model that gives every trajectory the same value."""

    name = "constant"

    def __init__(self, value: float = 0.5) -> None:
        self.value = value

    def predict(self, observations, trajectories, tokens):
        n = len(trajectories)
        return RewardOutput(_subscores(self.value, n), np.full(n, self.value), np.full(n, self.value), None)


def test_registry_accepts_factories_and_entry_points_and_rejects_bad_ones():
    register_reward_model("test-constant", Constant, overwrite=True)
    assert make_reward_model("test-constant", value=0.25).value == 0.25
    register_reward_model("test-entry-point", "tests.test_rewards:Constant", overwrite=True)
    assert make_reward_model("test-entry-point").predict({}, np.zeros((2, 8, 3)), ["a", "b"]).reward.tolist() == [0.5] * 2
    register_reward_model("test-not-a-model", "tests.test_rewards:_subscores", overwrite=True)
    with pytest.raises(TypeError, match="predict"):
        make_reward_model("test-not-a-model")
    with pytest.raises(ValueError, match="module:attr"):
        register_reward_model("test-bad", "no_colon_here")
    with pytest.raises(ValueError, match="already registered"):
        register_reward_model("epdms", Constant)
    with pytest.raises(TypeError, match="predict"):
        make_reward_model(object())


def test_irlvla_env_does_not_import_reward_models():
    code = "import sys, irlvla_env.rewards as r; assert 'reward_models' not in sys.modules; print(sorted(r._REGISTRY))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for name in ("epdms", "rwm", "rwm-irl-only", "rwm-supervised-only", "rwm-no-camera"):
        assert f"'{name}'" in done.stdout


def test_epdms_reward_without_cache_or_loader_says_what_to_do(tmp_path):
    reward = EPDMSReward(metric_cache_root=tmp_path)
    with pytest.raises(KeyError, match="loader="):
        reward.predict({}, np.zeros((1, 8, 3)), ["missing-token"])


# ------------------------------------------------------------------------------- on the synthetic data set


@pytest.fixture(scope="module")
def labelling_setup(synthetic_root, navtest_loader, tmp_path_factory):
    from reward_models.candidates import CandidateConfig, build_vocabulary, human_futures
    from reward_models.labelling import LabellingConfig

    vocabulary = build_vocabulary(human_futures(navtest_loader, navtest_loader.tokens[:12]), size=8)
    config = LabellingConfig(
        split="navtest", data_root=str(synthetic_root), maps_root=str(synthetic_root / "maps"), max_scenes=3,
        shard_size=2, candidates=CandidateConfig(num_vocabulary=4, num_perturbations=7),
        metric_cache_root=str(tmp_path_factory.mktemp("metric_cache")),
    )
    return config, vocabulary


def test_labelling_is_deterministic_resumable_and_guarded(labelling_setup, tmp_path):
    from dataclasses import replace

    from reward_models.labelling import LabelledScenes, label_split

    config, vocabulary = labelling_setup
    first = LabelledScenes.load(label_split(tmp_path / "a", config, vocabulary))
    assert len(first) == 3 and first.candidates.shape == (3, 12, 8, 3) and first.labels.shape == (3, 12, 9)
    assert first.observations["camera"].shape == (3, 64, 256, 3) and first.observations["camera"].dtype == np.uint8
    assert np.all((first.epdms >= 0) & (first.epdms <= 1))
    assert np.isnan(first.labels[..., SUBSCORE_NAMES.index("EC")]).all()  # one-stage: no EC
    np.testing.assert_allclose(first.candidates[:, 0], [
        navtest_scene_future(config, t) for t in first.tokens], atol=1e-5)

    (tmp_path / "a" / "shard_00001.npz").unlink()  # a crash before the last shard
    again = LabelledScenes.load(label_split(tmp_path / "a", config, vocabulary))
    for name in ("candidates", "labels", "epdms"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    np.testing.assert_array_equal(first.observations["lidar_bev"], again.observations["lidar_bev"])

    with pytest.raises(ValueError, match="other settings"):
        label_split(tmp_path / "a", replace(config, candidates=replace(config.candidates, seed=1)), vocabulary)


def navtest_scene_future(config, token):
    from irlvla_env.navsim.loader import load_split

    loader = load_split("navtest", config.data_root, maps_root=config.maps_root)
    return loader.get_scene_from_token(str(token)).get_future_trajectory(8).poses


def test_epdms_reward_matches_the_scorer_and_builds_missing_caches(labelling_setup, navtest_loader, tmp_path):
    from irlvla_env.scoring.epdms import score_trajectories
    from irlvla_env.scoring.metric_cache import build_metric_cache

    tokens = navtest_loader.tokens[:2]
    reward = EPDMSReward(metric_cache_root=tmp_path / "caches", loader=navtest_loader)
    rng = np.random.default_rng(0)
    futures = [navtest_loader.get_scene_from_token(t).get_future_trajectory(8).poses for t in tokens]
    trajectories = np.stack([futures[0], futures[1], futures[0] + rng.normal(0, 1.0, (8, 3)) * [1, 1, 0]])
    rows = [tokens[0], tokens[1], tokens[0]]
    out = reward.predict({}, trajectories, rows)
    assert out.uncertainty is None and out.epdms.shape == (3,)
    direct = score_trajectories(build_metric_cache(navtest_loader.get_scene_from_token(tokens[0])), trajectories[[0, 2]])
    np.testing.assert_allclose(out.epdms[[0, 2]], direct.score)
    np.testing.assert_allclose(out.subscores["NC"][[0, 2]], direct.columns["no_at_fault_collisions"])
    np.testing.assert_allclose(out.reward, out.epdms)
    from_disk = EPDMSReward(metric_cache_root=tmp_path / "caches")  # no loader: caches were stored
    np.testing.assert_allclose(from_disk.predict({}, trajectories, rows).epdms, out.epdms)
