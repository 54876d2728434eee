"""`irlvla train il`, `irlvla guide` and `irlvla eval`. Heavy imports (torch, the scorer) wait until a command runs."""

from __future__ import annotations

import argparse

from agents.training.config import add_arguments as add_il_arguments
from irlvla_env.cli import command_group


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    train = command_group(sub, groups, "train", "train a policy or a reward model")
    il = train.add_parser("il", help="imitation-train an agent (features cached per scene, resumable)")
    add_il_arguments(il)
    il.set_defaults(func=_train_il)

    guide = sub.add_parser("guide", help="pair a trained VLA with a trained RWM that chooses its executed mode")
    guide.add_argument("--vla", required=True, help="VLA checkpoint (IL run, or an RL run's model/)")
    guide.add_argument("--reward-model", required=True, help="RWM checkpoint folder")
    guide.add_argument("--weight", type=float, default=None, help="w in argmax(confidence + w * reward) (default 80)")
    guide.add_argument("--out", required=True, help="checkpoint folder to write; score it with "
                       "`irlvla eval --agents vla_reward_guided=OUT`")
    guide.set_defaults(func=_guide)

    evaluate = sub.add_parser("eval", help="score agents with the rule-based EPDMS and write the table")
    evaluate.add_argument(
        "--agents",
        required=True,
        help="comma-separated agents, each NAME or NAME=CHECKPOINT (a model or IL run folder); "
        "a learnable agent without a checkpoint uses its latest IL run",
    )
    evaluate.add_argument("--split", default="navtest", help="split to score (default navtest)")
    evaluate.add_argument("--max-scenes", type=int, help="score N scenes spread over every log (runs of consecutive scenes)")
    evaluate.add_argument("--data-root", help="dataset root (default $OPENSCENE_DATA_ROOT or the synthetic data)")
    evaluate.add_argument("--maps-root", help="map root (default $NUPLAN_MAPS_ROOT or <data-root>/maps)")
    evaluate.add_argument("--run-dir", help="output folder (default <exp_root>/eval/<timestamp>)")
    evaluate.add_argument("--metric-cache", help="metric cache root (default <exp_root>/metric_cache)")
    evaluate.add_argument("--workers", type=int, default=1, help="scoring processes (more than 1 uses Ray)")
    evaluate.set_defaults(func=_evaluate)


def _train_il(args: argparse.Namespace) -> int:
    from agents.training.il import run_from_args

    return run_from_args(args)


def _guide(args: argparse.Namespace) -> int:
    from agents.reward_guided import DEFAULT_REWARD_WEIGHT, RewardGuidedAgent

    weight = DEFAULT_REWARD_WEIGHT if args.weight is None else args.weight
    folder = RewardGuidedAgent.assemble(args.out, args.vla, args.reward_model, weight)
    print(f"[guide] wrote {folder}: score it with `irlvla eval --agents vla_reward_guided={folder}`")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from agents.evaluate import run_from_args

    return run_from_args(args)
