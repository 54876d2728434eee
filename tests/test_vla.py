"""The IRL-VLA policy: config, the three modules, the DDIM Gaussian the PPO stage relies on, IL and checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.vla.anchors import TrajectoryNormalizer, kinematic_prior_trajectories, kmeans_anchors
from agents.vla.bev import BEVReasoning, perception_losses
from agents.vla.config import VLAConfig
from agents.vla.planner import DiffusionPlanner, PlannerContext
from agents.vla.semantic import PromptTokenizer, SemanticReasoning, driving_prompt

torch.set_num_threads(1)
TINY = dict(d_model=32, num_heads=2, vlm_hidden_size=32, vlm_intermediate_size=64, vision_hidden_size=32,
            vision_intermediate_size=64, vlm_layers=1, vision_layers=1, lidar_bev_size=32, camera_height=32,
            camera_width=128, vision_tile_size=32, bev_semantic_height=16, bev_semantic_width=32, max_agents=4,
            num_anchors=6, planner_layers=1)


def tiny_config(**changes) -> VLAConfig:
    return VLAConfig(**{**TINY, **changes})


def test_config_round_trips_and_rejects_bad_values():
    config = tiny_config(num_inference_steps=5, vlm_path=None)
    assert VLAConfig.from_json(config.to_json()) == config
    real = VLAConfig.real(vlm_path="/models/smolvlm")
    assert real.num_anchors == 20 and real.vlm_path == "/models/smolvlm"
    assert VLAConfig.from_dict(json.loads(real.to_json())) == real
    with pytest.raises(ValueError, match="unknown keys.*'dmodel'"):
        VLAConfig.from_dict({"dmodel": 3})
    with pytest.raises(ValueError, match="num_heads"):
        VLAConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="start_timestep"):
        VLAConfig(num_inference_steps=30, start_timestep=20)


def test_prompt_uses_only_known_words():
    tokenizer = PromptTokenizer(tiny_config())
    history = np.array([[0, 0, 0.1, 12.34, -0.5, 1.0, 0.0]] * 4)
    prompts = [driving_prompt(np.eye(4)[k], history) for k in range(4)]
    ids, mask = tokenizer.encode(prompts)
    assert ids.shape == (4, VLAConfig().max_prompt_tokens) and mask.dtype == torch.bool
    assert not (ids[mask] == 1).any(), "a prompt word fell outside the driving vocabulary"
    assert not torch.equal(ids[0], ids[2])  # the command changes the prompt
    assert mask.sum(1).max() < ids.shape[1]  # nothing truncated


def test_modules_have_documented_shapes():
    config = tiny_config()
    tokenizer = PromptTokenizer(config)
    batch = 3
    camera = torch.rand(batch, 3, config.camera_height, config.camera_width)
    ids, mask = tokenizer.encode(["command: turn left.", "speed 3.0 m/s", "plan the next 4 s."])
    semantic = SemanticReasoning(config, tokenizer.vocab_size)(camera, ids, mask)
    assert semantic.shape == (batch, config.num_semantic_tokens, config.d_model)

    bev_module = BEVReasoning(config)
    bev = bev_module(torch.rand(batch, 2, config.lidar_bev_size, config.lidar_bev_size), camera)
    assert bev.tokens.shape == (batch, config.bev_grid**2, config.d_model)
    assert bev.semantic_logits.shape == (batch, config.bev_semantic_classes, 16, 32)
    assert bev.agent_states.shape == (batch, config.max_agents, 5) and bev.agent_logits.shape == (batch, 4)
    assert bev.agent_states[..., :2].abs().max() <= config.lidar_range
    planner_tokens = bev_module.planner_tokens(bev)
    assert planner_tokens.shape == (batch, (config.bev_grid // config.planner_bev_pool) ** 2 + 4, config.d_model)
    targets = {
        "bev_semantic_map": torch.randint(0, 7, (batch, 16, 32)),
        "agent_states": torch.randn(batch, 6, 5),
        "agent_labels": torch.tensor([[1, 1, 0, 0, 0, 0], [0] * 6, [1] * 6], dtype=torch.bool),
    }
    losses = perception_losses(bev.semantic_logits, bev.agent_states, bev.agent_logits, targets)
    assert set(losses) == {"bev_semantic", "agent_class", "agent_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="bev_semantic_height"):
        perception_losses(bev.semantic_logits, bev.agent_states, bev.agent_logits,
                          {"bev_semantic_map": torch.zeros(batch, 8, 8, dtype=torch.long)})


def test_kmeans_anchors_and_normalizer():
    trajectories = kinematic_prior_trajectories()
    anchors = kmeans_anchors(trajectories, 10)
    assert anchors.shape == (10, 8, 3)
    assert np.array_equal(anchors, kmeans_anchors(trajectories, 10))  # seeded
    # every trajectory is within the spread of the data from its nearest anchor
    distance = np.linalg.norm(trajectories[:, None, :, :2] - anchors[None, :, :, :2], axis=-1).mean(-1).min(1)
    spread = np.linalg.norm(trajectories[:, :, :2] - trajectories[:, :, :2].mean(0), axis=-1).mean()
    assert distance.mean() < 0.5 * spread
    normalizer = TrajectoryNormalizer((-1.0, -20.0, -2.0), (55.0, 26.0, 1.9))
    poses = torch.as_tensor(trajectories, dtype=torch.float32)
    assert torch.allclose(normalizer.denormalize(normalizer.normalize(poses)), poses, atol=1e-4)
    with pytest.raises(ValueError, match="at least num_anchors"):
        kmeans_anchors(trajectories[:3], 10)


@pytest.mark.parametrize("eta", [0.5, 1.0])
@pytest.mark.parametrize("stride", [1, 10, 50])
def test_ddim_gaussian_matches_scheduler_step(eta, stride):
    planner = DiffusionPlanner(tiny_config())
    scheduler = planner.scheduler
    scheduler.set_timesteps(scheduler.config.num_train_timesteps // stride)
    assert scheduler.config.num_train_timesteps // scheduler.num_inference_steps == stride
    generator = torch.Generator().manual_seed(stride)
    for t in (stride - 1, 2 * stride - 1, 20 * stride - 1):  # the last one ends at prev = -1 (ᾱ = 1)
        x_t = torch.randn(2, 3, 8, 3, generator=generator) * 0.5
        x0 = torch.randn(2, 3, 8, 3, generator=generator)  # some entries beyond ±1: the clamp is exercised
        noise = torch.randn(2, 3, 8, 3, generator=generator)
        expected = scheduler.step(
            x0, t, x_t, eta=eta, variance_noise=noise, use_clipped_model_output=True
        ).prev_sample
        mean, std = planner.step_gaussian(x0, x_t, torch.tensor(t), torch.tensor(t - stride), eta)
        assert torch.allclose(mean + std * noise, expected, atol=1e-5), (t, stride, eta)
        if t == stride - 1:
            assert std == 0  # last step: ᾱ_prev = 1, so the mean is the clamped x0 itself
            assert torch.allclose(mean, x0.clamp(-1, 1), atol=1e-6)


def test_step_log_prob_reproduces_sampling_and_has_gradients():
    config = tiny_config()
    planner = DiffusionPlanner(config)
    batch = 3
    context = PlannerContext(torch.randn(batch, 10, config.d_model), torch.randn(batch, config.d_model))
    for steps in (1, 2, 5):
        chain = planner.sample_chain(context, num_steps=steps, generator=torch.Generator().manual_seed(steps))
        assert chain.samples.shape == (batch, steps + 1, 8, 3) and chain.log_probs.shape == (batch, steps)
        assert chain.modes.shape == (batch, config.num_anchors, 8, 3)
        assert (chain.stds >= config.min_std).all()
        again = planner.step_log_prob(context, chain)
        assert torch.allclose(again, chain.log_probs, rtol=1e-5, atol=1e-3)
        from_samples = planner.step_log_prob(context, chain.samples, mode_index=chain.mode_index)  # a buffer's view
        assert torch.allclose(from_samples, again)
    with pytest.raises(ValueError, match="mode_index"):
        planner.step_log_prob(context, chain.samples)
    looser = planner.step_log_prob(context, chain, min_std=0.1)
    assert not torch.allclose(looser, again)
    looser.sum().backward()
    assert planner.offset_head[0].weight.grad.abs().sum() > 0
    # deterministic chains are reproducible; stochastic ones differ
    first = planner.sample_chain(context, deterministic=True).samples
    assert torch.equal(first, planner.sample_chain(context, deterministic=True).samples)
    assert not torch.equal(first, planner.sample_chain(context).samples)


def test_smooth_basis_plans_are_polynomials_that_start_at_the_ego():
    """With `smooth_basis_degree=D`, every x0 (every mode, every step) is a degree-D polynomial in time through
    the ego pose at t = 0, whatever noise the input carries; the per-pose planner is not."""
    degree = 3
    batch = 2
    for smooth in (degree, 0):
        config = tiny_config(smooth_basis_degree=smooth)
        planner = DiffusionPlanner(config)
        context = PlannerContext(torch.randn(batch, 10, config.d_model), torch.randn(batch, config.d_model))
        noisy = planner.normalized_anchors().unsqueeze(0).expand(batch, -1, -1, -1) + 0.1 * torch.randn(
            batch, config.num_anchors, config.num_poses, 3)
        x0, _ = planner.denoise(context, noisy, torch.full((batch, 1), 10))
        metres = planner.normalizer.denormalize(x0)
        time = torch.arange(1, config.num_poses + 1, dtype=torch.float32) / config.num_poses
        basis = time[:, None] ** torch.arange(1, degree + 1)  # no constant: the plan starts at (0, 0, 0)
        fit = basis @ torch.linalg.lstsq(basis, metres.reshape(-1, config.num_poses, 3).transpose(0, 1).reshape(
            config.num_poses, -1)).solution
        residual = (fit - metres.reshape(-1, config.num_poses, 3).transpose(0, 1).reshape(config.num_poses, -1)).abs()
        assert (residual.max() < 1e-3) == bool(smooth), (smooth, float(residual.max()))
    planner = DiffusionPlanner(tiny_config(smooth_basis_degree=degree))
    with pytest.raises(ValueError, match="anchor_index"):
        planner.denoise(context, noisy[:, :2], torch.full((batch, 1), 10))
    # the plan rests on the named anchor: noise in x_t moves it only through the network's features
    x0_clean, _ = planner.denoise(context, noisy[:, :2], torch.full((batch, 1), 10), anchor_index=torch.tensor([0, 1]))
    assert x0_clean.shape == (batch, 2, config.num_poses, 3)
    with pytest.raises(ValueError, match="smooth_basis_degree"):
        tiny_config(smooth_basis_degree=9)


@pytest.mark.parametrize("target", ["anchor", "prediction", "soft"])
def test_imitation_loss_positive_mode_options(target):
    """The regression covers the nearest anchors' modes (and, for `prediction`, the winning mode); the
    classification's positive is the nearest anchor or the best-predicting mode."""
    config = tiny_config(classification_target=target, regression_neighbours=2, train_max_timestep=1)
    planner = DiffusionPlanner(config)
    batch = 4
    context = PlannerContext(torch.randn(batch, 10, config.d_model), torch.randn(batch, config.d_model))
    demo = planner.anchors[[0, 1, 2, 3]] + 0.3
    terms = planner.imitation_loss(context, demo)
    assert terms["trajectory_reg"].item() > 0 and terms["trajectory_cls"].item() > 0
    terms["trajectory_reg"].backward()
    assert planner.offset_head[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="classification_target"):
        tiny_config(classification_target="oracle")
    with pytest.raises(ValueError, match="regression_neighbours"):
        tiny_config(regression_neighbours=7)


