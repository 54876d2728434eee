"""Teach the VLA's mode choice the KL-regularised optimum of a reward model, in closed form (a study, not PPO).

    python examples/mode_distillation.py --vla <IL checkpoint> --reward-model <RWM checkpoint or epdms> \
        --train-scenes 2820 --test-scenes 150

The mode choice is a contextual bandit whose every arm a reward model can score, so the optimum of
E[r] - beta KL(pi || pi_IL), with pi_IL = softmax(confidence / temperature), is known per scene:
pi* ∝ pi_IL · exp(r / beta). Only the confidence head is fitted to pi* on the training scenes (the plans themselves
stay as imitation made them); the script then prints the true one-stage EPDMS of the confidence pick on held-out
scenes before and after. It measures how much RL on a reward can gain through mode choice alone, with a signal
as dense as the reward model allows, next to what PPO with one sample per scene reaches. `irlvla train rl` does
the same online, on the scenes its rollouts visit (`RLConfig.mode_beta`, the all-mode update).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from agents.registry import make_agent
from agents.vla.planner import PlannerContext
from irlvla_env.envs.scene_pool import ScenePool

SCORE_PARAMETERS = ("score_head", "score_query", "score_ego")  # what the confidence, and nothing else, reads


def plan_scenes(agent, pool: ScenePool, reward_model) -> list[tuple[PlannerContext, torch.Tensor, np.ndarray]]:
    """Per scene: the planner's context, its confidences `(M,)` and `reward_model`'s rewards of its modes `(M,)`."""
    out = []
    for token in pool.tokens:
        batch = {key: np.asarray(value)[None] for key, value in pool.observation(token).items()}
        with torch.no_grad():
            context = agent.encode_context(agent.observation_features(batch))
            plan = agent.planner(context)
        modes = plan["modes"][0].cpu().numpy().astype(np.float32)
        repeated = {key: np.repeat(value, len(modes), axis=0) for key, value in batch.items()}
        reward = reward_model.predict(repeated, modes, [token] * len(modes)).reward
        out.append((context, plan["confidences"][0], reward))
    return out


def distill(agent, scenes, temperature: float, beta: float, epochs: int, lr: float,
            batch_size: int = 64) -> tuple[float, float]:
    """Fit the confidence head to pi* ∝ softmax(confidence / temperature) · exp(reward / beta).

    Returns the cross-entropy to pi* over all training scenes before and after the fit.
    """
    parameters = [p for name, p in agent.planner.named_parameters() if name.startswith(SCORE_PARAMETERS)]
    for p in agent.parameters():
        p.requires_grad_(False)
    for p in parameters:
        p.requires_grad_(True)
    tokens = torch.cat([context.tokens for context, _, _ in scenes])
    ego = torch.cat([context.ego for context, _, _ in scenes])
    target = torch.stack([
        torch.softmax(confidence / temperature + torch.as_tensor(reward, dtype=torch.float32) / beta, dim=-1)
        for _, confidence, reward in scenes
    ])
    optimizer = torch.optim.Adam(parameters, lr=lr)

    def cross_entropy(rows: torch.Tensor) -> torch.Tensor:  # against pi*'s probabilities
        confidence = agent.planner(PlannerContext(tokens[rows], ego[rows]))["confidences"]
        return F.cross_entropy(confidence / temperature, target[rows])

    everything = torch.arange(len(scenes))
    with torch.no_grad():
        before = float(cross_entropy(everything))
    for _ in range(epochs):
        for rows in torch.randperm(len(scenes)).split(batch_size):
            loss = cross_entropy(rows)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    agent.eval()
    with torch.no_grad():
        return before, float(cross_entropy(everything))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vla", required=True, help="VLA checkpoint folder (or IL run folder)")
    parser.add_argument("--reward-model", default="rwm", help="the teacher: registered name or checkpoint folder")
    parser.add_argument("--train-scenes", type=int, default=2820)
    parser.add_argument("--test-scenes", type=int, default=150)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    agent = make_agent("vla", checkpoint=args.vla).eval()
    train = ScenePool("navtrain", agent.observation_config, args.data_root, args.train_scenes)
    test = ScenePool("navtest", agent.observation_config, args.data_root, args.test_scenes)
    rule = test.reward_model("epdms")
    def picked(scenes) -> float:  # mean true EPDMS of the most confident mode
        return float(np.mean([true[int(confidence.argmax())] for _, confidence, true in scenes]))

    before = picked(plan_scenes(agent, test, rule))
    teacher_scenes = plan_scenes(agent, train, train.reward_model(args.reward_model))
    loss_before, loss_after = distill(agent, teacher_scenes, args.temperature, args.beta, args.epochs, args.lr)
    result = {"before": before, "after": picked(plan_scenes(agent, test, rule)),
              "loss_before": loss_before, "loss_after": loss_after}
    print(f"navtest one-stage EPDMS of the confidence pick ({len(test.tokens)} scenes, teacher "
          f"{args.reward_model!r}, {len(train.tokens)} training scenes): before {result['before']:.4f}, "
          f"after {result['after']:.4f}; cross-entropy to the teacher's optimum {loss_before:.4f} -> "
          f"{loss_after:.4f}")
    return result


if __name__ == "__main__":
    main()
