"""Imitation (behaviour-cloning) training of any registered agent, top to bottom in one file.

    irlvla train il --agent ego_status_mlp                  # CPU preset on the embedded synthetic data
    irlvla train il --agent transfuser --preset real         # one GPU, real NAVSIM ($OPENSCENE_DATA_ROOT)
    accelerate launch -m agents.training.il --agent transfuser --preset real   # several GPUs

The loop: cache every scene's features and targets once (per token, on disk), then AdamW with linear warm-up and
cosine decay, mixed precision on GPUs, TensorBoard scalars, a validation L2 on the held-out split, and an atomic
checkpoint every few epochs. Running the same command with the same `--run-dir` resumes from its last checkpoint.
The trained model lands in `<run_dir>/model/` (`config.json` + `model.safetensors`), which
`agents.registry.make_agent(name, checkpoint=run_dir)` loads.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from agents.abstract_agent import WEIGHTS_NAME, AbstractAgent, atomic_write_text
from agents.registry import make_agent
from agents.training.cache import CachedDataset, FeatureCache
from agents.training.config import ILConfig, add_arguments, config_from_args, resolve_roots
from irlvla_env import paths
from irlvla_env.navsim.loader import load_split

TRAINER_STATE = "trainer_state.pt"
LATEST = "latest"


# -- runtime: device, precision, optional multi-GPU -----------------------------------------------------------------


class Runtime:
    """Where and how tensors compute: plain torch on one device, or accelerate when launched on several processes."""

    def __init__(self, precision: str):
        self.accelerator = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            try:
                from accelerate import Accelerator
            except ModuleNotFoundError as err:
                raise RuntimeError("multi-process training needs accelerate: pip install 'irlvla[multigpu]'") from err
            mixed = {"auto": "bf16", "no": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
            self.accelerator = Accelerator(mixed_precision=mixed)
            self.device = self.accelerator.device
            self.dtype = None  # accelerate handles autocast and loss scaling itself
        else:
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            self.dtype = _autocast_dtype(precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

    @property
    def is_main(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    def prepare(self, *objects: Any) -> tuple[Any, ...]:
        if self.accelerator is None:
            return objects
        return tuple(self.accelerator.prepare(*objects))

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.accelerator is not None:
            return self.accelerator.autocast()
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
        """Backward, clip, optimizer step (with loss scaling for fp16)."""
        if self.accelerator is not None:
            self.accelerator.backward(loss)
            if grad_clip > 0:
                self.accelerator.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        elif self.scaler is not None:
            self.scaler.scale(loss).backward()
            if grad_clip > 0:
                self.scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        return value if self.accelerator is None else self.accelerator.reduce(value, reduction="sum")

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model if self.accelerator is None else self.accelerator.unwrap_model(model)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or precision == "no":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


# -- schedule, batches, metrics -----------------------------------------------------------------------------------


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float):
    """Linear warm-up to the optimizer's lr, then cosine decay to `min_ratio` of it at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def _loss_terms(loss: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    terms = loss if isinstance(loss, dict) else {"loss": loss}
    if "loss" not in terms:
        raise ValueError(f"compute_loss returned a dict without a 'loss' entry: {sorted(terms)}")
    return terms


@torch.no_grad()
def validate(model: torch.nn.Module, agent: AbstractAgent, loader: DataLoader, runtime: Runtime) -> dict[str, float]:
    """Mean loss terms, and the L2 (metres) between predicted and logged positions: average over poses and final."""
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    for features, targets in loader:
        features, targets = _to_device(features, runtime.device), _to_device(targets, runtime.device)
        with runtime.autocast():
            predictions = model(features)
            terms = _loss_terms(agent.compute_loss(features, targets, predictions))
        distance = torch.linalg.vector_norm(predictions["trajectory"][..., :2].float() - targets["trajectory"][..., :2], dim=-1)
        batch = distance.shape[0]
        values = {name: term.detach().float() * batch for name, term in terms.items()}
        values |= {"l2": distance.mean(-1).sum(), "l2_final": distance[:, -1].sum(), "count": torch.tensor(float(batch))}
        for name, value in values.items():
            sums[name] = sums.get(name, torch.zeros((), device=runtime.device)) + value.to(runtime.device)
    model.train()
    sums = {name: runtime.reduce_sum(value) for name, value in sums.items()}
    count = sums.pop("count").item()
    return {name: value.item() / count for name, value in sums.items()}