def test_soft_mode_loss_targets_the_softmax_of_negative_distances():
    """Hydra-MDP-style soft target: the loss is the cross-entropy against softmax(-d / tau); it is smallest when
    the confidences are -d / tau (up to a constant), and its gradient raises the nearer modes."""
    from agents.vla.planner import soft_mode_loss

    distances = torch.tensor([[0.2, 1.0, 3.0], [2.0, 0.5, 0.6]])
    tau = 0.5
    target = torch.softmax(-distances / tau, dim=1)
    ideal = soft_mode_loss(-distances / tau + 7.0, distances, tau)
    entropy = -(target * target.log()).sum(dim=1).mean()
    assert torch.isclose(ideal, entropy, atol=1e-6)
    logits = torch.zeros(2, 3, requires_grad=True)
    loss = soft_mode_loss(logits, distances, tau)
    assert loss > ideal
    loss.backward()
    assert logits.grad[0].argmin() == 0 and logits.grad[1].argmin() == 1  # descent raises the nearest mode most
    with pytest.raises(ValueError, match="soft_target_tau"):
        tiny_config(soft_target_tau=0.0)


def test_soft_target_teaches_the_planner_to_pick_the_nearest_anchor():
    """With the soft anchor target a few steps on one scene make the demonstration's nearest anchor the top mode."""
    torch.manual_seed(0)
    config = tiny_config(classification_target="soft", soft_target_tau=1.0, noise_draws=1, mode_choice="confidence")
    planner = DiffusionPlanner(config)
    context = PlannerContext(torch.randn(1, 10, config.d_model), torch.randn(1, config.d_model))
    demo = planner.anchors[[3]] + 0.1
    optimizer = torch.optim.Adam(planner.parameters(), lr=3e-3)
    for _ in range(60):
        terms = planner.imitation_loss(context, demo)
        optimizer.zero_grad()
        (terms["trajectory_reg"] + terms["trajectory_cls"]).backward()
        optimizer.step()
    planner.eval()
    with torch.no_grad():
        assert int(planner(context)["confidences"].argmax()) == 3


