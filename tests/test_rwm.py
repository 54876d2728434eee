"""Reward World Model: candidates, model round trips, the IRL objective, training, registry, evaluation metrics.

Most tests run on a tiny hand-built labelled set whose labels follow simple rules of the trajectory and the scene's
command, so they are fast and do not depend on the data or scorer layers; `test_rewards.py` covers the real scorer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from irlvla_env.rewards import SUBSCORE_NAMES, RewardModel, compose_epdms, make_reward_model
from reward_models.candidates import (
    CandidateConfig,
    CandidateGenerator,
    Source,
    build_vocabulary,
    headings_from_positions,
    load_vocabulary,
    perturb_demonstration,
    save_vocabulary,
)
from reward_models.evaluate import auroc, evaluate_reward_model, fidelity_metrics, selection_metrics
from reward_models.irl import RWMLossConfig, max_entropy_irl_loss, rwm_loss
from reward_models.labelling import LabelledScenes
from reward_models.model import RewardWorldModel, RWMConfig, RWMRewardModel, observation_shapes
from reward_models.train import RWMTrainConfig, predict_scenes, train_rwm

TINY = dict(camera_shape=(16, 32), camera_downsample=1, lidar_bins=16, width=16, trunk_width=32, head_width=16, attention_heads=2,
            ensemble_size=2)


def straight(speed: float, curvature: float = 0.0) -> np.ndarray:
    t = 0.5 * np.arange(1, 9)
    x = speed * t
    y = curvature * x**2
    return np.stack([x, y, np.arctan2(2 * curvature * x, 1.0)], axis=-1).astype(np.float32)


def tiny_scenes(num_scenes: int = 12, seed: int = 0) -> LabelledScenes:
    """Scenes whose labels follow rules a model can learn: leaving a 3 m corridor breaks DAC, ending far
    ahead of a blocked road (command 'left' marks it) breaks NC, progress is distance travelled."""
    rng = np.random.default_rng(seed)
    vocabulary = build_vocabulary(np.stack([straight(rng.uniform(2, 12), rng.uniform(-0.03, 0.03)) for _ in range(64)]), 16)
    generator = CandidateGenerator(vocabulary, CandidateConfig(num_vocabulary=8, num_perturbations=7, seed=seed))
    tokens, candidates, sources, labels, epdms = [], [], [], [], []
    commands = np.zeros((num_scenes, 4), np.float32)
    for s in range(num_scenes):
        token = f"scene{s:03d}"
        blocked = s % 2 == 0
        demo = straight(4.0 if blocked else rng.uniform(6, 9))
        c = generator.generate(token, demo)
        xy = c.trajectories[:, :, :2]
        dac = (np.abs(xy[:, :, 1]).max(1) < 3.0).astype(np.float32)
        nc = np.where(blocked & (xy[:, -1, 0] > 22.0), 0.0, 1.0).astype(np.float32)
        ep = np.clip(xy[:, -1, 0] / max(xy[:, -1, 0].max(), 1e-3), 0, 1).astype(np.float32)
        ones = np.ones_like(dac)
        subscores = {"NC": nc, "DAC": dac, "DDC": ones, "TLC": ones, "EP": ep, "TTC": nc, "LK": dac, "HC": ones,
                     "EC": np.full_like(dac, np.nan)}
        tokens.append(token)
        candidates.append(c.trajectories)
        sources.append(c.sources)
        labels.append(np.stack([subscores[n] for n in SUBSCORE_NAMES], -1))
        epdms.append(compose_epdms(subscores, ec_available=False).astype(np.float32))
        commands[s, 0 if blocked else 1] = 1.0
    observations = {
        "camera": rng.integers(0, 255, (num_scenes, 16, 32, 3), dtype=np.uint8),
        "lidar_bev": rng.random((num_scenes, 2, 16, 16), dtype=np.float32),
        "ego_status": rng.normal(size=(num_scenes, 4, 7)).astype(np.float32),
        "command": commands,
    }
    return LabelledScenes(np.asarray(tokens), np.stack(candidates), np.stack(sources), np.stack(labels),
                          np.stack(epdms), observations)


@pytest.fixture()
def exp_root(tmp_path, monkeypatch):
    monkeypatch.setenv("NAVSIM_EXP_ROOT", str(tmp_path / "exp"))
    return tmp_path / "exp"


def tiny_model(seed: int = 0, **overrides) -> RewardWorldModel:
    torch.manual_seed(seed)
    return RewardWorldModel(RWMConfig(**{**TINY, **overrides}))


def flat_batch(data: LabelledScenes, scenes=(0, 1)):
    k = data.num_candidates
    rows = np.repeat(np.asarray(scenes), k)
    obs = {key: value[rows] for key, value in data.observations.items()}
    return obs, data.candidates[list(scenes)].reshape(-1, 8, 3), [str(t) for t in data.tokens[rows]]


# ------------------------------------------------------------------------------------------- candidates


def test_candidates_are_deterministic_per_token_and_keep_the_demonstration():
    vocabulary = build_vocabulary(np.stack([straight(v, c) for v in (3, 6, 9) for c in (-0.02, 0, 0.02)] * 4), 6)
    generator = CandidateGenerator(vocabulary, CandidateConfig(num_vocabulary=6, num_perturbations=14, seed=3))
    demo = straight(7.0, 0.01)
    a, b = generator.generate("tok-a", demo), generator.generate("tok-a", demo)
    other = generator.generate("tok-b", demo)
    assert a.trajectories.shape == (21, 8, 3) and a.trajectories.dtype == np.float32
    np.testing.assert_array_equal(a.trajectories, b.trajectories)
    assert not np.array_equal(a.trajectories, other.trajectories)
    np.testing.assert_array_equal(a.trajectories[a.demo_index], demo)
    assert np.bincount(a.sources, minlength=4)[: 3].tolist() == [1, 6, 14]
    assert np.isfinite(a.trajectories).all()


def test_perturbations_cover_every_family_and_stay_finite_for_a_stopped_car():
    rng = np.random.default_rng(0)
    moving = perturb_demonstration(straight(8.0), rng, 14)
    stopped = perturb_demonstration(np.zeros((8, 3), np.float32), rng, 14)
    assert moving.shape == (14, 8, 3) and np.isfinite(stopped).all()
    lateral = np.abs(moving[:, :, 1]).max(1)
    assert lateral.max() > 2.5  # lane changes / offsets leave the lane
    assert moving[5, -1, 0] < straight(8.0)[-1, 0] - 5  # the hard brake stops short


def test_policy_samples_replace_vocabulary_entries():
    vocabulary = np.stack([straight(v) for v in range(1, 9)])
    policy = lambda agent_input: np.stack([straight(5.0, 0.01)] * 3)
    generator = CandidateGenerator(vocabulary, CandidateConfig(num_vocabulary=4, num_perturbations=2, num_policy=2),
                                   policy=policy)
    with_policy = generator.generate("t", straight(6.0), agent_input=object())
    without = generator.generate("t", straight(6.0))
    assert len(with_policy.trajectories) == len(without.trajectories) == 9
    assert (with_policy.sources == Source.POLICY).sum() == 2 and (without.sources == Source.POLICY).sum() == 0
    bad = CandidateGenerator(vocabulary, generator.config, policy=lambda _: np.zeros((2, 8, 2)))
    with pytest.raises(ValueError, match="policy samples"):
        bad.generate("t", straight(6.0), agent_input=object())


def test_vocabulary_is_kmeans_of_futures_and_round_trips(tmp_path):
    futures = np.concatenate([np.stack([straight(3.0)] * 20), np.stack([straight(10.0, 0.02)] * 20)])
    vocabulary = build_vocabulary(futures + np.random.default_rng(0).normal(0, 0.01, futures.shape), size=2)
    ends = sorted(vocabulary[:, -1, 0].round())
    assert ends == [12.0, 40.0]
    path = save_vocabulary(tmp_path / "v" / "vocabulary.npy", vocabulary)
    np.testing.assert_array_equal(load_vocabulary(path), vocabulary)
    np.save(tmp_path / "bad.npy", np.zeros((3, 8, 2)))
    with pytest.raises(ValueError, match="bad.npy"):
        load_vocabulary(tmp_path / "bad.npy")


def test_headings_follow_the_direction_of_travel():
    xy = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 2.0]])
    np.testing.assert_allclose(headings_from_positions(xy), [np.pi / 4, np.pi / 4, np.pi / 2])


# ------------------------------------------------------------------------------------------------ model


def test_scene_is_encoded_once_and_scores_every_candidate():
    data = tiny_scenes(3)
    model = tiny_model().eval()
    obs = {k: torch.as_tensor(v) for k, v in data.observations.items()}
    with torch.no_grad():
        ctx = model.encode_scene(obs)
        joint = model.score(ctx, torch.as_tensor(data.candidates)).logits
        single = model.score(ctx.select(torch.tensor([1])), torch.as_tensor(data.candidates[1:2, :5])).logits
    assert joint.shape == (3, data.num_candidates, 2, 14)
    torch.testing.assert_close(joint[1:2, :5], single, rtol=1e-4, atol=1e-5)


def test_save_load_round_trip_and_clear_errors(tmp_path):
    data = tiny_scenes(2)
    model = tiny_model()
    folder = model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((folder / "config.json").read_text())["reward_model_type"] == "rwm"
    obs, trajectories, tokens = flat_batch(data)
    before = RWMRewardModel(model).predict(obs, trajectories, tokens)
    after = RWMRewardModel.from_pretrained(folder).predict(obs, trajectories, tokens)
    np.testing.assert_allclose(before.epdms, after.epdms, rtol=1e-6)

    config = json.loads((folder / "config.json").read_text())
    config["model"]["width"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="wrong shapes"):
        RewardWorldModel.from_pretrained(folder)
    config["model"] = {**config["model"], "width": 16, "colour": "red"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="colour"):
        RewardWorldModel.from_pretrained(folder)

    broken = tiny_model()
    with torch.no_grad():
        broken.head_b2.fill_(float("nan"))
    nan_folder = broken.save_pretrained(tmp_path / "nan")
    with pytest.raises(ValueError, match="NaN"):
        RewardWorldModel.from_pretrained(nan_folder)
    (nan_folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        RewardWorldModel.from_pretrained(nan_folder)


def test_protocol_output_shapes_and_rows_grouped_by_token():
    data = tiny_scenes(3)
    reward_model = RWMRewardModel(tiny_model())
    assert isinstance(reward_model, RewardModel)
    obs, trajectories, tokens = flat_batch(data, scenes=(0, 1, 2))
    out = reward_model.predict(obs, trajectories, tokens)
    b = len(trajectories)
    assert out.epdms.shape == out.reward.shape == out.uncertainty.shape == (b,)
    assert set(out.subscores) == set(SUBSCORE_NAMES) and all(v.shape == (b,) for v in out.subscores.values())
    assert np.all((out.epdms >= 0) & (out.epdms <= 1)) and np.all(out.uncertainty >= 0)
    assert np.isnan(out.subscores["EC"]).all()  # one-stage model: EC is not predicted
    shuffle = np.random.default_rng(0).permutation(b)
    shuffled = reward_model.predict({k: v[shuffle] for k, v in obs.items()}, trajectories[shuffle],
                                    [tokens[i] for i in shuffle])
    np.testing.assert_allclose(shuffled.epdms, out.epdms[shuffle], rtol=1e-5, atol=1e-6)


def test_bad_inputs_fail_with_clear_errors():
    data = tiny_scenes(1)
    reward_model = RWMRewardModel(tiny_model())
    obs, trajectories, tokens = flat_batch(data, scenes=(0,))
    with pytest.raises(ValueError, match=r"\(B, 8, 3\)"):
        reward_model.predict(obs, trajectories[:, :, :2], tokens)
    nan = trajectories.copy()
    nan[3, 2, 0] = np.nan
    with pytest.raises(ValueError, match="rows \\[3\\]"):
        reward_model.predict(obs, nan, tokens)
    with pytest.raises(ValueError, match="tokens"):
        reward_model.predict(obs, trajectories, tokens[:-1])
    with pytest.raises(KeyError, match="lidar_bev"):
        reward_model.predict({k: v for k, v in obs.items() if k != "lidar_bev"}, trajectories, tokens)
    with pytest.raises(ValueError, match="camera"):
        reward_model.predict({**obs, "camera": obs["camera"][:, :8]}, trajectories, tokens)
    with pytest.raises(ValueError, match="reward_source"):
        RWMConfig(reward_source="vibes")


def test_no_camera_variant_ignores_the_camera():
    data = tiny_scenes(1)
    reward_model = RWMRewardModel(tiny_model(use_camera=False))
    obs, trajectories, tokens = flat_batch(data, scenes=(0,))
    a = reward_model.predict(obs, trajectories, tokens)
    b = reward_model.predict({k: v for k, v in obs.items() if k != "camera"}, trajectories, tokens)
    np.testing.assert_array_equal(a.epdms, b.epdms)


def test_lidar_history_is_read_as_extra_lidar_channels():
    """A model built from observations with past sweeps reads them (its score changes with them), names the key
    when it is missing, and records the count in its config."""
    data = tiny_scenes(1)
    obs, trajectories, tokens = flat_batch(data, scenes=(0,))
    history = np.random.default_rng(1).random((len(tokens), 2, 16, 16), dtype=np.float32)
    shapes = observation_shapes({**obs, "lidar_history": history})
    assert shapes["lidar_history"] == 2 and observation_shapes(obs)["lidar_history"] == 0
    for head in ("attention", "cost_volume"):
        reward_model = RWMRewardModel(tiny_model(lidar_history=2, candidate_head=head))
        a = reward_model.predict({**obs, "lidar_history": history}, trajectories, tokens)
        b = reward_model.predict({**obs, "lidar_history": np.zeros_like(history)}, trajectories, tokens)
        assert not np.allclose(a.epdms, b.epdms)
        with pytest.raises(KeyError, match=r"lidar_history.*ObservationConfig\(lidar_history=2\)"):
            reward_model.predict(obs, trajectories, tokens)
        with pytest.raises(ValueError, match="lidar_history"):
            reward_model.predict({**obs, "lidar_history": history[:, :1]}, trajectories, tokens)


# -------------------------------------------------------------------------------------------- objective


def test_max_entropy_irl_loss_prefers_the_demonstration():
    reward = torch.tensor([[[3.0], [0.0], [0.0]], [[0.0], [3.0], [0.0]]])
    loss = max_entropy_irl_loss(reward)
    assert loss.shape == (2, 1) and loss[0, 0] < loss[1, 0]
    torch.testing.assert_close(loss[0, 0], -torch.log_softmax(torch.tensor([3.0, 0.0, 0.0]), 0)[0])


def test_loss_parts_switch_off_and_reject_mismatched_labels():
    data = tiny_scenes(2)
    model = tiny_model()
    obs = {k: torch.as_tensor(v) for k, v in data.observations.items()}
    prediction = model(obs, torch.as_tensor(data.candidates))
    labels, epdms = torch.as_tensor(data.labels), torch.as_tensor(data.epdms)
    _, all_parts = rwm_loss(prediction, labels, epdms, RWMLossConfig())
    assert {"NC", "DAC", "EP", "supervised", "epdms_mse", "ranking", "irl"} <= set(all_parts)
    assert "EC" not in all_parts  # one-stage labels: EC is NaN and not trained
    _, irl_only = rwm_loss(prediction, labels, epdms,
                           RWMLossConfig(supervised_weight=0, epdms_weight=0, ranking_weight=0))
    assert set(irl_only) == {"irl"}
    with pytest.raises(ValueError, match="do not match"):
        rwm_loss(prediction, labels[:, :3], epdms, RWMLossConfig())
    with pytest.raises(ValueError, match="at least one"):
        RWMLossConfig(irl_weight=0, supervised_weight=0, epdms_weight=0, ranking_weight=0)


def test_training_lowers_the_loss_ranks_the_demo_first_and_publishes_latest(exp_root):
    data = tiny_scenes(12)
    config = RWMTrainConfig(model=RWMConfig(**TINY), epochs=60, batch_scenes=4, candidates_per_step=16, lr=1e-2,
                            val_fraction=0.0, num_threads=1, loss=RWMLossConfig(map_weight=0.0))  # no metric caches
    model = RewardWorldModel(config.model)
    start = rwm_loss(predict_scenes(model, data), torch.as_tensor(data.labels), torch.as_tensor(data.epdms),
                     RWMLossConfig(bootstrap=False))[0]
    best = train_rwm(config, data=data, progress=False)
    trained = RewardWorldModel.from_pretrained(best)
    prediction = predict_scenes(trained, data)
    end = rwm_loss(prediction, torch.as_tensor(data.labels), torch.as_tensor(data.epdms), RWMLossConfig(bootstrap=False))[0]
    assert float(end) < 0.5 * float(start)
    demo_first = (prediction.irl_reward.mean(-1).argmax(1) == 0).float().mean()
    assert float(demo_first) == 1.0
    assert (exp_root / "rwm" / "latest" / "config.json").is_file()
    assert make_reward_model("rwm").name == "rwm"
    state = json.loads((config.run_dir / "checkpoint-last" / "trainer_state.json").read_text())
    assert state["epoch"] == 59

    # resume: a longer schedule continues from the last checkpoint instead of starting over
    longer = RWMTrainConfig(**{**config.__dict__, "epochs": 61})
    train_rwm(longer, data=data, progress=False)
    state = json.loads((config.run_dir / "checkpoint-last" / "trainer_state.json").read_text())
    assert state["epoch"] == 60 and state["step"] == 61 * 3


# ---------------------------------------------------------------------------------------------- registry


def test_registry_resolves_every_name(exp_root, tmp_path):
    for variant in ("rwm", "rwm-irl-only", "rwm-supervised-only", "rwm-no-camera", "rwm-no-lidar", "rwm-map-head",
                    "rwm-mirror", "rwm-large"):
        with pytest.raises(FileNotFoundError, match="irlvla train rwm"):
            make_reward_model(variant)
        tiny_model().save_pretrained(exp_root / variant / "latest")
        resolved = make_reward_model(variant)
        assert isinstance(resolved, RWMRewardModel) and resolved.name == variant
    folder = tiny_model().save_pretrained(tmp_path / "some_checkpoint")
    assert isinstance(make_reward_model(folder), RWMRewardModel)
    assert make_reward_model(str(folder)).config.width == TINY["width"]
    epdms = make_reward_model("epdms", metric_cache_root=tmp_path / "caches")
    assert epdms.name == "epdms" and isinstance(epdms, RewardModel)
    same = RWMRewardModel(tiny_model())
    assert make_reward_model(same) is same
    with pytest.raises(ValueError, match="unknown reward model"):
        make_reward_model("rwm-typo")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"reward_model_type": "teleport"}))
    with pytest.raises(ValueError, match="teleport"):
        make_reward_model(tmp_path / "odd")


# -------------------------------------------------------------------------------------------- evaluation


def test_metrics_on_known_values():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert np.isnan(auroc(np.array([0.1, 0.2]), np.array([1, 1])))
    true = np.array([[0.2, 0.9, 0.5], [1.0, 0.0, 0.3]])
    picks = selection_metrics(np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]), true)
    assert picks["epdms_rwm_pick"] == pytest.approx(0.45) and picks["epdms_best_of_k"] == pytest.approx(0.95)
    assert picks["epdms_human"] == pytest.approx(0.6)
    assert fidelity_metrics(true, true)["pearson"] == pytest.approx(1.0)


def test_evaluation_of_the_rule_based_labels_is_perfect():
    """A reward model that returns the labels themselves must score perfectly: checks the metric plumbing."""
    data = tiny_scenes(4)
    lookup = {(str(t), c.tobytes()): (data.labels[s, k], data.epdms[s, k])
              for s, t in enumerate(data.tokens) for k, c in enumerate(data.candidates[s])}

    class Oracle:
        name = "oracle"

        def predict(self, observations, trajectories, tokens):
            from irlvla_env.rewards import RewardOutput

            rows = [lookup[(t, np.asarray(c, np.float32).tobytes())] for t, c in zip(tokens, trajectories)]
            labels = np.stack([r[0] for r in rows]).astype(np.float64)
            epdms = np.array([r[1] for r in rows], dtype=np.float64)
            return RewardOutput({n: labels[:, i] for i, n in enumerate(SUBSCORE_NAMES)}, epdms, epdms, None)

    metrics, _ = evaluate_reward_model(Oracle(), data)
    assert metrics["pearson"] == pytest.approx(1.0) and metrics["gap_to_best"] == pytest.approx(0.0)
    assert metrics["auroc_DAC"] == pytest.approx(1.0) and metrics["accuracy_NC"] == pytest.approx(1.0)


def test_command_line_has_train_rwm_and_eval_rwm():
    from irlvla_env.cli import build_parser

    parser = build_parser()
    train = parser.parse_args(["train", "rwm", "--variant", "rwm-no-camera", "--epochs", "3", "--max-scenes", "10"])
    assert train.variant == "rwm-no-camera" and train.epochs == 3 and train.max_scenes == 10
    evaluate = parser.parse_args(["eval-rwm", "--reward-model", "rwm-irl-only"])
    assert evaluate.split == "navtest" and evaluate.reward_model == "rwm-irl-only"
    with pytest.raises(ValueError, match="unknown RWM variant"):
        RWMTrainConfig.for_variant("rwm-nonsense")
    assert RWMTrainConfig.for_variant("rwm-map-head").model.map_head
    assert RWMTrainConfig.for_variant("rwm-mirror").mirror_probability == 0.5
    large = RWMTrainConfig.for_variant("rwm-large")
    assert large.model.map_head and large.model.width == 128 and large.mirror_probability == 0.5
    assert RWMTrainConfig.for_variant("rwm-mirror", mirror_probability=0.25).mirror_probability == 0.25  # overrides win
    assert RWMTrainConfig.for_variant("rwm").mirror_probability == 0.0 and not RWMTrainConfig().model.map_head


def forward_camera(columns=(0.0, 32.0)) -> dict:
    """A pinhole looking along ego +x from 1.6 m up (OpenCV axes), 32x16 px, no crop."""
    rotation = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
    return {"intrinsics": [[16.0, 0.0, 16.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]], "rotation": rotation,
            "translation": [0.0, 0.0, 1.6], "crop": [0.0, 0.0, 32.0, 16.0], "columns": list(columns)}


def test_ground_points_project_into_the_strip():
    from reward_models.projection import StripProjector

    projector = StripProjector([forward_camera()], strip_shape=(16, 32))
    grid, visible = projector(torch.tensor([[20.0, 0.0], [20.0, 2.0], [-5.0, 0.0], [1.0, 0.0]]))
    assert visible.tolist() == [True, True, False, False]  # behind, and too close under the lens
    assert grid[0, 0] == pytest.approx(0.0, abs=1e-6) and grid[0, 1] > 0  # centre column, below the horizon
    assert grid[1, 0] < grid[0, 0]  # a point to the left lands left
    model = tiny_model(camera_calibration=[forward_camera()])
    data = tiny_scenes(2)
    out = RWMRewardModel(model).predict(*flat_batch(data))
    assert np.isfinite(out.epdms).all()
