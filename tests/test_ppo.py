"""Stage 3 (DPPO fine-tuning of the VLA's diffusion planner): log-probabilities, the PPO update, checkpoints and
resume, the reward-hacking audit, the command line.

The algorithmic tests run on a toy vector env (random scenes, a closed-form reward) so they need no data; the
end-to-end tests run `train_rl` on the tiny synthetic data set with the rule-based EPDMS or an untrained RWM.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from safetensors.torch import load_file

from agents.ppo.algorithm import DiffusionPPO
from agents.ppo.chain_env import ChainActionVecEnv
from agents.ppo.config import RLConfig
from agents.ppo.policy import DiffusionPlannerPolicy
from agents.ppo.vla_core import VLACore, chain_size
from agents.vla.policy import VLAAgent
from irlvla_env.envs.action import trajectory_space
from irlvla_env.envs.wrappers import SB3NavsimVecEnv, to_sb3_observation
from irlvla_env.observations import observation_space

# A VLA a few hundred thousand parameters small, at the env's default observation sizes (64x256 camera, 64² BEV).
TINY_VLA = dict(
    d_model=32, num_heads=2, vlm_hidden_size=32, vlm_layers=1, vlm_heads=2, vlm_kv_heads=1, vlm_intermediate_size=64,
    vision_hidden_size=32, vision_layers=1, vision_heads=2, vision_intermediate_size=64, camera_tiles=2,
    max_prompt_tokens=32, num_semantic_tokens=4, max_agents=4, num_anchors=4, planner_layers=1, bev_downsample=8,
    bev_semantic_height=16, bev_semantic_width=32,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _sb3_log_folder(tmp_path, monkeypatch):
    """SB3 makes a `SB3-<time>` folder in the system temp dir for every `learn` without a logger; keep it here."""
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3"))


@pytest.fixture()
def exp_root(tmp_path, monkeypatch):
    monkeypatch.setenv("NAVSIM_EXP_ROOT", str(tmp_path / "exp"))
    return tmp_path / "exp"


@pytest.fixture()
def data_env(synthetic_root, exp_root, monkeypatch):
    """Point navsim's variables at the tiny data set (the scene pool finds its maps through them)."""
    monkeypatch.setenv("OPENSCENE_DATA_ROOT", str(synthetic_root))
    monkeypatch.setenv("NUPLAN_MAPS_ROOT", str(synthetic_root / "maps"))
    return synthetic_root


def tiny_agent(seed: int = 0, **overrides) -> VLAAgent:
    torch.manual_seed(seed)
    return VLAAgent(**{**TINY_VLA, **overrides})


