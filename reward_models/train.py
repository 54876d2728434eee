"""Train a Reward World Model: build the vocabulary, label navtrain candidates (cached), then optimise the RWM loss.

Read top to bottom: `RWMTrainConfig` (one typed config, ablation variants are overrides of it) -> `prepare_labels`
-> `train_rwm` (epoch loop with tqdm, TensorBoard, atomic checkpoints and resume). Output layout:

    exp_root()/<variant>/runs/<run>/checkpoint-<epoch>/   weights + optimiser + trainer state (resume point)
    exp_root()/<variant>/runs/<run>/best-<epoch>/         the best model by validation EPDMS correlation
    exp_root()/<variant>/runs/<run>/tensorboard/
    exp_root()/<variant>/latest -> runs/<run>/best-<epoch> (what `make_reward_model("<variant>")` loads)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from irlvla_env.paths import exp_root
from reward_models.augment import mirror_grids, mirror_observations, mirror_trajectories
from reward_models.candidates import ensure_vocabulary
from reward_models.evaluate import fidelity_metrics
from reward_models.irl import RWMLossConfig, map_loss, rwm_loss
from reward_models.labelling import LabelledScenes, LabellingConfig, label_split
from reward_models.model import RewardWorldModel, RWMConfig, RWMPrediction, observation_shapes, observations_to_tensors
from reward_models.scene_targets import SceneTargets, ensure_scene_targets

# Ablation variants: overrides of the default config (its `model`, `loss`, and top-level `train` fields), by name.
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "rwm": {},
    "rwm-irl-only": {
        "loss": {"supervised_weight": 0.0, "epdms_weight": 0.0, "ranking_weight": 0.0},
        "model": {"reward_source": "irl"},
    },
    "rwm-supervised-only": {"loss": {"irl_weight": 0.0}},
    "rwm-no-camera": {"model": {"use_camera": False}},
    "rwm-no-lidar": {"model": {"use_lidar": False}},
    "rwm-map-head": {"model": {"map_head": True}},
    "rwm-mirror": {"train": {"mirror_probability": 0.5}},
    # the three together, the best navtest fidelity measured (README): 2-3x the default's training time
    "rwm-large": {"model": {"map_head": True, "width": 128, "trunk_width": 256, "head_width": 128},
                  "train": {"mirror_probability": 0.5}},
}


@dataclass
class RWMTrainConfig:
    """Everything one training run depends on.

    :param variant: names the output folder and selects ablation overrides (`VARIANTS`).
    :param run_name: run folder under the variant; re-using it resumes.
    :param labels_dir: labelled shards (default `exp_root()/rwm_labels/<split>-<settings digest>`).
    :param vocabulary_path: planning vocabulary .npy (default `exp_root()/rwm_labels/vocabulary-navtrain-<size>.npy`,
        k-means of all navtrain human futures; evaluation on navtest reuses it).
    :param epochs, batch_scenes, lr, weight_decay, grad_clip: optimisation.
    :param candidates_per_step: candidates per scene in a training step (the demonstration is always kept).
    :param val_fraction: scenes held out to pick the best epoch.
    :param mirror_probability: chance that a training scene is mirrored left-right with its candidates (and map
        targets) in a step (`augment.py`); 0 (default) never mirrors.
    :param num_threads: torch CPU threads.
    """

    variant: str = "rwm"
    run_name: str = "default"
    labels_dir: str | None = None
    vocabulary_path: str | None = None
    vocabulary_size: int = 256
    epochs: int = 30
    batch_scenes: int = 16
    candidates_per_step: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    mirror_probability: float = 0.0
    seed: int = 0
    num_threads: int = 2
    device: str = "cpu"
    model: RWMConfig = field(default_factory=RWMConfig)
    loss: RWMLossConfig = field(default_factory=RWMLossConfig)
    labelling: LabellingConfig = field(default_factory=LabellingConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.mirror_probability <= 1.0:
            raise ValueError(f"RWMTrainConfig.mirror_probability must be in [0, 1], got {self.mirror_probability}")

    @classmethod
    def for_variant(cls, variant: str, **overrides: Any) -> "RWMTrainConfig":
        """The default config with the variant's ablation overrides, then `overrides` (top-level fields)."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown RWM variant {variant!r}; known: {sorted(VARIANTS)}")
        config = cls(variant=variant)
        parts = VARIANTS[variant]
        config.model = replace(config.model, **parts.get("model", {}))
        config.loss = replace(config.loss, **parts.get("loss", {}))
        return replace(config, **{**parts.get("train", {}), **overrides})

    @property
    def variant_dir(self) -> Path:
        return exp_root() / self.variant

    @property
    def run_dir(self) -> Path:
        return self.variant_dir / "runs" / self.run_name

    def resolved_labels_dir(self) -> Path:
        return Path(self.labels_dir) if self.labels_dir else self.labelling.default_folder()

    def resolved_vocabulary_path(self) -> Path:
        default = exp_root() / "rwm_labels" / f"vocabulary-navtrain-{self.vocabulary_size}.npy"
        return Path(self.vocabulary_path) if self.vocabulary_path else default


