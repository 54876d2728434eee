"""`irlvla train rl`: stage 3, DPPO fine-tuning of the VLA's diffusion planner on the learned environment.

Heavy imports (torch, SB3, the VLA) wait until the command runs.
"""

from __future__ import annotations

import argparse
import json

from irlvla_env.cli import command_group


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    train = command_group(sub, groups, "train", "train a policy or a reward model")
    rl = train.add_parser("rl", help="fine-tune an imitation-trained VLA by PPO on the learned env (resumable)")
    rl.add_argument("--il-checkpoint", required=True, help="VLA checkpoint folder (or IL run folder) to start from")
    rl.add_argument("--reward-model", default="rwm",
                    help="rwm (default), an ablation name, epdms (the rule-based scorer), or a checkpoint folder")
    rl.add_argument("--timesteps", type=int, help="environment steps in total (default: RLConfig's)")
    rl.add_argument("--seed", type=int, help="random seed")
    rl.add_argument("--max-scenes", type=int, help="use only the first N training scenes")
    rl.add_argument("--num-envs", type=int, help="parallel scenes per rollout step")
    rl.add_argument("--data-root", help="dataset root (default $OPENSCENE_DATA_ROOT or the synthetic data)")
    rl.add_argument("--run-dir", help="output folder (default <exp_root>/rl/<timestamp>); an existing one resumes")
    rl.add_argument("--config", type=json.loads, default={}, metavar="JSON",
                    help='any other RLConfig fields as a JSON object, e.g. \'{"learning_rate": 3e-5, "bc_coef": 0.5}\'')
    rl.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    rl.set_defaults(func=_train_rl)


def _train_rl(args: argparse.Namespace) -> int:
    from agents.ppo.config import RLConfig
    from agents.ppo.train import train_rl

    overrides = {
        "reward_model": args.reward_model,
        "total_timesteps": args.timesteps,
        "seed": args.seed,
        "max_scenes": args.max_scenes,
        "num_envs": args.num_envs,
        "data_root": args.data_root,
    }
    config = RLConfig.from_dict({**args.config, **{k: v for k, v in overrides.items() if v is not None}})
    summary = train_rl(config, args.il_checkpoint, args.run_dir, progress=not args.no_progress)
    brief = {k: v for k, v in summary.items() if k not in ("rollouts", "audit")}
    brief["last_audit"] = summary["audit"][-1] if summary["audit"] else None
    print(json.dumps(brief, indent=2))
    print(f"evaluate it with: irlvla eval --agents vla={summary['exported']}")
    return 0
