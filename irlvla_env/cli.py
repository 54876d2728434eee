"""The `irlvla` command line.

Each sub-command group lives beside the code it drives and exposes `register(subparsers)`; this module only
collects them. Higher layers (agents, reward_models) are imported lazily here, so `irlvla_env` stays importable
on its own.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add sub-commands, in the order a user meets them.
COMMAND_MODULES = (
    "irlvla_env.synthetic.cli",  # data synth, data info, viz scene
    "irlvla_env.scoring.cli",  # score
    "agents.cli",  # train il, eval
    "reward_models.cli",  # train rwm, eval rwm
    "agents.ppo.cli",  # train rl
    "agents.pipeline",  # pipeline: all three stages, then the report
)


def command_group(sub: argparse._SubParsersAction, groups: dict, name: str, help: str) -> argparse._SubParsersAction:
    """The nested sub-parsers of a group such as `train` or `data`, created once and shared by every module."""
    if name not in groups:
        parser = sub.add_parser(name, help=help)
        groups[name] = parser.add_subparsers(dest=f"{name}_command", required=True)
    return groups[name]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="irlvla", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that part of the project is not built yet
            raise
        module.register(sub, groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