def vocabulary_for(config: RWMTrainConfig) -> np.ndarray:
    """The planning vocabulary: loaded, or built once from every navtrain human future."""
    from irlvla_env.navsim.loader import load_split

    path = config.resolved_vocabulary_path()
    lab = config.labelling
    loader = None if path.is_file() else load_split("navtrain", lab.data_root, maps_root=lab.maps_root)
    return ensure_vocabulary(path, loader, size=config.vocabulary_size, seed=config.seed)


def prepare_labels(config: RWMTrainConfig, policy: Any | None = None) -> Path:
    """The labelled candidates of `config.labelling` (cached and resumable); returns their folder."""
    return label_split(config.resolved_labels_dir(), config.labelling, vocabulary_for(config), policy=policy)


# ------------------------------------------------------------------------------------------------ batches


def candidate_subset(num_scenes: int, num_candidates: int, keep: int, rng: np.random.Generator) -> np.ndarray:
    """`(S, keep)` candidate indices per scene: the demonstration (0) plus a random subset of the others."""
    if keep >= num_candidates:
        return np.broadcast_to(np.arange(num_candidates), (num_scenes, num_candidates))
    others = rng.random((num_scenes, num_candidates - 1)).argsort(1)[:, : keep - 1] + 1
    return np.concatenate([np.zeros((num_scenes, 1), np.int64), others], axis=1)


