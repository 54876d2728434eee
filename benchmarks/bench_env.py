"""Env steps per second in `single` mode: one env vs the batched vector env, RWM vs rule-based reward.

    .venv/bin/python benchmarks/bench_env.py [--scenes 64] [--num-envs 64] [--rwm PATH]

Observations are cached in memory first (as in RL), so the figures measure the step function: the reward call.
The reference column is the rule-based EPDMS reward (the simulator-based scorer the RWM replaces).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from irlvla_env.envs.navsim_env import NavsimEnv
from irlvla_env.envs.scene_pool import ScenePool
from irlvla_env.envs.vector_env import NavsimVectorEnv
from irlvla_env.observations import ObservationConfig


def plans(n: int, rng: np.random.Generator) -> np.ndarray:
    t = 0.5 * np.arange(1, 9, dtype=np.float32)
    speed = rng.uniform(0, 12, size=(n, 1)).astype(np.float32)
    out = np.zeros((n, 8, 3), np.float32)
    out[..., 0] = speed * t
    return out


def single_rate(pool: ScenePool, reward: str, seconds: float) -> float:
    env = NavsimEnv(reward_model=reward, scene_pool=pool)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.step(plans(1, rng)[0])
        env.reset()
        steps += 1
    return steps / (time.perf_counter() - start)


def vector_rate(pool: ScenePool, reward: str, num_envs: int, seconds: float) -> float:
    venv = NavsimVectorEnv(num_envs=num_envs, reward_model=reward, scene_pool=pool)
    rng = np.random.default_rng(0)
    venv.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        venv.step(plans(num_envs, rng))
        steps += num_envs
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rwm", default="rwm", help="RWM name or checkpoint folder")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()

    pool = ScenePool("navtest", ObservationConfig(), data_root=args.data_root, max_scenes=args.scenes)
    for token in pool.tokens:  # warm caches: observations (and metric caches through one scoring pass below)
        pool.observation(token)
    warm = NavsimVectorEnv(num_envs=len(pool), reward_model="epdms", scene_pool=pool)
    warm.reset(options={"tokens": pool.tokens})
    warm.step(plans(len(pool), np.random.default_rng(1)))

    rows = []
    for reward in (args.rwm, "epdms"):
        rows.append((reward, single_rate(pool, reward, args.seconds), vector_rate(pool, reward, args.num_envs, args.seconds)))
    print(f"{'reward model':>24} | {'single env steps/s':>18} | {f'vector ({args.num_envs}) steps/s':>22} | vector/single")
    for name, single, vector in rows:
        print(f"{name:>24} | {single:18.1f} | {vector:22.1f} | {vector / single:12.1f}x")
    (rwm_name, rwm_single, rwm_vector), (_, rule_single, rule_vector) = rows
    print(f"RWM vs rule-based reward: single {rwm_single / rule_single:.1f}x, vector {rwm_vector / rule_vector:.1f}x "
          f"(target: >= 2000 vectorised RWM steps/s on 2 cores; measured {rwm_vector:.0f})")


if __name__ == "__main__":
    main()