# -- checkpoints --------------------------------------------------------------------------------------------------


@dataclass
class TrainerState:
    epoch: int  # epochs completed
    step: int  # optimizer steps completed


def save_checkpoint(run_dir: Path, agent: AbstractAgent, optimizer, scheduler, runtime: Runtime, state: TrainerState, keep: int) -> Path:
    """Write `checkpoints/step_<n>/` through a temporary folder and a rename, then point `latest` at it."""
    root = run_dir / "checkpoints"
    final = root / f"step_{state.step:08d}"
    tmp = root / f".tmp-step_{state.step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    agent.save_pretrained(tmp)
    trainer = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": runtime.scaler.state_dict() if runtime.scaler is not None else {},
        "epoch": state.epoch,
        "step": state.step,
    }
    torch.save(trainer, tmp / TRAINER_STATE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(root / LATEST, final.name)
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old)
    return final


def load_checkpoint(run_dir: Path, agent: AbstractAgent, optimizer, scheduler, runtime: Runtime) -> TrainerState | None:
    """Restore the latest checkpoint of `run_dir` into the given objects; None when the run has none."""
    pointer = run_dir / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    folder = run_dir / "checkpoints" / pointer.read_text().strip()
    saved = json.loads((folder / "config.json").read_text()).get("agent")
    if saved != agent.name():
        raise ValueError(f"run folder {run_dir} holds a checkpoint of agent {saved!r}, not {agent.name()!r}")
    try:
        agent.load_state_dict(load_file(str(folder / WEIGHTS_NAME)), strict=True)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {folder} does not match the configured {agent.name()} architecture: {err}") from err
    trainer = torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    if runtime.scaler is not None and trainer["scaler"]:
        runtime.scaler.load_state_dict(trainer["scaler"])
    return TrainerState(epoch=trainer["epoch"], step=trainer["step"])


# -- the training run ---------------------------------------------------------------------------------------------


def default_run_dir(agent: str) -> Path:
    return paths.exp_root() / "il" / agent / datetime.now().strftime("%Y.%m.%d.%H.%M.%S")


def cache_root(config: ILConfig, data_root: Path) -> Path:
    """One cache per dataset, so two data roots with overlapping tokens never share files."""
    if config.cache_dir is not None:
        return Path(config.cache_dir)
    digest = hashlib.sha1(str(data_root.resolve()).encode()).hexdigest()[:10]
    return paths.exp_root() / "cache" / "il" / digest


