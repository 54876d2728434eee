"""The Gymnasium environments: registration, spaces, checkers, determinism, batching, bad actions, closed loop."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import irlvla_env
from irlvla_env.envs.action import BadActionError
from irlvla_env.envs.navsim_env import NavsimEnv
from irlvla_env.envs.scene_pool import ScenePool
from irlvla_env.envs.vector_env import NavsimVectorEnv
from irlvla_env.envs.wrappers import SB3NavsimVecEnv, make_sb3_env
from irlvla_env.observations import ObservationConfig

MAX_SCENES = 6


@pytest.fixture(autouse=True)
def exp_root(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "env_exp"
    monkeypatch.setenv("NAVSIM_EXP_ROOT", str(root))
    return root


@pytest.fixture(scope="module")
def pool(synthetic_root):
    return ScenePool("navtest", ObservationConfig(), data_root=synthetic_root, max_scenes=MAX_SCENES)


@pytest.fixture(scope="module")
def rwm_checkpoint(tmp_path_factory):
    """An untrained but complete RWM checkpoint, to exercise the checkpoint-path route of the registry."""
    from reward_models.model import RewardWorldModel, RWMConfig

    path = tmp_path_factory.mktemp("rwm")
    RewardWorldModel(RWMConfig()).save_pretrained(path)
    return path


def straight(speed: float) -> np.ndarray:
    t = 0.5 * np.arange(1, 9, dtype=np.float32)
    return np.stack([speed * t, np.zeros(8, np.float32), np.zeros(8, np.float32)], axis=1)


def test_ids_are_registered_and_resolve_by_module_prefix(synthetic_root):
    assert set(irlvla_env.ENV_IDS) <= set(gym.registry)
    env = gym.make("irlvla_env:IRLVLA-NAVSIM-EPDMS-v2", data_root=str(synthetic_root), max_scenes=MAX_SCENES)
    assert isinstance(env.unwrapped, NavsimEnv)
    assert env.unwrapped.config.reward_model == "epdms"


@pytest.mark.parametrize("env_id", sorted(irlvla_env.ENV_IDS))
def test_checkers_pass_for_every_id(env_id, synthetic_root, pool, rwm_checkpoint):
    overrides = {}
    if irlvla_env.ENV_IDS[env_id]["reward_model"] == "rwm":
        overrides["reward_model"] = str(rwm_checkpoint)
    env = NavsimEnv(data_root=str(synthetic_root), scene_pool=pool, **irlvla_env.ENV_IDS[env_id] | overrides)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(make_sb3_env(env), warn=False)


def test_single_step_reports_subscores_and_terminates(synthetic_root, pool):
    env = NavsimEnv(reward_model="epdms", scene_pool=pool, audit_epdms=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    _, reward, terminated, truncated, info = env.step(straight(5.0))
    assert terminated and not truncated
    assert set(info["subscores"]) == {"NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC", "EC"}
    assert 0.0 <= reward <= 1.0 and reward == pytest.approx(info["epdms"])
    assert info["epdms_rule"] == pytest.approx(info["epdms"])  # the audit scores the same action the same way


def test_reset_is_deterministic_under_a_seed(pool):
    env = NavsimEnv(reward_model="epdms", scene_pool=pool)
    tokens = [env.reset(seed=7)[1]["token"] for _ in range(2)]
    draws = [env.reset()[1]["token"] for _ in range(5)]
    env.reset(seed=7)
    assert tokens[0] == tokens[1]
    assert draws == [env.reset()[1]["token"] for _ in range(5)]
    token = pool.tokens[-1]
    obs, info = env.reset(options={"token": token})
    assert info["token"] == token
    np.testing.assert_array_equal(obs["camera"], pool.observation(token)["camera"])


def test_human_plan_scores_above_a_swerve(pool):
    env = NavsimEnv(reward_model="epdms", scene_pool=pool)
    rewards = {}
    for name in ("human", "swerve"):
        total = 0.0
        for token in pool.tokens:
            env.reset(options={"token": token})
            human = pool.loader.get_scene_from_token(token).get_future_trajectory(8).poses
            plan = human if name == "human" else human + np.array([0.0, 12.0, 0.0], np.float32)
            total += env.step(plan)[1]
        rewards[name] = total / len(pool.tokens)
    assert rewards["human"] > rewards["swerve"] + 0.2


def test_vector_env_matches_single_envs(pool):
    venv = NavsimVectorEnv(num_envs=3, reward_model="epdms", scene_pool=pool)
    tokens = pool.tokens[:3]
    obs, _ = venv.reset(options={"tokens": tokens})
    actions = np.stack([straight(s) for s in (0.0, 4.0, 9.0)])
    _, rewards, terminated, _, info = venv.step(actions)
    assert terminated.all()
    single = NavsimEnv(reward_model="epdms", scene_pool=pool)
    for i, token in enumerate(tokens):
        single_obs, _ = single.reset(options={"token": token})
        np.testing.assert_array_equal(single_obs["lidar_bev"], obs["lidar_bev"][i])
        assert single.step(actions[i])[1] == pytest.approx(rewards[i])
        assert info["final_obs"]["camera"][i].shape == single_obs["camera"].shape


def test_vector_env_scores_candidates_of_the_current_scenes_without_stepping(pool):
    venv = NavsimVectorEnv(num_envs=2, reward_model="epdms", scene_pool=pool)
    venv.reset(options={"tokens": pool.tokens[:2]})
    candidates = np.stack([np.stack([straight(s) for s in (0.0, 4.0, 9.0)])] * 2)  # (2 envs, 3 plans, 8, 3)
    output = venv.score_candidates(candidates)
    assert output.reward.shape == (6,)
    with pytest.raises(ValueError, match=r"\(2, M, 8, 3\)"):
        venv.score_candidates(candidates[:1])
    _, rewards, _, _, info = venv.step(candidates[:, 1])  # the scenes have not changed: same scores
    assert list(info["token"]) == list(pool.tokens[:2])
    np.testing.assert_allclose(rewards, output.reward.reshape(2, 3)[:, 1])


def test_sb3_vec_env_adapter_steps(pool):
    venv = SB3NavsimVecEnv(NavsimVectorEnv(num_envs=2, reward_model="epdms", scene_pool=pool))
    obs = venv.reset()
    assert obs["camera"].shape[1] == 3  # channel-first for SB3
    venv.step_async(np.zeros((2, 24), np.float32))
    _, rewards, dones, infos = venv.step_wait()
    assert dones.all() and len(infos) == 2 and "terminal_observation" in infos[0]
    assert np.isfinite(rewards).all()


@pytest.mark.parametrize("bad", [np.full((8, 3), np.nan), np.full((8, 3), np.inf), np.zeros((7, 3)), np.full((8, 3), 1e4)])
def test_bad_actions_raise_or_pay_the_penalty(pool, bad):
    env = NavsimEnv(reward_model="epdms", scene_pool=pool)
    env.reset(seed=0)
    with pytest.raises(BadActionError):
        env.step(bad.astype(np.float32))
    lenient = NavsimEnv(reward_model="epdms", scene_pool=pool, bad_action="penalty", bad_action_penalty=-2.0)
    lenient.reset(seed=0)
    _, reward, terminated, _, info = lenient.step(bad.astype(np.float32))
    assert reward == -2.0 and terminated and info["bad_action"]


def test_missing_rwm_says_how_to_get_one(pool):
    with pytest.raises(Exception, match="irlvla train rwm"):
        NavsimEnv(reward_model="rwm", scene_pool=pool)


def test_unknown_config_key_is_named(pool):
    with pytest.raises(ValueError, match="bogus"):
        NavsimEnv(scene_pool=pool, bogus=1)


def test_closed_loop_episode_reaches_its_end(synthetic_root):
    env = NavsimEnv(reward_model="epdms", mode="closed_loop", horizon=3, data_root=str(synthetic_root), max_scenes=2)
    obs, info = env.reset(seed=0)
    steps, done, reasons = 0, False, []
    while not done:
        human = env.unwrapped._closed_loop.displaced_scene().get_future_trajectory(8).poses
        obs, reward, terminated, truncated, info = env.step(human)
        assert env.observation_space.contains(obs) and np.isfinite(reward)
        steps += 1
        done = terminated or truncated
        reasons.append(info.get("termination"))
    assert 1 <= steps <= 3
    assert reasons[-1] in {"horizon", "end_of_log", "off_road", "collision"}


@pytest.mark.parametrize("mode", ["single", "closed_loop"])
def test_env_observes_what_its_reward_model_reads(synthetic_root, pool, tmp_path, mode):
    """A reward model that reads past LiDAR sweeps extends the env's observation by them (the policy keeps its
    keys); a given scene pool without them is an error that names the field."""
    from reward_models.model import RewardWorldModel, RWMConfig

    RewardWorldModel(RWMConfig(lidar_history=2)).save_pretrained(tmp_path)
    env = NavsimEnv(reward_model=str(tmp_path), mode=mode, horizon=2, data_root=str(synthetic_root), max_scenes=2)
    assert env.config.observation.lidar_history == 2
    obs, _ = env.reset(seed=0)
    assert obs["lidar_history"].shape == (2, 64, 64) and obs["lidar_history"].sum() > 0
    obs, reward, *_ = env.step(straight(5.0))
    assert env.observation_space.contains(obs) and np.isfinite(reward)
    with pytest.raises(ValueError, match="lidar_history"):
        NavsimEnv(reward_model=str(tmp_path), scene_pool=pool)
