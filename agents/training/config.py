"""The one typed config of imitation training, with a preset per machine.

`ILConfig.preset("cpu")` (the default) trains on the embedded synthetic data on two CPU cores in minutes;
`ILConfig.preset("real")` holds the sizes meant for real NAVSIM (navtrain, 103k scenes) on GPUs, close to navsim's
own training defaults (batch 64, 100 epochs at most, mixed precision).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from irlvla_env import paths

Precision = Literal["auto", "no", "bf16", "fp16"]


@dataclass
class ILConfig:
    """Imitation (behaviour cloning) training of one registered agent."""

    agent: str = "ego_status_mlp"
    """registered agent name (`agents.registry.AGENT_CLASSES`)"""
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    """constructor arguments of the agent (sizes, loss weights)"""
    train_split: str = "navtrain"
    """split the agent learns from"""
    val_split: str = "navtest"
    """held-out split for the validation L2"""
    max_train_scenes: int | None = None
    """cap on training scenes (None: all)"""
    max_val_scenes: int | None = 200
    """cap on validation scenes (None: all)"""
    data_root: str | None = None
    """dataset root (None: `irlvla_env.paths.data_root()`)"""
    maps_root: str | None = None
    """map root (None: `$NUPLAN_MAPS_ROOT`, else `<data_root>/maps` where the synthetic generator writes them)"""
    run_dir: str | None = None
    """output folder (None: `<exp_root>/il/<agent>/<timestamp>`); an existing run resumes from its last checkpoint"""
    cache_dir: str | None = None
    """feature/target cache (None: `<exp_root>/cache/il`)"""

    epochs: int = 20
    """passes over the training split"""
    batch_size: int = 32
    lr: float | None = 1e-3
    """peak learning rate of the optimizer's first parameter group, the others keep their ratio to it
    (None: the agent's own from `get_optimizers`)"""
    warmup_steps: int = 50
    """linear warm-up before the cosine decay"""
    min_lr_ratio: float = 0.05
    """the cosine ends at `lr * min_lr_ratio`"""
    grad_clip: float = 1.0
    """max gradient norm (0: off)"""
    precision: Precision = "auto"
    """mixed precision: auto = bf16 on GPUs that support it, fp16 on other GPUs, none on CPU"""
    num_workers: int = 0
    """DataLoader workers (also used to build the cache in parallel)"""
    in_memory: bool = True
    """hold the cached samples in RAM (off for real NAVSIM, whose camera features do not fit)"""
    num_threads: int | None = None
    """torch CPU threads (None: torch's default, one per core; use 1 on a machine other jobs share)"""
    seed: int = 0

    val_every: int = 1
    """epochs between validations"""
    checkpoint_every: int = 1
    """epochs between checkpoints"""
    keep_checkpoints: int = 2
    """how many recent checkpoints to keep"""
    log_every: int = 10
    """optimizer steps between TensorBoard scalars"""
    progress: bool = True
    """show tqdm progress bars"""

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ILConfig":
        """A named preset (`cpu` or `real`) with `overrides` applied."""
        if name not in PRESETS:
            raise ValueError(f"unknown IL preset {name!r}; choose one of {', '.join(PRESETS)}")
        config = dataclasses.replace(cls(**PRESETS[name]), **overrides)
        if name == "real" and "agent_kwargs" not in overrides:
            config.agent_kwargs = dict(REAL_AGENT_KWARGS.get(config.agent, {}))
        if name == "real" and "batch_size" not in overrides:
            config.batch_size = REAL_BATCH_SIZE.get(config.agent, config.batch_size)
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # Embedded synthetic data on 2 CPU cores: small batches, few epochs, no workers.
    "cpu": {},
    # Real NAVSIM on GPUs (launch with `accelerate launch -m agents.training.il ...` for several):
    # navsim trains TransFuser with batch 64, lr 1e-4, 100 epochs at most and 16-bit precision.
    "real": {
        "max_val_scenes": None,
        "epochs": 60,
        "batch_size": 64,
        "lr": 2e-4,
        "warmup_steps": 1000,
        "num_workers": 8,
        "in_memory": False,
        "log_every": 50,
        "keep_checkpoints": 3,
    },
}