def train(config: ILConfig) -> dict[str, Any]:
    """Train `config.agent` by imitation; return the final metrics (also written to `<run_dir>/metrics.json`)."""
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    runtime = Runtime(config.precision)
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config.agent)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "il_config.json", json.dumps(config.to_dict(), indent=2))

    # ---- data: cache features and targets once per token
    agent = make_agent(config.agent, **config.agent_kwargs)
    data_root, maps_root = resolve_roots(config.data_root, config.maps_root)
    cache = FeatureCache(cache_root(config, data_root), agent.get_feature_builders(), agent.get_target_builders())
    tokens: dict[str, list[str]] = {}
    for split, cap in ((config.train_split, config.max_train_scenes), (config.val_split, config.max_val_scenes)):
        scenes = load_split(split, data_root, agent.get_sensor_config(), maps_root)
        if len(scenes) == 0:
            raise ValueError(f"split {split!r} under {data_root} has no scenes; nothing to train or validate on")
        tokens[split] = scenes.spread_tokens(cap)  # a cap still covers every log
        if runtime.is_main:
            cache.build(scenes, tokens[split], num_workers=config.num_workers, progress=config.progress)
    if runtime.accelerator is not None:
        runtime.accelerator.wait_for_everyone()
    if hasattr(agent, "fit_anchors"):  # anchored planners (the VLA) take k-means anchors of the training futures
        futures = [cache.load(token)[1]["trajectory"].numpy() for token in tokens[config.train_split]]
        agent.fit_anchors(np.stack(futures), seed=config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    train_data = DataLoader(
        CachedDataset(cache, tokens[config.train_split], config.in_memory),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(tokens[config.train_split]) > config.batch_size,
        num_workers=config.num_workers,
        generator=generator,
    )
    val_data = DataLoader(
        CachedDataset(cache, tokens[config.val_split], config.in_memory),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
    )

    # ---- optimisation: the agent's optimizer, our warm-up + cosine schedule
    agent.to(runtime.device).train()
    optimizer = agent.get_optimizers()
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    if config.lr is not None:  # rescale every group, so groups with their own lr ratio (e.g. a VLM) keep it
        scale = config.lr / optimizer.param_groups[0]["lr"]
        for group in optimizer.param_groups:
            group["lr"] *= scale
    total_steps = config.epochs * len(train_data)
    scheduler = warmup_cosine(optimizer, min(config.warmup_steps, max(1, total_steps // 10)), total_steps, config.min_lr_ratio)
    state = load_checkpoint(run_dir, agent, optimizer, scheduler, runtime) or TrainerState(epoch=0, step=0)
    model, optimizer, train_data, val_data = runtime.prepare(agent, optimizer, train_data, val_data)
    writer = SummaryWriter(run_dir / "tb") if runtime.is_main else None

    # ---- the loop
    metrics: dict[str, Any] = {}
    started = time.perf_counter()
    for epoch in range(state.epoch, config.epochs):
        generator.manual_seed(config.seed + epoch)  # the shuffle of an epoch is the same after a resume
        bar = tqdm(train_data, desc=f"{config.agent} epoch {epoch + 1}/{config.epochs}", disable=not (config.progress and runtime.is_main))
        for features, targets in bar:
            features, targets = _to_device(features, runtime.device), _to_device(targets, runtime.device)
            with runtime.autocast():
                predictions = model(features)
                terms = _loss_terms(agent.compute_loss(features, targets, predictions))
            runtime.step(terms["loss"], model, optimizer, config.grad_clip)
            scheduler.step()
            state.step += 1
            bar.set_postfix(loss=f"{terms['loss'].item():.3f}")
            if writer is not None and state.step % config.log_every == 0:
                for name, value in terms.items():
                    writer.add_scalar(f"train/{name}", value.item(), state.step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], state.step)
        state.epoch = epoch + 1
        last_epoch = state.epoch == config.epochs
        if state.epoch % config.val_every == 0 or last_epoch:
            metrics = validate(model, agent, val_data, runtime)
            if writer is not None:
                for name, value in metrics.items():
                    writer.add_scalar(f"val/{name}", value, state.step)
            bar.write(f"epoch {state.epoch}: val L2 {metrics['l2']:.3f} m (final pose {metrics['l2_final']:.3f} m)")
        if runtime.is_main and (state.epoch % config.checkpoint_every == 0 or last_epoch):
            save_checkpoint(run_dir, runtime.unwrap(model), optimizer, scheduler, runtime, state, config.keep_checkpoints)

    # ---- the result
    if not metrics:  # resumed after the last epoch: report the saved model's score
        metrics = validate(model, agent, val_data, runtime)
    result = {
        "agent": config.agent,
        "run_dir": str(run_dir),
        "epochs": state.epoch,
        "steps": state.step,
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_scenes": len(tokens[config.train_split]),
        "val_scenes": len(tokens[config.val_split]),
        **{f"val_{name}": value for name, value in metrics.items()},
    }
    if runtime.is_main:
        runtime.unwrap(model).save_pretrained(run_dir / "model")
        atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2))
        writer.close()
    return result


# -- command line -------------------------------------------------------------------------------------------------


def run_from_args(args: argparse.Namespace) -> int:
    result = train(config_from_args(args))
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.training.il", description="Imitation training of an agent.")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
