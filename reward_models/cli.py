"""`irlvla train rwm` and `irlvla eval-rwm`.

`eval-rwm` is a top-level command because `irlvla eval` (agents/cli.py) is a plain command that scores agents.
Heavy imports wait until a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from irlvla_env.cli import command_group


def _common(parser: argparse.ArgumentParser, split: str) -> None:
    parser.add_argument("--split", default=split, help=f"split whose candidates are labelled (default {split})")
    parser.add_argument("--max-scenes", type=int, help="use only the first N scenes")
    parser.add_argument("--data-root", help="dataset root (default $OPENSCENE_DATA_ROOT or the synthetic data)")
    parser.add_argument("--maps-root", help="map root (default $NUPLAN_MAPS_ROOT or the synthetic maps)")
    parser.add_argument("--labels-dir", help="labelled shards folder (default <exp_root>/rwm_labels/<split>-<digest>)")
    parser.add_argument("--workers", type=int, default=1, help="parallel labelling workers (Ray when > 1)")
    parser.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    train = command_group(sub, groups, "train", "train a policy or a reward model")
    rwm = train.add_parser("rwm", help="label candidates with the rule-based scorer, then train the Reward World Model")
    _common(rwm, "navtrain")
    rwm.add_argument("--variant", default="rwm", help="rwm or an ablation: rwm-irl-only, rwm-supervised-only, "
                     "rwm-no-camera, rwm-no-lidar, rwm-map-head, rwm-mirror, rwm-large")
    rwm.add_argument("--run-name", default="default", help="run folder; an existing one resumes")
    rwm.add_argument("--epochs", type=int, help="training epochs")
    rwm.add_argument("--batch-scenes", type=int, help="scenes per batch")
    rwm.add_argument("--lr", type=float, help="peak learning rate")
    rwm.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    rwm.set_defaults(func=_train)

    evaluate = sub.add_parser("eval-rwm", help="fidelity and speed of a reward model against the rule-based EPDMS")
    _common(evaluate, "navtest")
    evaluate.add_argument("--reward-model", default="rwm", help="registered name or checkpoint folder (default rwm)")
    evaluate.add_argument("--output", help="output folder (default <exp_root>/rwm_eval/<model name>)")
    evaluate.set_defaults(func=_evaluate)


def _labelling(args: argparse.Namespace):
    from reward_models.labelling import LabellingConfig

    return LabellingConfig(split=args.split, data_root=args.data_root, maps_root=args.maps_root, max_scenes=args.max_scenes,
                           num_workers=args.workers, ray_address=args.ray_address)


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from reward_models.train import RWMTrainConfig, prepare_labels, train_rwm

    overrides = {k: v for k, v in {"epochs": args.epochs, "batch_scenes": args.batch_scenes, "lr": args.lr}.items()
                 if v is not None}
    config = RWMTrainConfig.for_variant(args.variant, run_name=args.run_name, labels_dir=args.labels_dir,
                                        num_threads=args.threads, labelling=_labelling(args), **overrides)
    config = replace(config, labels_dir=str(prepare_labels(config)))
    best = train_rwm(config, progress=not args.no_progress)
    print(f"best model: {best}\nuse it with reward_model={args.variant!r} or reward_model={str(best)!r}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from irlvla_env.paths import exp_root
    from irlvla_env.rewards import EPDMSReward, make_reward_model
    from reward_models.evaluate import evaluate_rwm, format_report
    from reward_models.labelling import LabelledScenes
    from reward_models.train import RWMTrainConfig, prepare_labels

    model = make_reward_model(args.reward_model)
    config = RWMTrainConfig(labels_dir=args.labels_dir, labelling=_labelling(args))
    labels_dir = prepare_labels(config)
    output = Path(args.output) if args.output else exp_root() / "rwm_eval" / model.name
    rule_based = EPDMSReward(metric_cache_root=config.labelling.resolved_metric_cache_root())
    report = evaluate_rwm(model, LabelledScenes.load(labels_dir), output, rule_based=rule_based)
    print(format_report(report))
    print(f"written: {output / 'metrics.json'}, {output / 'calibration.png'}")
    return 0