def resolve_roots(data_root: str | Path | None, maps_root: str | Path | None) -> tuple[Path, Path]:
    """Dataset and map roots: explicit paths win, then navsim's variables, then the synthetic layout."""
    data = Path(data_root).expanduser() if data_root else paths.data_root()
    if maps_root:
        return data, Path(maps_root).expanduser()
    if os.environ.get("NUPLAN_MAPS_ROOT"):
        return data, paths.maps_root()
    return data, data / "maps"


# Per-agent batch of the `real` preset where the preset's 64 does not fit one GPU. Measured with
# `benchmarks/bench_train_step.py --preset real --device cuda` on an H200 (bf16): the VLA's peak memory is 21 / 39 /
# 73 / 142 GB at batch 8 / 16 / 32 / 64 (the SmolVLM-sized tower sees 4 tiles of 512² per sample), so 64 exceeds
# even 141 GB once the allocator fragments, and 32 fits an 80 GB H100.
REAL_BATCH_SIZE: dict[str, int] = {"vla": 32}

# Agent sizes of the `real` preset. TransFuser: navsim's camera (1024x256 strip) and LiDAR grid (256x256 at
# 0.25 m), its 30 agent queries and 128x256 BEV map, with backbones and fusion larger than the CPU default.
REAL_AGENT_KWARGS: dict[str, dict[str, Any]] = {
    # VLA: `VLAConfig.real()` (random SmolVLM-sized VLM unless `--agent-kwargs '{"preset": "real", "vlm_path": DIR}'`).
    "vla": {"preset": "real"},
    "transfuser": {
        "observation": {"image_height": 256, "image_width": 1024, "lidar_bev_size": 256},
        "channels": [64, 128, 256, 512],
        "d_model": 256,
        "num_heads": 8,
        "encoder_layers": 4,
        "decoder_layers": 3,
        "image_tokens": [8, 32],
        "lidar_tokens": [8, 8],
        "num_agent_queries": 30,
        "bev_size": [128, 256],
        "bev_resolution": 0.25,
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", required=True, help="registered agent name, e.g. ego_status_mlp, transfuser, vla")
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="size preset (default: cpu)")
    parser.add_argument("--agent-kwargs", type=json.loads, default=None, help="JSON object of agent constructor arguments")
    parser.add_argument("--train-split", help="training split (default navtrain)")
    parser.add_argument("--val-split", help="validation split (default navtest)")
    parser.add_argument("--max-train-scenes", type=int)
    parser.add_argument("--max-val-scenes", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--precision", choices=["auto", "no", "bf16", "fp16"])
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--num-threads", type=int, help="torch CPU threads (default: one per core)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--data-root", help="dataset root (default $OPENSCENE_DATA_ROOT or the synthetic data)")
    parser.add_argument("--maps-root", help="map root (default $NUPLAN_MAPS_ROOT or <data-root>/maps)")
    parser.add_argument("--run-dir", help="output folder; an existing one resumes from its last checkpoint")
    parser.add_argument("--cache-dir", help="feature cache folder")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def config_from_args(args: argparse.Namespace) -> ILConfig:
    overrides = {
        name: getattr(args, name)
        for name in (
            "agent", "agent_kwargs", "train_split", "val_split", "max_train_scenes", "max_val_scenes", "epochs",
            "batch_size", "lr", "precision", "num_workers", "num_threads", "seed", "data_root", "maps_root", "run_dir", "cache_dir",
        )
        if getattr(args, name) is not None
    }
    if args.no_progress:
        overrides["progress"] = False
    return ILConfig.preset(args.preset, **overrides)