def test_regression_mode_choice_follows_the_learned_reference_plan():
    """The reference plan learns the demonstration by L1; the choice logits are the mode scores minus each mode's
    distance to it over `mode_choice_tau`, so with equal scores the executed mode is the one nearest the reference."""
    from agents.vla.planner import mean_xy_distance

    torch.manual_seed(0)
    config = tiny_config(mode_choice="regression", mode_choice_tau=0.25, noise_draws=1)
    planner = DiffusionPlanner(config)
    context = PlannerContext(torch.randn(2, 10, config.d_model), torch.randn(2, config.d_model))
    demo = planner.anchors[[3, 1]] + torch.tensor([0.3, -0.2, 0.0])
    optimizer = torch.optim.Adam(planner.parameters(), lr=3e-3)
    first = planner.imitation_loss(context, demo)["reference_reg"].item()
    for _ in range(150):
        loss = planner.imitation_loss(context, demo)["reference_reg"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first, (first, loss.item())
    planner.eval()
    scores_only = DiffusionPlanner(config.replace(mode_choice="confidence"))
    scores_only.load_state_dict(planner.state_dict())
    with torch.no_grad():
        out, raw = planner(context), scores_only(context)
        distance = mean_xy_distance(out["modes"], out["reference"])
        assert torch.allclose(out["confidences"], raw["confidences"] - distance / 0.25, atol=1e-4)
        assert torch.equal(out["modes"], raw["modes"])
        for layer in (planner.score_head[-1], planner.score_query):  # equal scores: the nearest mode is executed
            for p in layer.parameters():
                p.zero_()
        out = planner(context)
    nearest = mean_xy_distance(out["modes"], out["reference"]).argmin(dim=1)
    assert torch.equal(out["trajectory"], out["modes"][torch.arange(2), nearest])
    with pytest.raises(ValueError, match="mode_choice"):
        tiny_config(mode_choice="oracle")
    with pytest.raises(ValueError, match="mode_choice_tau"):
        tiny_config(mode_choice_tau=0.0)


def test_reference_anchor_makes_mode_zero_refine_the_reference_plan():
    """With `reference_anchor`, mode 0's chain starts from the noised reference plan and its smooth plan rests on
    it: with a zero offset head, mode 0 returns the reference plan and the others their fixed anchors."""
    batch = 2
    for on in (True, False):
        torch.manual_seed(0)
        planner = DiffusionPlanner(tiny_config(reference_anchor=on))
        context = PlannerContext(torch.randn(batch, 10, TINY["d_model"]), torch.randn(batch, TINY["d_model"]))
        with torch.no_grad():
            for p in planner.offset_head[-1].parameters():
                p.zero_()
            planner.reference_head[-1].weight.mul_(0.1)  # a plan inside the normalised range (no clamping)
            reference = planner.reference_plan(context)
            assert reference.abs().max() < 1
            anchors = planner.scene_anchors(context)
            fixed = planner.normalized_anchors()
            assert torch.equal(anchors[:, 1:], fixed[1:].expand(batch, -1, -1, -1))
            assert torch.allclose(anchors[:, 0], reference if on else fixed[0].expand(batch, -1, -1))
            modes = planner(context)["modes"]  # metres
        if on:  # the scene's reference plan (a polynomial of the basis, so the smooth fit keeps it exactly)
            assert torch.allclose(modes[:, 0], planner.normalizer.denormalize(reference), atol=1e-3)
            assert not torch.allclose(modes[0, 0], modes[1, 0])
        else:  # the same fixed anchor in every scene
            assert torch.allclose(modes[0, 0], modes[1, 0], atol=1e-4)
    with pytest.raises(ValueError, match="reference_anchor"):
        tiny_config(reference_anchor=True, num_anchors=1, regression_neighbours=1)


def test_lateral_weight_scales_only_the_lateral_error():
    """`lateral_weight` multiplies the y component of the L1: reg(w) = reg(0) + w · (reg(1) - reg(0))."""
    batch = 3
    context = PlannerContext(torch.randn(batch, 10, TINY["d_model"]), torch.randn(batch, TINY["d_model"]))
    reference = DiffusionPlanner(tiny_config())
    demo = reference.anchors[[0, 2, 4]] + torch.tensor([0.5, -0.7, 0.05])
    regression = {}
    for weight in (0.0, 1.0, 3.0):
        planner = DiffusionPlanner(tiny_config(lateral_weight=weight))
        planner.load_state_dict(reference.state_dict())
        torch.manual_seed(3)
        regression[weight] = planner.imitation_loss(context, demo)["trajectory_reg"].item()
    assert regression[1.0] > regression[0.0] > 0
    assert regression[3.0] == pytest.approx(regression[0.0] + 3.0 * (regression[1.0] - regression[0.0]), rel=1e-5)


# -- the whole agent ------------------------------------------------------------------------------------------------


def handful_of_scenes(agent, n: int = 4):
    """Hand-built features/targets of `n` scenes whose futures are distinct arcs and whose inputs tell them apart."""
    from agents.vla.anchors import kinematic_prior_trajectories

    config = agent.config
    generator = torch.Generator().manual_seed(0)
    trajectories = torch.tensor(kinematic_prior_trajectories()[[10, 30, 50, 75][:n]], dtype=torch.float32)
    ego = torch.zeros(n, config.num_history, 7)
    ego[:, :, 3] = trajectories[:, :1, 0] / 0.5  # current speed consistent with the first pose
    command = torch.eye(4)[[1, 0, 2, 1][:n]]
    ids, mask = agent.tokenizer.encode([driving_prompt(c.numpy(), e.numpy()) for c, e in zip(command, ego)])
    side = config.lidar_bev_size
    features = {
        "camera": torch.rand(n, 3, config.camera_height, config.camera_width, generator=generator),
        "lidar_bev": torch.rand(n, 2, side, side, generator=generator),
        "ego_history": ego,
        "command": command,
        "prompt_ids": ids,
        "prompt_mask": mask,
    }
    targets = {
        "trajectory": trajectories,
        "bev_semantic_map": torch.randint(0, 7, (n, config.bev_semantic_height, config.bev_semantic_width),
                                          generator=generator),
        "agent_states": torch.randn(n, 3, 5, generator=generator) * 5,
        "agent_labels": torch.tensor([[1, 1, 0]] * n, dtype=torch.bool),
    }
    return features, targets


def test_agent_forward_loss_and_optimizer():
    from agents.vla import VLAAgent

    agent = VLAAgent(**TINY)
    features, targets = handful_of_scenes(agent, 3)
    predictions = agent(features)
    assert predictions["trajectory"].shape == (3, 8, 3)
    assert predictions["modes"].shape == (3, 6, 8, 3) and predictions["confidences"].shape == (3, 6)
    assert predictions["bev_semantic_logits"].shape == (3, 7, 16, 32)
    terms = agent.compute_loss(features, targets, predictions)
    assert set(terms) == {
        "loss", "trajectory_reg", "trajectory_cls", "reference_reg", "bev_semantic", "agent_class", "agent_box"
    }
    terms["loss"].backward()
    assert agent.semantic.vlm.vision_model.embeddings.patch_embedding.weight.grad is not None  # VLM is trained
    groups = agent.get_optimizers().param_groups
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in agent.parameters() if p.requires_grad)
    frozen = VLAAgent(**TINY, freeze_vlm=True)
    assert len(frozen.get_optimizers().param_groups) == 1
    with pytest.raises(KeyError, match="prompt_ids"):
        agent({k: v for k, v in features.items() if k != "prompt_ids"})


