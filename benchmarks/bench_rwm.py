"""Throughput of the Reward World Model against the rule-based EPDMS scorer, side by side, on the same candidates.

Both answer the same `RewardModel.predict` call on every candidate of the same scenes. The scorer reads metric
caches that are already built (labelling built them), so neither side pays for set-up.

    python benchmarks/bench_rwm.py                       # the latest trained `rwm`, navtest labels
    python benchmarks/bench_rwm.py --reward-model PATH --scenes 16 --threads 2
    python benchmarks/bench_rwm.py --untrained            # shape-only: a fresh RWM (no training needed)
    python benchmarks/bench_rwm.py --untrained --candidate-head attention
    python benchmarks/bench_rwm.py --device cuda         # the RWM on a GPU, the scorer on the same machine's CPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from irlvla_env.rewards import EPDMSReward, make_reward_model
from reward_models.evaluate import flatten_scenes
from reward_models.labelling import LabelledScenes, LabellingConfig
from reward_models.model import CANDIDATE_HEADS, RewardWorldModel, RWMConfig, RWMRewardModel, observation_shapes


def timed(model, observations, trajectories, tokens, repeats: int) -> float:
    """Best-of-`repeats` seconds of one predict call (after a warm-up call); predictions come back as numpy, so
    a GPU model's time includes its kernels and the copy back."""
    model.predict(observations, trajectories, tokens)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(observations, trajectories, tokens)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reward-model", default="rwm", help="registered name or checkpoint folder")
    parser.add_argument("--untrained", action="store_true", help="time a freshly initialised RWM instead")
    parser.add_argument("--candidate-head", default="cost_volume", choices=CANDIDATE_HEADS,
                        help="candidate head of the untrained RWM")
    parser.add_argument("--split", default="navtest", help="labelled split to take the candidates from")
    parser.add_argument("--labels-dir", help="labelled shards (default: the split's default labelling folder)")
    parser.add_argument("--scenes", type=int, default=8, help="scenes in the batch (all their candidates)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the scorer is single-threaded numpy)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="torch device of the RWM, e.g. cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    labelling = LabellingConfig(split=args.split)
    data = LabelledScenes.load(args.labels_dir or labelling.default_folder())
    scenes = np.arange(min(args.scenes, len(data)))
    observations, trajectories, tokens = flatten_scenes(data, scenes)
    if args.untrained:
        config = RWMConfig(candidate_head=args.candidate_head, camera_calibration=data.camera_calibration,
                           **observation_shapes(data.observations))  # the layout a trained model has
        rwm = RWMRewardModel(RewardWorldModel(config), name=f"rwm-untrained-{args.candidate_head}", device=args.device)
    else:
        rwm = make_reward_model(args.reward_model, device=args.device)
    scorer = EPDMSReward(metric_cache_root=labelling.resolved_metric_cache_root())

    t_rwm = timed(rwm, observations, trajectories, tokens, args.repeats)
    t_rule = timed(scorer, observations, trajectories, tokens, 1)
    n = len(trajectories)
    print(f"batch: {len(scenes)} scenes x {data.num_candidates} candidates = {n} trajectories, RWM on {args.device}, "
          f"torch threads {args.threads}")
    print(f"{'reward model':<24}{'seconds':>10}{'traj/s':>12}")
    print(f"{rwm.name:<24}{t_rwm:>10.4f}{n / t_rwm:>12.0f}")
    print(f"{'epdms (rule-based)':<24}{t_rule:>10.4f}{n / t_rule:>12.0f}")
    print(f"speed-up of the RWM: {t_rule / t_rwm:.0f}x")


if __name__ == "__main__":
    main()
