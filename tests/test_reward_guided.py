"""The RWM-guided VLA: its mode choice, its checkpoint, what it refuses, and planning from sensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.registry import make_agent
from agents.pipeline import PipelineConfig
from agents.reward_guided import DEFAULT_REWARD_WEIGHT, RewardGuidedAgent
from agents.vla import VLAAgent
from irlvla_env.navsim.loader import load_split
from irlvla_env.observations.builder import observation_space
from irlvla_env.rewards import EPDMSReward, RewardOutput
from reward_models.model import RWMRewardModel
from tests.test_ppo import TINY_VLA
from tests.test_rwm import tiny_model

class EndpointReward:
    """Rewards a plan by how far left it ends (+y), so the best mode is known without a trained model."""

    name = "endpoint"

    def predict(self, observations, trajectories, tokens) -> RewardOutput:
        reward = np.asarray(trajectories)[:, -1, 1].astype(np.float64)
        nan = np.full(len(reward), np.nan)
        subscores = {k: nan for k in ("NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC", "EC")}
        return RewardOutput(subscores=subscores, epdms=reward, reward=reward)


def tiny_vla() -> VLAAgent:
    torch.manual_seed(0)
    return VLAAgent(**{**TINY_VLA, "num_anchors": 6}).eval()


def tiny_rwm(agent: VLAAgent) -> RWMRewardModel:
    """A tiny RWM that reads the VLA's observation shapes."""
    shape = (agent.config.camera_height, agent.config.camera_width)
    return RWMRewardModel(tiny_model(camera_shape=shape, lidar_bins=agent.config.lidar_bev_size))


def one_observation(agent: VLAAgent, seed: int = 0) -> dict:
    space = observation_space(agent.observation_config)
    space.seed(seed)
    return space.sample()


def test_weight_zero_keeps_the_planners_choice_and_a_large_weight_follows_the_reward():
    agent = tiny_vla()
    observation = one_observation(agent)
    own, scores = RewardGuidedAgent(agent, EndpointReward(), reward_weight=0.0).choose(observation)
    with torch.no_grad():
        out = agent(agent.observation_features({k: np.asarray(v)[None] for k, v in observation.items()}))
    torch.testing.assert_close(torch.as_tensor(own), out["trajectory"][0].float())  # the VLA's executed plan
    modes = out["modes"][0].float().numpy()
    guided, scores = RewardGuidedAgent(agent, EndpointReward(), reward_weight=1e6).choose(observation)
    assert int(np.argmax(modes[:, -1, 1])) != int(np.argmax(scores["confidences"]))  # the test can tell them apart
    np.testing.assert_allclose(guided, modes[np.argmax(modes[:, -1, 1])])
    np.testing.assert_allclose(scores["score"], scores["confidences"] + 1e6 * scores["reward"])


def test_checkpoint_round_trip_through_the_registry(tmp_path):
    agent = tiny_vla()
    guided = RewardGuidedAgent(agent, tiny_rwm(agent), reward_weight=7.0)
    guided.save_pretrained(tmp_path / "guided")
    loaded = make_agent("vla_reward_guided", checkpoint=tmp_path / "guided")
    assert isinstance(loaded, RewardGuidedAgent) and loaded.reward_weight == 7.0
    observation = one_observation(agent, seed=3)
    (plan, scores), (plan2, scores2) = guided.choose(observation), loaded.choose(observation)
    np.testing.assert_allclose(plan2, plan, atol=1e-5)
    np.testing.assert_allclose(scores2["reward"], scores["reward"], atol=1e-5)
    assert make_agent("vla_reward_guided", checkpoint=tmp_path / "guided", reward_weight=0.0).reward_weight == 0.0
    with pytest.raises(ValueError, match="only reward_weight"):
        make_agent("vla_reward_guided", checkpoint=tmp_path / "guided", num_anchors=3)
    (tmp_path / "guided" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="guided/config.json is not valid JSON"):
        make_agent("vla_reward_guided", checkpoint=tmp_path / "guided")
    agent.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="holds agent 'vla'"):
        RewardGuidedAgent.from_pretrained(tmp_path / "plain")


def test_the_pipeline_scores_the_guided_rows_with_the_agents_default_weight():
    assert PipelineConfig().guided_reward_weight == DEFAULT_REWARD_WEIGHT


def test_privileged_scorer_and_bad_weights_are_refused():
    agent = tiny_vla()
    with pytest.raises(ValueError, match="privileged"):
        RewardGuidedAgent(agent, EPDMSReward())
    for weight in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="reward_weight"):
            RewardGuidedAgent(agent, EndpointReward(), reward_weight=weight)


def test_plans_from_sensors_on_the_synthetic_world(synthetic_root):
    agent = tiny_vla()
    guided = RewardGuidedAgent(agent, tiny_rwm(agent))
    loader = load_split("navtest", synthetic_root, guided.get_sensor_config(), synthetic_root / "maps")
    token = loader.tokens[0]
    trajectory = guided.compute_trajectory(loader.get_agent_input_from_token(token))
    assert trajectory.poses.shape == (8, 3) and np.all(np.isfinite(trajectory.poses))
    with torch.no_grad():
        features = {}
        for builder in agent.get_feature_builders():
            features.update(builder.compute_features(loader.get_agent_input_from_token(token)))
        modes = agent({k: v[None] for k, v in features.items()})["modes"][0].float().numpy()
    assert np.min(np.abs(modes - trajectory.poses).reshape(len(modes), -1).max(-1)) < 1e-4  # one of its own modes


def test_guide_command_writes_a_checkpoint_that_eval_scores(synthetic_root, tmp_path):
    from agents.evaluate import evaluate_agents
    from irlvla_env.cli import main as cli_main

    agent = tiny_vla()
    agent.save_pretrained(tmp_path / "vla")
    tiny_rwm(agent).model.save_pretrained(tmp_path / "rwm")
    assert cli_main(["guide", "--vla", str(tmp_path / "vla"), "--reward-model", str(tmp_path / "rwm"),
                     "--weight", "5", "--out", str(tmp_path / "guided")]) == 0
    assert make_agent("vla_reward_guided", checkpoint=tmp_path / "guided").reward_weight == 5.0
    table = evaluate_agents([("vla_reward_guided", tmp_path / "guided")], max_scenes=2, data_root=synthetic_root,
                            run_dir=tmp_path / "eval", metric_cache=tmp_path / "cache")
    assert 0.0 <= table.loc["vla_reward_guided", "EPDMS"] <= 1.0
    with pytest.raises(FileNotFoundError, match="irlvla guide"):  # nothing to fall back on: it is not trained
        evaluate_agents([("vla_reward_guided", None)], max_scenes=2, data_root=synthetic_root, run_dir=tmp_path / "e2")