def test_observation_features_match_the_feature_builder_layout():
    from agents.vla import VLAAgent

    agent = VLAAgent(**TINY)
    batch = 2
    observations = {
        "camera": np.random.default_rng(0).integers(0, 255, (batch, 32, 128, 3), dtype=np.uint8),
        "lidar_bev": np.zeros((batch, 2, 32, 32), np.float32),
        "ego_status": np.zeros((batch, 4, 7), np.float32),
        "command": np.eye(4, dtype=np.float32)[[0, 2]],
    }
    features = agent.observation_features(observations)
    assert features["camera"].shape == (batch, 3, 32, 128) and features["camera"].max() <= 1.0
    context = agent.encode_context(features)
    chain = agent.planner.sample_chain(context, generator=torch.Generator().manual_seed(0))
    trajectory = agent.chain_trajectory(chain)
    assert trajectory.shape == (batch, 8, 3) and torch.isfinite(trajectory).all()


def test_vla_overfits_a_handful_of_scenes():
    """Four scenes, full model (VLM + BEV + planner), 400 AdamW steps.

    Bound: a model that ignores its inputs can at best output the mean of the four demonstrations, whose mean
    displacement error here is ~10.8 m; overfitting must reach less than half of that, which needs the planner to
    pick a scene-dependent mode (picking a wrong one of these anchors costs 8-30 m on that scene) and refine it.
    """
    from agents.vla import VLAAgent
    from agents.vla.anchors import kinematic_prior_trajectories

    torch.manual_seed(0)
    agent = VLAAgent(**TINY, lr=1e-3)
    agent.fit_anchors(kinematic_prior_trajectories())
    features, targets = handful_of_scenes(agent)
    demo = targets["trajectory"]
    blind = (demo[:, :, :2] - demo[:, :, :2].mean(0)).norm(dim=-1).mean()
    optimizer = agent.get_optimizers()
    losses = []
    for _ in range(400):
        agent.train()
        terms = agent.compute_loss(features, targets, agent(features))
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20])
    agent.eval()
    with torch.no_grad():
        planned = agent(features)["trajectory"]
    l2 = (planned[:, :, :2] - demo[:, :, :2]).norm(dim=-1).mean()
    assert l2 < blind / 2, (float(l2), float(blind))


