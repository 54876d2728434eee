"""Stock Stable-Baselines3 PPO (MultiInputPolicy: NatureCNN on the camera, MLPs on the rest) on IRLVLA-NAVSIM.

    python examples/sb3_ppo.py --env IRLVLA-NAVSIM-EPDMS-v2 --timesteps 2048

Nothing project-specific is needed beyond the wrappers that turn images channel-first and the trajectory into
a flat symmetric box: a plain SB3 agent plugs in. The vectorised env scores all sub-environments with one
reward-model call.
"""

from __future__ import annotations

import argparse

import numpy as np
from stable_baselines3 import PPO

from irlvla_env.envs.registration import ENV_IDS
from irlvla_env.envs.vector_env import NavsimVectorEnv
from irlvla_env.envs.wrappers import SB3NavsimVecEnv


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="IRLVLA-NAVSIM-EPDMS-v2", choices=[k for k, v in ENV_IDS.items() if v["mode"] == "single"])
    parser.add_argument("--timesteps", type=int, default=2048)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--max-scenes", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, help="dataset root (default: $OPENSCENE_DATA_ROOT or the synthetic world)")
    args = parser.parse_args(argv)

    venv = SB3NavsimVecEnv(NavsimVectorEnv(args.num_envs, max_scenes=args.max_scenes, data_root=args.data_root,
                                           **ENV_IDS[args.env]))
    venv.seed(args.seed)
    model = PPO("MultiInputPolicy", venv, n_steps=64, batch_size=128, n_epochs=4, learning_rate=3e-4,
                policy_kwargs={"net_arch": [64, 64]}, seed=args.seed, verbose=0)
    before = evaluate(model, venv)
    model.learn(total_timesteps=args.timesteps, progress_bar=False)
    after = evaluate(model, venv)
    print(f"mean reward of the deterministic policy: before {before:.3f}, after {after:.3f} ({args.timesteps} steps)")
    return after


def evaluate(model: PPO, venv: SB3NavsimVecEnv, rounds: int = 8) -> float:
    obs = venv.reset()
    rewards = []
    for _ in range(rounds):
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, _, _ = venv.step(action)
        rewards.append(reward)
    return float(np.mean(rewards))


if __name__ == "__main__":
    main()