def batch_tensors(
    data: LabelledScenes, scenes: np.ndarray, candidates: np.ndarray | None, model_config: RWMConfig, device: str
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Observations, trajectories `(S, K, 8, 3)`, labels `(S, K, 9)` and EPDMS `(S, K)` of some scenes."""
    obs = observations_to_tensors({k: v[scenes] for k, v in data.observations.items()}, model_config, device)
    rows = np.arange(len(scenes))[:, None]
    pick = (lambda a: a[scenes][rows, candidates]) if candidates is not None else (lambda a: a[scenes])
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(pick(a)), dtype=torch.float32, device=device)
    return obs, as_t(data.candidates), as_t(data.labels), as_t(data.epdms)


@torch.inference_mode()
def predict_scenes(model: RewardWorldModel, data: LabelledScenes, batch_scenes: int = 32, device: str = "cpu") -> RWMPrediction:
    """Head outputs `(N, K, M, 14)` for every candidate of every scene."""
    model.eval()
    out = []
    for start in range(0, len(data), batch_scenes):
        scenes = np.arange(start, min(start + batch_scenes, len(data)))
        obs, trajectories, _, _ = batch_tensors(data, scenes, None, model.config, device)
        out.append(model(obs, trajectories).logits)
    return RWMPrediction(torch.cat(out))


# -------------------------------------------------------------------------------------------- checkpoints


def _publish(tmp_dir: Path, final_dir: Path, links: list[Path]) -> None:
    """Rename a fully written folder into place, then atomically repoint symlinks at it."""
    os.replace(tmp_dir, final_dir)
    for link in links:
        tmp_link = link.with_name(f".{link.name}.tmp")
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        os.symlink(os.path.relpath(final_dir, link.parent), tmp_link)
        os.replace(tmp_link, link)


def _prune(folder: Path, prefix: str, keep: Path) -> None:
    for old in folder.glob(f"{prefix}-*"):
        if old.resolve() != keep.resolve():
            shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(run_dir: Path, model: RewardWorldModel, optimizer: torch.optim.Optimizer, state: dict) -> Path:
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".checkpoint-tmp-"))
    model.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
    final = run_dir / f"checkpoint-{state['epoch']:04d}"
    if final.exists():
        shutil.rmtree(final)
    _publish(tmp, final, [run_dir / "checkpoint-last"])
    _prune(run_dir, "checkpoint", final)
    return final


def save_best(config: RWMTrainConfig, model: RewardWorldModel, epoch: int, metrics: dict[str, float]) -> Path:
    run_dir = config.run_dir
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".best-tmp-"))
    model.save_pretrained(tmp, extra={"variant": config.variant, "epoch": epoch, "validation": metrics,
                                      "training": _config_dict(config)})
    final = run_dir / f"best-{epoch:04d}"
    if final.exists():
        shutil.rmtree(final)
    _publish(tmp, final, [run_dir / "best", config.variant_dir / "latest"])
    _prune(run_dir, "best", final)
    return final


def _config_dict(config: RWMTrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(config), default=str))


# ----------------------------------------------------------------------------------------------- training


def validate(model: RewardWorldModel, data: LabelledScenes, config: RWMTrainConfig) -> dict[str, float]:
    prediction = predict_scenes(model, data, device=config.device)
    predicted = prediction.epdms(config.model.ec_available).mean(-1).cpu().numpy()
    metrics = fidelity_metrics(predicted, data.epdms)
    irl = prediction.irl_reward.mean(-1).cpu().numpy()
    metrics["demo_ranked_first_irl"] = float(np.mean(irl.argmax(1) == 0))
    return metrics


def map_targets(config: RWMTrainConfig, model_config: RWMConfig, train: LabelledScenes,
                progress: bool) -> SceneTargets | None:
    """Auxiliary map targets of the training scenes (rows aligned with `train`), or None when the loss has no map
    term or the model no maps."""
    cost_volume = model_config.candidate_head == "cost_volume"
    if config.loss.map_weight <= 0 or not (cost_volume or model_config.map_head):
        return None
    if not (model_config.use_lidar or model_config.use_camera):
        return None
    grid = model_config.lidar_bins // 2
    return ensure_scene_targets(config.resolved_labels_dir(), train.tokens, config.labelling.resolved_metric_cache_root(),
                                grid=grid, range_m=model_config.bev_range_m, num_poses=model_config.num_poses,
                                progress=progress, dynamic_grid=grid // 2 if cost_volume else grid)


def train_rwm(config: RWMTrainConfig, data: LabelledScenes | None = None, progress: bool = True) -> Path:
    """Train (or resume) the run of `config`; returns the folder of the best model.

    :param data: labelled scenes (default: loaded from `config.resolved_labels_dir()`).
    """
    from torch.utils.tensorboard import SummaryWriter

    torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    data = data if data is not None else LabelledScenes.load(config.resolved_labels_dir())
    if len(data) < 2:
        raise ValueError(f"need at least 2 labelled scenes to train, got {len(data)}")
    from irlvla_env.observations import ObservationConfig

    model_config = replace(
        config.model,
        ec_available=config.loss.ec_available and data.ec_available,
        bev_range_m=ObservationConfig(**config.labelling.observation).lidar_bev_range,
        camera_calibration=data.camera_calibration if config.model.use_camera else None,
        **observation_shapes(data.observations),
    )
    train, val = data.split(config.val_fraction, seed=config.seed)
    if len(val) == 0:
        val = train
    targets = map_targets(config, model_config, train, progress)
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    model = RewardWorldModel(model_config).to(config.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train) // config.batch_scenes)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch), pct_start=0.1
    )
    start_epoch, best_score = 0, -np.inf
    resume = run_dir / "checkpoint-last"
    if resume.is_dir():
        model = RewardWorldModel.from_pretrained(resume).to(config.device)
        if model.config != model_config:
            raise ValueError(f"{resume} was trained with another model config; use a new --run-name to start over")
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        optimizer.load_state_dict(torch.load(resume / "optimizer.pt", weights_only=True))
        state = json.loads((resume / "trainer_state.json").read_text())
        start_epoch, best_score = state["epoch"] + 1, state["best_score"]
        if start_epoch >= config.epochs:
            return (run_dir / "best").resolve()
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch), pct_start=0.1,
            last_epoch=start_epoch * steps_per_epoch - 1,
        )
    (run_dir / "train_config.json").write_text(json.dumps(_config_dict(config), indent=2))
    writer = SummaryWriter(str(run_dir / "tensorboard"))
    rng = np.random.default_rng([config.seed, start_epoch])
    generator = torch.Generator().manual_seed(config.seed + start_epoch)
    step = start_epoch * steps_per_epoch
    best_dir = run_dir / "best"
    try:
        for epoch in range(start_epoch, config.epochs):
            model.train()
            order = rng.permutation(len(train))
            bar = tqdm(range(steps_per_epoch), desc=f"{config.variant} epoch {epoch + 1}/{config.epochs}",
                       unit="batch", disable=not progress, leave=False)
            for b in bar:
                scenes = order[b * config.batch_scenes : (b + 1) * config.batch_scenes]
                picks = candidate_subset(len(scenes), train.num_candidates, config.candidates_per_step, rng)
                obs, trajectories, labels, epdms = batch_tensors(train, scenes, picks, model_config, config.device)
                mirrored = None
                if config.mirror_probability > 0:
                    mirrored = torch.as_tensor(rng.random(len(scenes)) < config.mirror_probability, device=config.device)
                    obs, trajectories = mirror_observations(obs, mirrored), mirror_trajectories(trajectories, mirrored)
                ctx = model.encode_scene(obs)
                loss, parts = rwm_loss(model.score(ctx, trajectories), labels, epdms, config.loss, generator=generator)
                if targets is not None:
                    maps = [torch.as_tensor(a[scenes], device=config.device) for a in (targets.static, targets.dynamic)]
                    if mirrored is not None:
                        maps = [mirror_grids(m, mirrored) for m in maps]
                    aux = map_loss(ctx.static_maps, ctx.dynamic_maps, *maps)
                    loss = loss + config.loss.map_weight * aux
                    parts["maps"] = float(aux.detach())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                writer.add_scalar("train/loss", float(loss.detach()), step)
                for name, value in parts.items():
                    writer.add_scalar(f"train/{name}", value, step)
            metrics = validate(model, val, config)
            for name, value in metrics.items():
                writer.add_scalar(f"val/{name}", value, step)
            score = metrics["pearson"] if model_config.reward_source == "epdms" else metrics["demo_ranked_first_irl"]
            score = float(np.nan_to_num(score, nan=-1.0))
            if score > best_score or not best_dir.exists():
                best_score = score
                save_best(config, model, epoch, metrics)
            save_checkpoint(run_dir, model, optimizer, {"epoch": epoch, "step": step, "best_score": best_score})
            if progress:
                tqdm.write(f"[{config.variant}] epoch {epoch + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    finally:
        writer.close()
    return best_dir.resolve()