def test_save_load_round_trip_and_bad_checkpoints(tmp_path):
    from agents.vla import VLAAgent
    from agents.vla.anchors import kinematic_prior_trajectories

    agent = VLAAgent(**TINY, num_inference_steps=3).eval()
    prior = kinematic_prior_trajectories()
    agent.fit_anchors(prior[::2] * 0.8)
    features, _ = handful_of_scenes(agent, 2)
    agent.save_pretrained(tmp_path / "vla")
    loaded = VLAAgent.from_pretrained(tmp_path / "vla").eval()
    assert loaded.config == agent.config
    assert torch.equal(loaded.planner.anchors, agent.planner.anchors)
    with torch.no_grad():
        assert torch.allclose(loaded(features)["trajectory"], agent(features)["trajectory"], atol=1e-5)

    config_path = tmp_path / "vla" / "config.json"
    saved = json.loads(config_path.read_text())
    saved["config"]["d_model"] = 64
    config_path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="does not match the architecture"):
        VLAAgent.from_pretrained(tmp_path / "vla")
    saved["config"]["not_a_field"] = 1
    config_path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="unknown keys.*not_a_field"):
        VLAAgent.from_pretrained(tmp_path / "vla")


def test_semantic_module_loads_a_local_pretrained_vlm(tmp_path):
    from transformers import Idefics3ForConditionalGeneration

    config = tiny_config()
    tokenizer = PromptTokenizer(config)
    scratch = SemanticReasoning(config, tokenizer.vocab_size)
    pretrained = Idefics3ForConditionalGeneration(scratch.vlm.config)
    pretrained.save_pretrained(tmp_path / "vlm")
    loaded = SemanticReasoning(tiny_config(vlm_path=str(tmp_path / "vlm"), freeze_vlm=True), tokenizer.vocab_size)
    for name, value in pretrained.model.state_dict().items():
        assert torch.equal(loaded.vlm.state_dict()[name], value), name
    assert not any(p.requires_grad for p in loaded.vlm.parameters())
    with pytest.raises(FileNotFoundError, match="no config.json"):
        SemanticReasoning(tiny_config(vlm_path=str(tmp_path / "missing")), tokenizer.vocab_size)