class ToyVectorEnv(VectorEnv):
    """`NavsimVectorEnv`'s interface over a handful of random scenes; reward = closeness of the plan's end to
    (12 m, 0 m), smooth enough to give an untrained planner a gradient. Single-step episodes with same-step
    autoreset, like the real env."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, agent: VLAAgent, num_envs: int = 4, num_scenes: int = 4, seed: int = 0) -> None:
        self.num_envs = num_envs
        self.single_observation_space = observation_space(agent.observation_config)
        self.single_action_space = trajectory_space()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.single_observation_space.seed(seed)
        self.scenes = [self.single_observation_space.sample() for _ in range(num_scenes)]
        self._rng = np.random.default_rng(seed)
        self._current: list[int] = []

    def _observe(self, indices: list[int]) -> dict[str, np.ndarray]:
        return {key: np.stack([self.scenes[i][key] for i in indices]) for key in self.scenes[0]}

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed if not isinstance(seed, list) else seed[0])
        self._current = list(self._rng.integers(len(self.scenes), size=self.num_envs))
        return self._observe(self._current), {}

    @staticmethod
    def reward(trajectories: np.ndarray) -> np.ndarray:
        return np.exp(-np.hypot(trajectories[..., -1, 0] - 12.0, trajectories[..., -1, 1]) / 20.0)

    def score_candidates(self, candidates: np.ndarray) -> SimpleNamespace:
        return SimpleNamespace(reward=self.reward(np.asarray(candidates)).reshape(-1), uncertainty=None)

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float32)
        reward = self.reward(actions)
        finished = self._observe(self._current)
        info = {"final_obs": finished, "token": np.array([str(i) for i in self._current], dtype=object),
                "epdms": reward.astype(np.float64), "uncertainty": np.full(self.num_envs, np.nan)}
        self._current = list(self._rng.integers(len(self.scenes), size=self.num_envs))
        done = np.ones(self.num_envs, dtype=bool)
        return self._observe(self._current), reward, done, np.zeros(self.num_envs, dtype=bool), info


def toy_model(agent: VLAAgent, bc_coef: float = 0.1, mode_beta: float | None = None, mode_advantage: bool = False,
              **kwargs) -> DiffusionPPO:
    k, m = agent.config.num_inference_steps, agent.config.num_anchors
    candidates = (2 * m if mode_advantage else m) if mode_beta is not None else 0
    env = ChainActionVecEnv(SB3NavsimVecEnv(ToyVectorEnv(agent), flat_actions=False),
                            chain_size(agent.config, noise_free_plans=mode_advantage), num_candidates=candidates)
    core = dict(per_mode=mode_advantage, noise_free_plans=mode_advantage)
    policy_kwargs = dict(core_factory=lambda: VLACore.from_agent(agent, **core),
                         num_decisions=k * (m if mode_advantage else 1) + 1, num_modes=m,
                         frozen_modules=("semantic", "bev", "reference"), min_sampling_std=0.05, min_logprob_std=0.05)
    if mode_beta is not None:
        policy_kwargs["mode_lr"] = 1e-2
    kwargs.update(mode_beta=mode_beta, mode_advantage=mode_advantage)
    settings = dict(n_steps=4, batch_size=8, n_epochs=2, learning_rate=1e-3, seed=0, device="cpu")
    settings.update(kwargs)
    return DiffusionPPO(DiffusionPlannerPolicy, env, bc_coef=bc_coef, policy_kwargs=policy_kwargs, **settings)


def sb3_batch(agent: VLAAgent, n: int = 3, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    space = observation_space(agent.observation_config)
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    raw = {key: np.stack([s[key] for s in samples]) for key in samples[0]}
    sb3 = to_sb3_observation(raw, batched=True)
    return raw, {key: torch.as_tensor(value) for key, value in sb3.items()}


# ------------------------------------------------------------------------------------------- log-probabilities
def test_chain_scores_match_diffusers_ddim_and_the_planner():
    agent = tiny_agent()
    core = VLACore.from_agent(agent)
    _, obs = sb3_batch(agent)
    planner, c = agent.planner, agent.config
    k, m = c.num_inference_steps, c.num_anchors
    torch.manual_seed(1)
    with torch.no_grad():
        context = core.encode(obs)
        chain = core.sample(context, deterministic=False, min_std=0.05)
        score = core.score(context, chain, min_std=0.05)
        visited, final, mode = core._split(chain)
        rows = torch.arange(len(mode))

        # Every step of every mode is the DDIM Gaussian of diffusers' scheduler (prediction_type="sample").
        raw = core.score(context, chain, min_std=1e-8).params
        stride = c.start_timestep // k
        scheduler = DDIMScheduler(
            num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule, beta_start=c.beta_start,
            beta_end=c.beta_end, prediction_type="sample", clip_sample=True, clip_sample_range=1.0,
            set_alpha_to_one=True, timestep_spacing="trailing",
        )
        scheduler.set_timesteps(c.num_train_timesteps // stride)  # so that prev_t = t - stride
        for step, t in enumerate(core.timesteps.tolist()):
            x_t = visited[:, step]
            x0, _ = planner.denoise(context, x_t, torch.tensor(t))
            ddim = lambda z: scheduler.step(x0, t, x_t, eta=c.eta, use_clipped_model_output=True, variance_noise=z)
            ref_mean = ddim(torch.zeros_like(x_t)).prev_sample
            ref_std = ddim(torch.ones_like(x_t)).prev_sample - ref_mean
            assert torch.allclose(raw["mean"][:, step], ref_mean, atol=1e-5), f"mean of step {step} (t={t})"
            assert torch.allclose(raw["std"][:, step, :, None, None].expand_as(ref_std), ref_std.clamp(min=1e-8), atol=1e-5)

        # Per-decision log-probabilities are the planner's own Gaussians: all modes' first steps, the executed
        # mode's last step, then the log-probability of choosing that mode.
        per_mode = torch.stack([
            planner.step_log_prob(context, torch.cat([visited[:, :, j], final[:, None]], dim=1), min_std=0.05,
                                  mode_index=torch.full((len(mode),), j))
            for j in range(m)
        ], dim=1)  # (B, M, K): the last column is only meaningful for the executed mode
        assert score.log_prob.shape == (len(mode), k + 1)
        assert torch.allclose(score.log_prob[:, : k - 1], per_mode[:, :, :-1].sum(dim=1), atol=1e-3)
        assert torch.allclose(score.log_prob[:, k - 1], per_mode[rows, mode, -1], atol=1e-3)
        assert torch.allclose(score.log_prob[:, k], score.params["selection"][rows, mode])
        assert torch.allclose(score.params["selection"].exp().sum(-1), torch.ones(len(mode)))

        # The deterministic chain is the imitation policy's plan.
        plan = core.trajectory(context, core.sample(context, deterministic=True, min_std=0.05))
        assert torch.allclose(plan, planner(context)["trajectory"], atol=1e-5)


def test_execute_mean_makes_the_last_step_deterministic_and_drops_its_column():
    agent = tiny_agent()
    core = VLACore.from_agent(agent, execute_mean=True)
    sampling = VLACore.from_agent(agent)
    _, obs = sb3_batch(agent, n=4)
    k = agent.config.num_inference_steps
    assert core.num_decisions == k == sampling.num_decisions - 1
    assert core.decision_weights(0.5).tolist() == sampling.decision_weights(0.5).tolist()[:k - 1] + [1.0]
    with torch.no_grad():
        context = core.encode(obs)
        torch.manual_seed(3)
        chain = core.sample(context, deterministic=False, min_std=0.05)
        _, final, mode = core._split(chain)
        score = core.score(context, chain, min_std=0.05)
        rows = torch.arange(len(mode))
        # the executed plan is exactly the executed mode's last mean: no noise on it
        assert torch.allclose(final, score.params["mean"][rows, -1, mode], atol=1e-6)
        full = sampling.score(context, chain, min_std=0.05)
    assert score.log_prob.shape == (4, k)
    assert torch.allclose(score.log_prob[:, : k - 1], full.log_prob[:, : k - 1])
    assert torch.allclose(score.log_prob[:, -1], full.log_prob[:, -1])  # the mode choice
    assert core.reference_copy().execute_mean


def test_encode_matches_the_agent_caches_frozen_encoders_and_trains_the_planner():
    agent = tiny_agent()
    core = VLACore.from_agent(agent)
    core.freeze(["semantic", "bev"])
    raw, obs = sb3_batch(agent, n=4)
    context = core.encode(obs)
    with torch.no_grad():
        expected = agent.encode_context(agent.observation_features(raw))
    assert torch.allclose(context.tokens, expected.tokens, atol=1e-5)
    assert torch.allclose(context.ego, expected.ego, atol=1e-5)
    assert core.cache.misses == 8 and core.cache.hits == 0  # 4 scenes x 2 frozen modules
    again = core.encode(obs)
    assert core.cache.hits == 8 and torch.equal(again.tokens, context.tokens)

    chain = core.sample(context, deterministic=False, min_std=0.05)
    core.score(context, chain.detach(), 0.05).log_prob.sum().backward()
    assert all(p.grad is None for p in agent.semantic.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.planner.score_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.planner.offset_head.parameters())
    with pytest.raises(ValueError, match="unknown VLA module"):
        core.freeze(["vlm"])
    with pytest.raises(ValueError, match="channel-first"):
        core.encode({**obs, "camera": obs["camera"].permute(0, 2, 3, 1)})
    with pytest.raises(ValueError, match="chain has width"):
        core.score(context, chain[:, 1:], 0.05)


def test_freezing_the_reference_plan_keeps_the_mode_choice_gradient_off_it():
    """The reference plan anchors mode 0 and enters the mode choice; RL (by default) keeps it as imitation made it."""
    def reference_grads(frozen: list[str]) -> list[torch.Tensor | None]:
        agent = tiny_agent()
        core = VLACore.from_agent(agent)
        core.freeze(frozen)
        _, obs = sb3_batch(agent, n=4)
        context = core.encode(obs)
        chain = core.sample(context, deterministic=False, min_std=0.05)
        core.score(context, chain.detach(), 0.05).log_prob.sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.planner.score_head.parameters())
        return [p.grad for p in agent.planner.reference_parameters()]

    trainable = reference_grads(["semantic", "bev"])
    assert trainable and any(g is not None and g.abs().sum() > 0 for g in trainable)  # the choice reaches it
    assert all(g is None for g in reference_grads(["semantic", "bev", "reference"]))


# ------------------------------------------------------------------------------------------- the PPO update
def test_first_update_starts_at_ratio_one_and_moves_only_the_planner():
    agent = tiny_agent()
    model = toy_model(agent)
    policy: DiffusionPlannerPolicy = model.policy
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    reference_before = {k: v.clone() for k, v in policy.reference.state_dict().items()}
    model.learn(total_timesteps=model.n_steps * model.n_envs)

    stats = model.minibatch_stats
    assert len(stats["approx_kl"]) == 2 * model.n_epochs  # 16 samples / batch 8, two epochs
    assert abs(stats["approx_kl"][0]) < 1e-4 and stats["clip_fraction"][0] == 0.0
    after = agent.state_dict()
    planner_moved = any(not torch.equal(before[k], after[k]) for k in before if k.startswith("planner."))
    assert planner_moved
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("semantic.", "bev.")))
    assert all(torch.equal(v, policy.reference.state_dict()[k]) for k, v in reference_before.items())
    assert model.rollout_buffer.log_probs.shape[-1] == agent.config.num_inference_steps + 1


def test_bc_regulariser_is_zero_at_the_reference_and_grows_away_from_it():
    agent = tiny_agent()
    model = toy_model(agent)
    policy: DiffusionPlannerPolicy = model.policy
    _, obs = sb3_batch(agent, n=4)
    with torch.no_grad():
        actions, _, _ = policy(obs)
        kl = policy.evaluate_chains(obs, actions).kl
        assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-6)
        for p in agent.planner.offset_head.parameters():
            p.add_(0.05 * torch.randn_like(p))
        kl = policy.evaluate_chains(obs, actions).kl
    assert (kl > 0).all()


def test_all_mode_update_stores_every_modes_reward_and_moves_the_choice_toward_the_kl_optimum():
    agent = tiny_agent(mode_choice="confidence")  # an untrained reference plan would make the choice near-certain
    model = toy_model(agent, mode_beta=0.05, bc_coef=0.0, n_epochs=4)
    policy: DiffusionPlannerPolicy = model.policy
    m = agent.config.num_anchors
    assert policy.action_space.shape == (policy.core.chain_size + (m + 1) * 24,)
    head = {id(p) for p in policy.core.mode_parameters()}  # the confidence head learns at its own rate
    assert head and {id(p) for p in policy.optimizer.param_groups[2]["params"]} == head
    assert policy.optimizer.param_groups[2]["lr"] == 1e-2 and not head & {id(p) for p in policy.optimizer.param_groups[0]["params"]}

    def cross_entropy() -> float:  # of the current mode choice against pi* on the stored rollout
        data = next(model.rollout_buffer.get(batch_size=None))
        with torch.no_grad():
            evaluation = policy.evaluate_chains(data.observations, data.actions)
            target = model._mode_target(evaluation, data.candidate_rewards)
            return float(-(target * evaluation.mode_log_prob).sum(dim=-1).mean())

    model.learn(total_timesteps=model.n_steps * model.n_envs)
    buffer = model.rollout_buffer
    rewards = buffer.candidate_rewards  # flattened by get(): (n_steps * n_envs, M)
    actions = buffer.actions
    candidates = actions[:, -(m + 1) * 24 : -24].reshape(-1, m, 8, 3)
    assert rewards.shape == (model.n_steps * model.n_envs, m)
    space = trajectory_space()  # what the env scores: plans clipped to its action bounds
    assert np.allclose(rewards, ToyVectorEnv.reward(np.clip(candidates, space.low, space.high)), atol=1e-5)
    executed = actions[:, -24:].reshape(-1, 8, 3)
    mode = actions[:, policy.core.chain_size - 1].round().astype(int)
    assert np.allclose(executed, candidates[np.arange(len(mode)), mode], atol=1e-5)  # one of them was executed
    assert np.allclose(buffer.swap_and_flatten(buffer.rewards)[:, 0], rewards[np.arange(len(mode)), mode], atol=1e-5)

    # A second train() on the same rollout lowers the cross-entropy further: the choice moves toward pi*.
    after_first = cross_entropy()
    model.train()
    assert cross_entropy() < after_first - 1e-3


def test_mode_head_only_keeps_the_all_mode_cross_entropy_off_the_shared_decoder():
    agent = tiny_agent(mode_choice="confidence")
    # one minibatch and one epoch: later minibatches would see the moved head and differ for that reason alone
    model = toy_model(agent, mode_beta=0.05, bc_coef=0.0, mode_head_only=True, max_grad_norm=1e9, n_epochs=1,
                      batch_size=16)
    assert model.batch_size == model.n_steps * model.n_envs
    model.learn(total_timesteps=model.n_steps * model.n_envs)
    policy: DiffusionPlannerPolicy = model.policy
    head = {name for name, p in policy.named_parameters() if any(p is q for q in policy.core.mode_parameters())}
    start = copy.deepcopy(policy.state_dict())
    optimizer = copy.deepcopy(policy.optimizer.state_dict())

    def train_with(mode_coef: float) -> dict[str, torch.Tensor]:  # one train() on the same rollout and state
        policy.load_state_dict(start)
        policy.optimizer.load_state_dict(copy.deepcopy(optimizer))  # Adam would update the loaded moments in place
        model.mode_coef = mode_coef
        np.random.seed(0)
        torch.manual_seed(0)
        model.train()
        return {name: p.detach().clone() for name, p in policy.named_parameters()}

    def decoder_moved_by_the_cross_entropy() -> bool:
        without, with_ = train_with(0.0), train_with(1.0)
        assert any(not torch.equal(without[n], with_[n]) for n in head)  # the head learns from it either way
        return any(not torch.equal(without[n], with_[n]) for n in without if n not in head)

    assert head and not decoder_moved_by_the_cross_entropy()
    model.mode_head_only = False
    assert decoder_moved_by_the_cross_entropy()


def test_per_mode_core_scores_each_modes_steps_and_keeps_noise_free_plans():
    agent = tiny_agent()
    core = VLACore.from_agent(agent, per_mode=True, noise_free_plans=True)
    summed = VLACore.from_agent(agent)
    planner, c = agent.planner, agent.config
    k, m = c.num_inference_steps, c.num_anchors
    assert core.num_decisions == k * m + 1 and core.num_candidates == 2 * m
    assert core.decision_weights(0.5).tolist() == [0.5] * m + [1.0] * m + [1.0]
    _, obs = sb3_batch(agent, n=3)
    with torch.no_grad():
        context = core.encode(obs)
        torch.manual_seed(2)
        chain = core.sample(context, deterministic=False, min_std=0.05)
        visited, final, mode = core._split(chain)
        score = core.score(context, chain, min_std=0.05)
        # the same sampled chain without the noise-free plans, scored with modes summed per step
        plain = torch.cat([chain[:, : core._visited_size + m * 24], chain[:, -1:]], dim=1)
        reference = summed.score(context, plain, min_std=0.05)
        rows = torch.arange(len(mode))
        per_step = score.log_prob[:, :-1].view(len(mode), k, m)
        assert torch.allclose(per_step[:, : k - 1].sum(dim=-1), reference.log_prob[:, : k - 1], atol=1e-3)
        assert torch.allclose(per_step[rows, k - 1, mode], reference.log_prob[:, k - 1], atol=1e-3)
        assert torch.allclose(score.log_prob[:, -1], reference.log_prob[:, -1])

        # every noise-free plan follows the step means from its mode's own (noised) start
        x, stride = visited[:, 0], int(core.timesteps[-1]) + 1
        for t in core.timesteps:
            x0, _ = planner.denoise(context, x, t)
            x, _ = planner.step_gaussian(x0, x, t, t - stride, c.eta)
        plans = core.candidate_trajectories(context, chain)
        assert plans.shape == (3, 2 * m, 8, 3)
        assert torch.allclose(plans[:, m:], planner.normalizer.denormalize(x), atol=1e-5)
        assert torch.allclose(plans[rows, mode], core.trajectory(context, chain))
        assert not torch.allclose(plans[:, :m], plans[:, m:], atol=1e-3)  # the sampled ones carry step noise
        deterministic = core.candidate_trajectories(context, core.sample(context, deterministic=True, min_std=0.05))
        assert torch.equal(deterministic[:, :m], deterministic[:, m:])


def test_per_mode_advantages_score_noise_free_baselines_and_raise_the_weighted_surrogate():
    agent = tiny_agent()
    # The mode cross-entropy off (it moves the shared decoder too): what changes is the per-mode PPO term alone. A
    # small rate: at 1e-3 the toy planner's means move by several stds per update (24-dim Gaussians, std 0.05).
    model = toy_model(agent, mode_beta=0.05, mode_advantage=True, bc_coef=0.0, n_epochs=1, mode_coef=0.0,
                      learning_rate=1e-5)
    policy: DiffusionPlannerPolicy = model.policy
    m, k = agent.config.num_anchors, agent.config.num_inference_steps
    assert policy.action_space.shape == (policy.core.chain_size + (2 * m + 1) * 24,)
    model.learn(total_timesteps=model.n_steps * model.n_envs)
    buffer = model.rollout_buffer
    candidates = buffer.actions[:, -(2 * m + 1) * 24 : -24].reshape(-1, 2 * m, 8, 3)
    space = trajectory_space()
    assert buffer.candidate_rewards.shape == (model.n_steps * model.n_envs, 2 * m)
    assert np.allclose(buffer.candidate_rewards, ToyVectorEnv.reward(np.clip(candidates, space.low, space.high)),
                       atol=1e-5)
    assert buffer.log_probs.shape[-1] == k * m + 1

    def surrogate() -> float:  # PPO's objective: the pi*-weighted per-mode advantages times each mode's ratio
        data = next(buffer.get(batch_size=None))
        with torch.no_grad():
            evaluation = policy.evaluate_chains(data.observations, data.actions)
            target = model._mode_target(evaluation, data.candidate_rewards)
            step_weight = policy.core.decision_weights(model.denoising_gamma)
            advantages = model._mode_advantages(target, data.candidate_rewards, step_weight)
        assert advantages[:, -1].abs().sum() == 0 and advantages.abs().sum() > 0
        return float((advantages * (evaluation.log_prob - data.old_log_prob).exp()).sum(dim=1).mean())

    before = surrogate()
    model.train()
    assert surrogate() > before + 0.05
    with pytest.raises(ValueError, match="needs mode_beta"):
        toy_model(agent, mode_beta=None, mode_advantage=True)
    with pytest.raises(ValueError, match="needs mode_beta"):
        RLConfig(mode_beta=None, mode_advantage=True)


def test_all_mode_update_refuses_an_env_without_candidate_rewards():
    agent = tiny_agent()
    m, k = agent.config.num_anchors, agent.config.num_inference_steps
    env = ChainActionVecEnv(SB3NavsimVecEnv(ToyVectorEnv(agent), flat_actions=False), chain_size(agent.config))
    policy_kwargs = dict(core_factory=lambda: VLACore.from_agent(agent), num_decisions=k + 1, num_modes=m)
    with pytest.raises(ValueError, match="num_candidates"):
        DiffusionPPO(DiffusionPlannerPolicy, env, mode_beta=0.05, policy_kwargs=policy_kwargs, n_steps=4, batch_size=8)


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def il_checkpoint(tmp_path_factory):
    """An (untrained) VLA checkpoint in the folder layout `irlvla train il` writes."""
    folder = tmp_path_factory.mktemp("il") / "model"
    tiny_agent().save_pretrained(folder)
    return folder.parent


@pytest.fixture(scope="module")
def rwm_checkpoint(tmp_path_factory):
    from reward_models.model import RewardWorldModel, RWMConfig

    path = tmp_path_factory.mktemp("rwm")
    RewardWorldModel(RWMConfig()).save_pretrained(path)
    return path


def tiny_rl_config(data_root, **overrides) -> RLConfig:
    base = dict(reward_model="epdms", data_root=str(data_root), max_scenes=4, num_envs=4, n_steps=2,
                batch_size=4, n_epochs=1, total_timesteps=8, audit_every=1, audit_scenes=2, checkpoint_every=1,
                num_threads=1, learning_rate=1e-3)
    base.update(overrides)
    return RLConfig(**base)


def test_train_rl_resumes_from_its_checkpoint_with_identical_weights(data_env, il_checkpoint, tmp_path):
    from agents.ppo.train import build_env, build_model, latest_checkpoint, load_checkpoint, train_rl
    from agents.registry import make_agent

    run = tmp_path / "run"
    first = train_rl(tiny_rl_config(data_env), il_checkpoint, run, progress=False)
    assert first["num_timesteps"] == 8 and first["resumed_from"] == 0
    folder = latest_checkpoint(run)
    assert folder is not None and folder.name == "step_00000008"
    saved = load_file(str(folder / "policy.safetensors"))
    exported = make_agent("vla", checkpoint=run)  # the run folder's model/ is a regular VLA checkpoint
    for key, value in exported.state_dict().items():
        assert torch.equal(value, saved[f"core.{key}"]), key

    # An interrupted run is rebuilt from the IL checkpoint; the checkpoint restores weights and counters.
    config = tiny_rl_config(data_env, total_timesteps=16)
    agent = make_agent("vla", checkpoint=il_checkpoint)
    model = build_model(config, agent, build_env(config, agent))
    counters = load_checkpoint(folder, model)
    assert model.num_timesteps == 8 and counters["n_updates"] == model._n_updates > 0
    restored = model.policy.trained_state_dict()
    assert all(torch.equal(restored[k], v) for k, v in saved.items())

    second = train_rl(config, il_checkpoint, run, progress=False)
    assert second["resumed_from"] == 8 and second["num_timesteps"] == 16
    assert [r["timesteps"] for r in second["rollouts"]] == [8, 16]
    assert (run / "logs" / "progress_00000000.csv").is_file() and (run / "logs" / "progress_00000008.csv").is_file()
    with pytest.raises(ValueError, match="different RLConfig"):
        train_rl(tiny_rl_config(data_env, total_timesteps=16, clip_range=0.2), il_checkpoint, run, progress=False)


def test_audit_records_the_learned_and_the_rule_based_score(data_env, il_checkpoint, rwm_checkpoint, tmp_path):
    from agents.ppo.train import train_rl

    config = tiny_rl_config(data_env, reward_model=str(rwm_checkpoint), audit_divergence=None)
    summary = train_rl(config, il_checkpoint, tmp_path / "run", progress=False)
    audit = summary["audit"]
    assert [r["timesteps"] for r in audit] == [0, 8]  # before training, and at its end
    for record in audit:
        assert 0.0 <= record["rule_epdms"] <= 1.0 and 0.0 <= record["model_epdms"] <= 1.0
        assert np.isfinite(record["reward_model"])
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["audit"] == audit
    header = (tmp_path / "run" / "logs" / "progress_00000000.csv").read_text().splitlines()[0].split(",")
    assert {"audit/rule_epdms", "audit/model_epdms", "rollout/reward_mean"} <= set(header)


def test_cli_parses_train_rl():
    from irlvla_env.cli import build_parser

    args = build_parser().parse_args(["train", "rl", "--il-checkpoint", "ckpt", "--reward-model", "epdms",
                                      "--timesteps", "64", "--seed", "3", "--run-dir", "out"])
    assert (args.il_checkpoint, args.reward_model, args.timesteps, args.seed, args.run_dir) == (
        "ckpt", "epdms", 64, 3, "out")
    with pytest.raises(ValueError, match="clip_range"):
        RLConfig(clip_range=1.5)
