"""A random agent on IRLVLA-NAVSIM: the smallest loop that touches the environment.

    python examples/random_agent.py --env IRLVLA-NAVSIM-EPDMS-v2 --episodes 5

The action space's `sample()` is a random trajectory; a slightly smarter random agent drives straight ahead
at a random speed, which is what this script does so the reward has something to distinguish.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import irlvla_env  # noqa: F401  (registers the ids)


def straight_plan(speed: float) -> np.ndarray:
    t = 0.5 * np.arange(1, 9, dtype=np.float32)
    return np.stack([speed * t, np.zeros(8, np.float32), np.zeros(8, np.float32)], axis=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="IRLVLA-NAVSIM-EPDMS-v2")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--max-scenes", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, help="dataset root (default: $OPENSCENE_DATA_ROOT or the synthetic world)")
    args = parser.parse_args(argv)

    env = gym.make(args.env, max_scenes=args.max_scenes, data_root=args.data_root)
    rng = np.random.default_rng(args.seed)
    obs, info = env.reset(seed=args.seed)
    for episode in range(args.episodes):
        action = straight_plan(float(rng.uniform(0.0, 15.0)))
        obs, reward, terminated, truncated, info = env.step(action)
        subs = " ".join(f"{k}={'n/a' if v is None else f'{v:.2f}'}" for k, v in info.get("subscores", {}).items())
        print(f"episode {episode} scene {info['token']} reward {reward:.3f} | {subs}")
        if terminated or truncated:
            obs, info = env.reset()
    env.close()


if __name__ == "__main__":
    main()
