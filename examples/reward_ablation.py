"""The same agent under two reward models: how far does the learned RWM agree with the rule-based EPDMS?

    python examples/reward_ablation.py --rewards epdms rwm --agent constant_velocity

Each reward model is one argument of the environment; the agent is any registered agent.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import irlvla_env  # noqa: F401  (registers the ids)
from agents.registry import make_agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rewards", nargs="+", default=["epdms", "rwm"])
    parser.add_argument("--agent", default="constant_velocity")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--scenes", type=int, default=32)
    args = parser.parse_args()

    agent = make_agent(args.agent, checkpoint=args.checkpoint)
    agent.initialize()
    results = {}
    for reward in args.rewards:
        env = gym.make("irlvla_env:IRLVLA-NAVSIM-v2", reward_model=reward, max_scenes=args.scenes)
        pool = env.unwrapped.scene_pool
        values = []
        for token in pool.tokens:
            env.reset(options={"token": token})
            plan = agent.compute_trajectory(pool.loader.get_agent_input_from_token(token),
                                            pool.loader.get_scene_from_token(token) if agent.requires_scene else None)
            _, reward_value, _, _, _ = env.step(plan.poses)
            values.append(reward_value)
        results[reward] = np.array(values)
        print(f"{args.agent} under {reward:>10}: mean reward {results[reward].mean():.3f} over {len(values)} scenes")
    if len(results) == 2:
        a, b = results.values()
        print(f"Pearson correlation between the two rewards per scene: {np.corrcoef(a, b)[0, 1]:.3f}")


if __name__ == "__main__":
    main()