def test_prompt_feature_builder_reads_the_agent_input():
    from agents.vla.policy import PromptFeatureBuilder
    from irlvla_env.navsim.dataclasses import AgentInput, Cameras, EgoStatus, Lidar

    statuses = [EgoStatus(np.array([-1.5 * (3 - i), 0, 0]), np.array([3.0, 0]), np.zeros(2), np.eye(4)[0])
                for i in range(4)]
    agent_input = AgentInput(statuses, [Cameras() for _ in range(4)], [Lidar() for _ in range(4)])
    tokenizer = PromptTokenizer(tiny_config())
    features = PromptFeatureBuilder(tokenizer).compute_features(agent_input)
    history = np.array([[-1.5 * (3 - i), 0, 0, 3.0, 0, 0, 0] for i in range(4)])
    ids, mask = tokenizer.encode([driving_prompt(np.eye(4)[0], history)])
    assert torch.equal(features["prompt_ids"], ids[0]) and torch.equal(features["prompt_mask"], mask[0])


def test_running_standardizer_pools_batches_exactly():
    from agents.vla.standardizer import RunningStandardizer

    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 5, generator=gen) * 3 + 7 for n in (4, 9, 1, 16)]
    std = RunningStandardizer(5)
    for batch in batches:
        std.update(batch)
    everything = torch.cat(batches)
    torch.testing.assert_close(std.mean, everything.mean(0))
    torch.testing.assert_close(std.var, everything.var(0, unbiased=False))
    standardised = std(everything)
    torch.testing.assert_close(standardised.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(standardised.std(0, unbiased=False), torch.ones(5), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        std.update(torch.zeros(3, 4))
