"""Agents: the navsim interface, the baselines, checkpoints, imitation training and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from agents.abstract_agent import AbstractAgent
from agents.baselines import EgoStatusMLPAgent, TransfuserAgent
from agents.baselines.transfuser import hungarian_agent_loss
from agents.evaluate import evaluate_agents, parse_agent_specs
from agents.registry import make_agent
from agents.training.cache import FeatureCache
from agents.training.config import ILConfig
from agents.training.il import train
from irlvla_env.navsim.dataclasses import (
    Annotations,
    Cameras,
    EgoStatus,
    Frame,
    Lidar,
    Scene,
    SceneMetadata,
    SensorConfig,
    Trajectory,
)
from irlvla_env.navsim.loader import load_split

TINY_TRANSFUSER = {
    "channels": (8, 16),
    "d_model": 32,
    "num_heads": 2,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "image_tokens": (1, 4),
    "lidar_tokens": (2, 2),
    "num_agent_queries": 4,
    "bev_size": (8, 16),
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_scene(token: str, speed: float, yaw_rate: float, command: int, num_frames: int = 14) -> Scene:
    """A scene without map or sensors: the ego drives an arc at `speed` m/s turning at `yaw_rate` rad/s."""
    dt = 0.5
    heading = yaw_rate * dt * np.arange(num_frames)
    step = np.stack([np.cos(heading), np.sin(heading)], -1) * speed * dt
    xy = np.cumsum(step, axis=0) + np.array([500.0, 200.0])
    one_hot = np.eye(4, dtype=np.int64)[command]
    empty = Annotations(np.zeros((0, 7)), [], np.zeros((0, 3)), [], [])
    frames = [
        Frame(
            token=f"{token}-{i}",
            timestamp=int(i * dt * 1e6),
            roadblock_ids=["rb"],
            traffic_lights=[],
            annotations=empty,
            ego_status=EgoStatus(np.array([*xy[i], heading[i]]), [speed, 0.0], [0.0, speed * yaw_rate], one_hot, True),
            lidar=Lidar(),
            cameras=Cameras(),
        )
        for i in range(num_frames)
    ]
    metadata = SceneMetadata("log", token, "us-pa-pittsburgh-hazelwood", frames[3].token, 4, num_frames - 4)
    return Scene(metadata, None, frames)


@pytest.fixture
def scenes() -> list[Scene]:
    rng = np.random.default_rng(0)
    return [
        make_scene(f"s{i}", speed=float(rng.uniform(2, 12)), yaw_rate=float(rng.uniform(-0.2, 0.2)), command=i % 4)
        for i in range(6)
    ]


def navtest(root, agent: AbstractAgent | None, max_scenes: int):
    """The tiny synthetic navtest split with the sensors `agent` asks for (none without an agent)."""
    sensors = agent.get_sensor_config() if agent is not None else SensorConfig.build_no_sensors()
    return load_split("navtest", root, sensors, root / "maps", max_scenes=max_scenes)


def tiny_transfuser_batch(batch: int = 4, queries: int = 4) -> tuple[dict, dict]:
    generator = torch.Generator().manual_seed(0)
    features = {
        "camera": torch.rand(batch, 3, 32, 128, generator=generator),
        "lidar_bev": torch.rand(batch, 2, 32, 32, generator=generator),
        "ego_status": torch.randn(batch, 8, generator=generator),
    }
    labels = torch.zeros(batch, queries, dtype=torch.bool)
    labels[:, :2] = True
    targets = {
        "trajectory": torch.cumsum(torch.rand(batch, 8, 3, generator=generator), dim=1),
        "agent_states": torch.randn(batch, queries, 5, generator=generator),
        "agent_labels": labels,
        "bev_semantic_map": torch.randint(0, 7, (batch, 8, 16), generator=generator),
    }
    return features, targets


def batch_of(agent: AbstractAgent, scenes: list[Scene]) -> tuple[dict, dict]:
    features, targets = {}, {}
    for builder in agent.get_feature_builders():
        items = [builder.compute_features(scene.get_agent_input()) for scene in scenes]
        features |= {key: torch.stack([item[key] for item in items]) for key in items[0]}
    for builder in agent.get_target_builders():
        items = [builder.compute_targets(scene) for scene in scenes]
        targets |= {key: torch.stack([item[key] for item in items]) for key in items[0]}
    return features, targets


def overfit(agent: AbstractAgent, features: dict, targets: dict, steps: int, lr: float = 1e-3) -> tuple[float, float]:
    """First and last loss of `steps` full-batch AdamW steps."""
    optimizer = torch.optim.AdamW(agent.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = agent.compute_loss(features, targets, agent(features))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


# -- baselines ------------------------------------------------------------------------------------------------------


def test_constant_velocity_drives_straight_at_current_speed(scenes):
    agent = make_agent("constant_velocity")
    scene = scenes[0]
    trajectory = agent.compute_trajectory(scene.get_agent_input())
    speed = np.linalg.norm(scene.get_agent_input().ego_statuses[-1].ego_velocity)
    assert isinstance(trajectory, Trajectory)
    np.testing.assert_allclose(trajectory.poses[:, 0], speed * 0.5 * np.arange(1, 9), rtol=1e-5)
    assert np.all(trajectory.poses[:, 1:] == 0)


def test_human_replays_logged_future_and_needs_the_scene(scenes):
    agent = make_agent("human")
    assert agent.requires_scene
    trajectory = agent.compute_trajectory(scenes[1].get_agent_input(), scenes[1])
    np.testing.assert_allclose(trajectory.poses, scenes[1].get_future_trajectory(8).poses, atol=1e-5)
    with pytest.raises(ValueError, match="needs the scene"):
        agent.compute_trajectory(scenes[1].get_agent_input())


def test_ego_status_mlp_shapes_and_overfits(scenes):
    torch.manual_seed(0)
    agent = EgoStatusMLPAgent(hidden_layer_dim=64)
    features, targets = batch_of(agent, scenes)
    assert features["ego_status"].shape == (6, 8) and targets["trajectory"].shape == (6, 8, 3)
    assert agent(features)["trajectory"].shape == (6, 8, 3)
    first, last = overfit(agent, features, targets, steps=300, lr=3e-3)
    assert last < 0.1 * first and last < 0.3  # L1 in metres on six memorised scenes


def test_transfuser_shapes_and_loss_terms():
    agent = TransfuserAgent(**TINY_TRANSFUSER)
    features, targets = tiny_transfuser_batch()
    predictions = agent(features)
    assert predictions["trajectory"].shape == (4, 8, 3)
    assert predictions["agent_states"].shape == (4, 4, 5) and predictions["agent_logits"].shape == (4, 4)
    assert predictions["bev_semantic_map"].shape == (4, 7, 8, 16)
    assert predictions["trajectory"][..., 2].abs().max() <= np.pi
    terms = agent.compute_loss(features, targets, predictions)
    assert set(terms) == {"loss", "trajectory_l1", "agent_class", "agent_box", "bev"}
    assert torch.isfinite(terms["loss"])


def test_transfuser_overfits_a_handful_of_scenes():
    torch.manual_seed(0)
    agent = TransfuserAgent(**TINY_TRANSFUSER)
    features, targets = tiny_transfuser_batch()
    first_terms = agent.compute_loss(features, targets, agent(features))
    first, last = overfit(agent, features, targets, steps=120, lr=2e-3)
    last_terms = agent.compute_loss(features, targets, agent(features))
    assert last < 0.5 * first
    assert last_terms["trajectory_l1"] < 0.3 * first_terms["trajectory_l1"]


def test_hungarian_matching_ignores_query_order():
    states = torch.randn(2, 4, 5)
    labels = torch.tensor([[True, True, False, False], [True, False, False, False]])
    logits = torch.where(labels, 20.0, -20.0)
    permutation = torch.tensor([2, 0, 3, 1])
    class_loss, box_loss = hungarian_agent_loss(states[:, permutation], logits[:, permutation], states, labels)
    assert box_loss.item() < 1e-5 and class_loss.item() < 1e-5
    _, shifted = hungarian_agent_loss(states + 1.0, logits, states, labels)
    assert shifted.item() == pytest.approx(5.0, rel=1e-4)  # |1| on each of the 5 box values


# -- checkpoints ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"), [("ego_status_mlp", {"hidden_layer_dim": 32}), ("transfuser", TINY_TRANSFUSER)]
)
def test_save_and_load_round_trip(tmp_path, name, kwargs):
    agent = make_agent(name, **kwargs)
    agent.save_pretrained(tmp_path / "model")
    loaded = make_agent(name, checkpoint=tmp_path)  # a run folder resolves to its model/
    assert json.loads((tmp_path / "model" / "config.json").read_text())["agent"] == name
    for key, value in agent.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_checkpoint_mismatch_is_a_clear_error(tmp_path):
    EgoStatusMLPAgent(hidden_layer_dim=16).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not match"):
        make_agent("ego_status_mlp", checkpoint=tmp_path, hidden_layer_dim=32)
    with pytest.raises(ValueError, match="does not fit TransfuserAgent"):
        make_agent("transfuser", checkpoint=tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        make_agent("ego_status_mlp", checkpoint=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no parameters"):
        make_agent("constant_velocity", checkpoint=tmp_path)
    with pytest.raises(ValueError, match="unknown agent"):
        make_agent("nope")


# -- on the synthetic data set ------------------------------------------------------------------------------------


def test_every_agent_plans_a_valid_trajectory_from_sensors(synthetic_root):
    for agent in (
        make_agent("constant_velocity"),
        make_agent("ego_status_mlp", hidden_layer_dim=16),
        make_agent("human"),
        make_agent("transfuser", **TINY_TRANSFUSER),
    ):
        loader = navtest(synthetic_root, agent, max_scenes=1)
        scene = loader.get_scene_from_token(loader.tokens[0])
        trajectory = agent.compute_trajectory(loader.get_agent_input_from_token(loader.tokens[0]), scene)
        assert isinstance(trajectory, Trajectory) and trajectory.poses.shape == (8, 3), agent.name()
        assert np.all(np.isfinite(trajectory.poses))


def test_missing_sensor_is_a_clear_error(synthetic_root):
    agent = make_agent("transfuser", **TINY_TRANSFUSER)
    loader = navtest(synthetic_root, None, max_scenes=1)  # no sensors loaded
    with pytest.raises(ValueError, match="cam_l0 at history index 3"):
        agent.compute_trajectory(loader.get_agent_input_from_token(loader.tokens[0]))


def test_transfuser_targets_from_a_scene(synthetic_root):
    agent = make_agent("transfuser", **TINY_TRANSFUSER)
    loader = navtest(synthetic_root, agent, max_scenes=2)
    scenes = [loader.get_scene_from_token(token) for token in loader.tokens]
    features, targets = batch_of(agent, scenes)
    assert features["camera"].dtype == torch.float32 and 0 <= features["camera"].min() <= features["camera"].max() <= 1
    assert targets["bev_semantic_map"].shape == (2, 8, 16) and targets["agent_states"].shape == (2, 4, 5)
    assert targets["bev_semantic_map"].max() > 0  # the road is in view
    assert torch.isfinite(agent.compute_loss(features, targets, agent(features))["loss"])


def test_il_training_learns_validates_and_resumes(synthetic_root, tmp_path):
    config = ILConfig(
        agent="ego_status_mlp",
        agent_kwargs={"hidden_layer_dim": 32},
        data_root=str(synthetic_root),
        run_dir=str(tmp_path / "run"),
        cache_dir=str(tmp_path / "cache"),
        epochs=2,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        progress=False,
    )
    first = train(config)
    assert first["epochs"] == 2 and np.isfinite(first["val_l2"]) and first["val_l2_final"] >= first["val_l2"] * 0.5
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()
    assert any((tmp_path / "run" / "tb").iterdir())
    resumed = train(ILConfig(**{**config.to_dict(), "epochs": 6}))
    assert resumed["steps"] == 3 * first["steps"]  # continued from step `first["steps"]`, not from zero
    assert resumed["val_l2"] < first["val_l2"]
    agent = make_agent("ego_status_mlp", checkpoint=tmp_path / "run")
    assert isinstance(agent, EgoStatusMLPAgent)


def test_real_preset_sizes_each_agent_and_keeps_overrides():
    vla = ILConfig.preset("real", agent="vla")
    assert vla.agent_kwargs == {"preset": "real"} and vla.batch_size == 32  # batch 64 does not fit one GPU
    assert ILConfig.preset("real", agent="vla", batch_size=8).batch_size == 8
    transfuser = ILConfig.preset("real", agent="transfuser")
    assert transfuser.batch_size == 64 and transfuser.agent_kwargs["d_model"] == 256
    assert ILConfig.preset("cpu", agent="vla").agent_kwargs == {} and ILConfig.preset("cpu").batch_size == 32


def test_empty_split_is_a_clear_error(tmp_path):
    cache = FeatureCache(tmp_path / "cache", [], [])
    with pytest.raises(ValueError, match="empty"):
        cache.build(None, tokens=[])
    (tmp_path / "data" / "navsim_logs" / "trainval").mkdir(parents=True)  # a navtrain split without logs
    config = ILConfig(data_root=str(tmp_path / "data"), run_dir=str(tmp_path / "run"), progress=False)
    with pytest.raises(ValueError, match="has no scenes"):
        train(config)


def test_eval_scores_agents_and_writes_the_table(synthetic_root, tmp_path):
    model = tmp_path / "mlp"
    EgoStatusMLPAgent(hidden_layer_dim=16).save_pretrained(model)
    specs = parse_agent_specs(f"constant_velocity, human, ego_status_mlp={model}")
    summary = evaluate_agents(specs, "navtest", max_scenes=2, data_root=synthetic_root, run_dir=tmp_path / "eval",
                              metric_cache=tmp_path / "metric_cache")  # fmt: skip
    assert list(summary.index) == ["constant_velocity", "human", "ego_status_mlp"]
    assert list(summary.columns) == ["NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC", "EC", "EPDMS"]
    assert summary.to_numpy().min() >= 0 and summary.to_numpy().max() <= 1
    assert summary.loc["human", "DAC"] == 1.0  # the logged drive stays on the road
    written = pd.read_csv(tmp_path / "eval" / "summary.csv", index_col="agent")
    np.testing.assert_allclose(written.to_numpy(), summary.to_numpy())
    assert "| human |" in (tmp_path / "eval" / "summary.md").read_text()
    assert len(pd.read_csv(tmp_path / "eval" / "human.csv")) == 3  # two scenes and the average row
    with pytest.raises(ValueError, match="unknown agent"):
        parse_agent_specs("constant_velocity,nope")
