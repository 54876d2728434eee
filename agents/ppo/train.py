"""Stage 3 of IRL-VLA: close-loop RL of the VLA's diffusion planner on the learned environment.

    IL checkpoint ─► VLACore ─► DiffusionPlannerPolicy ─► DiffusionPPO ◄── ChainActionVecEnv ◄── NavsimVectorEnv(reward=RWM)
                                                              │
                          RewardHackingAudit (RWM vs rule-based EPDMS on held-out navtest scenes)

A run folder holds everything, and running again on it resumes:

    rl_config.json                 the RLConfig of the run
    checkpoints/step_<n>/          policy.safetensors (core + value head), optimizer.safetensors + optimizer.json,
                                   rng.safetensors, counters.json (SB3 step counters, audit history)
    checkpoints/latest             name of the newest complete checkpoint
    logs/progress_<start>.csv      SB3 scalars (rollout reward, audit, losses), one file per run segment
    logs/tb/                       the same for TensorBoard
    model/                         the fine-tuned VLAAgent (`make_agent("vla", checkpoint=<run_dir>)` loads it)
    summary.json                   what `train_rl` returns

Checkpoints are written into a temporary folder that is renamed into place, so an interruption never leaves a
half-written one behind; nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import CSVOutputFormat, Logger, TensorBoardOutputFormat
from tqdm.auto import tqdm

from agents.abstract_agent import atomic_write_text
from agents.ppo.algorithm import DiffusionPPO
from agents.ppo.audit import AuditRecord, RewardHackingAudit
from agents.ppo.chain_env import ChainActionVecEnv
from agents.ppo.config import RLConfig
from agents.ppo.policy import DiffusionPlannerPolicy
from agents.ppo.vla_core import VLACore, chain_size, num_decisions
from agents.registry import make_agent
from irlvla_env import paths
from irlvla_env.envs.scene_pool import ScenePool
from irlvla_env.envs.vector_env import NavsimVectorEnv
from irlvla_env.envs.wrappers import SB3NavsimVecEnv
from irlvla_env.rewards import make_reward_model, observation_for

CHECKPOINTS, LATEST = "checkpoints", "latest"
POLICY_FILE, OPTIMIZER_FILE, OPTIMIZER_META, RNG_FILE = (
    "policy.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors"
)
COUNTERS_FILE, CONFIG_FILE = "counters.json", "rl_config.json"
# Settings that may change between two segments of one run: a longer run, another thread count.
RESUMABLE_CHANGES = frozenset({"total_timesteps", "num_threads"})


# -------------------------------------------------------------------------------------------- building blocks
def build_env(config: RLConfig, agent: Any) -> ChainActionVecEnv:
    """`NavsimVectorEnv` (one batched reward call per step) → SB3 adapter → chain actions."""
    reward_model = make_reward_model(config.reward_model)
    observation = observation_for(reward_model, agent.observation_config)
    pool = ScenePool(config.split, observation, config.data_root, config.max_scenes)
    vector = NavsimVectorEnv(
        config.num_envs, scene_pool=pool, split=config.split, reward_model=reward_model,
        observation=observation, data_root=config.data_root, max_scenes=config.max_scenes,
    )
    width = chain_size(agent.config, config.denoising_steps, noise_free_plans=config.mode_advantage)
    modes = agent.config.num_anchors
    candidates = modes * (2 if config.mode_advantage else 1) if config.mode_beta is not None else 0
    return ChainActionVecEnv(SB3NavsimVecEnv(vector, flat_actions=False), width, config.uncertainty_penalty, candidates)


def build_model(config: RLConfig, agent: Any, env: ChainActionVecEnv) -> DiffusionPPO:
    """`DiffusionPPO` whose policy wraps `agent` (trained in place) in a `VLACore`."""
    num_steps = config.denoising_steps or agent.config.num_inference_steps
    cache = 4 * config.num_envs * (config.n_steps + 1) + 2 * config.audit_scenes
    policy_kwargs = dict(
        core_factory=lambda: VLACore.from_agent(agent, num_steps, cache_capacity=cache,
                                                execute_mean=config.execute_mean,
                                                mode_temperature=config.mode_temperature,
                                                per_mode=config.mode_advantage,
                                                noise_free_plans=config.mode_advantage),
        num_decisions=num_decisions(agent.config, num_steps, config.execute_mean, per_mode=config.mode_advantage),
        num_modes=agent.config.num_anchors,
        min_sampling_std=config.min_sampling_std,
        min_logprob_std=config.min_logprob_std,
        frozen_modules=config.frozen_modules,
        value_hidden=config.value_hidden,
        value_lr=config.value_learning_rate,
        mode_lr=config.mode_learning_rate if config.mode_beta is not None else None,
    )
    return DiffusionPPO(
        DiffusionPlannerPolicy, env,
        denoising_gamma=config.denoising_gamma, bc_coef=config.bc_coef, mode_beta=config.mode_beta,
        mode_coef=config.mode_coef, mode_advantage=config.mode_advantage,
        mode_head_only=config.mode_head_only,
        learning_rate=config.learning_rate, n_steps=config.n_steps, batch_size=config.batch_size,
        n_epochs=config.n_epochs, gamma=config.gamma, gae_lambda=config.gae_lambda, clip_range=config.clip_range,
        vf_coef=config.vf_coef, max_grad_norm=config.max_grad_norm, target_kl=config.target_kl, ent_coef=0.0,
        seed=config.seed, device="cpu", policy_kwargs=policy_kwargs, verbose=0,
    )


def build_audit(config: RLConfig, agent: Any, history: list[AuditRecord]) -> RewardHackingAudit:
    """The reward-hacking audit on the first `audit_scenes` held-out scenes (learned reward vs rule EPDMS)."""
    reward_model = make_reward_model(config.reward_model)
    pool = ScenePool(config.audit_split, observation_for(reward_model, agent.observation_config), config.data_root,
                     config.audit_scenes)
    return RewardHackingAudit(
        pool, pool.reward_model(reward_model), pool.reward_model("epdms"), pool.tokens,
        every=config.audit_every, divergence=config.audit_divergence, history=history,
    )


# -------------------------------------------------------------------------------------------- checkpoints
def _optimizer_to_safetensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors of the optimizer state under `state.<param>.<name>`; everything else as JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_safetensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: Path, model: DiffusionPPO, config: RLConfig, counters: dict[str, Any]) -> Path:
    """Write `checkpoints/step_<n>/` through a temporary folder and a rename, then point `latest` at it."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{model.num_timesteps:08d}"
    tmp, final = root / f".tmp-{name}", root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    policy: DiffusionPlannerPolicy = model.policy  # type: ignore[assignment]
    save_file({k: v.detach().cpu().contiguous() for k, v in policy.trained_state_dict().items()}, str(tmp / POLICY_FILE))
    tensors, meta = _optimizer_to_safetensors(policy.optimizer)
    save_file(tensors, str(tmp / OPTIMIZER_FILE))
    (tmp / OPTIMIZER_META).write_text(json.dumps(meta))
    numpy_state = np.random.get_state()
    save_file({"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64))},
              str(tmp / RNG_FILE))
    counters = {
        **counters,
        "num_timesteps": int(model.num_timesteps),
        "n_updates": int(model._n_updates),
        "numpy_rng": [numpy_state[0], int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
    }
    (tmp / COUNTERS_FILE).write_text(json.dumps(counters, indent=2))
    (tmp / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(root / LATEST, name)
    for old in sorted(p for p in root.glob("step_*") if p.is_dir() and p != final)[:-1]:
        shutil.rmtree(old)  # keep the newest two
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    folder = run_dir / CHECKPOINTS / pointer.read_text().strip()
    if not (folder / COUNTERS_FILE).is_file():
        raise FileNotFoundError(f"{pointer} names {folder.name}, which is missing or incomplete")
    return folder


def load_checkpoint(folder: Path, model: DiffusionPPO) -> dict[str, Any]:
    """Restore weights, optimizer, RNGs and SB3 counters from `folder`; returns its counters."""
    policy: DiffusionPlannerPolicy = model.policy  # type: ignore[assignment]
    try:
        policy.load_trained_state_dict(load_file(str(folder / POLICY_FILE)))
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"checkpoint {folder / POLICY_FILE} does not fit this run's VLA: {err}") from err
    meta = json.loads((folder / OPTIMIZER_META).read_text())
    policy.optimizer.load_state_dict(_optimizer_from_safetensors(load_file(str(folder / OPTIMIZER_FILE)), meta))
    counters = json.loads((folder / COUNTERS_FILE).read_text())
    rng = load_file(str(folder / RNG_FILE))
    torch.set_rng_state(rng["torch"])
    kind, pos, has_gauss, cached = counters["numpy_rng"]
    np.random.set_state((kind, rng["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    model.num_timesteps = int(counters["num_timesteps"])
    model._n_updates = int(counters["n_updates"])
    return counters


# -------------------------------------------------------------------------------------------- callbacks
class RolloutMonitor(BaseCallback):
    """Mean reward (and the env's reported EPDMS) of each rollout, to the logger and `history`; a tqdm bar."""

    def __init__(self, total_timesteps: int, progress: bool = True) -> None:
        super().__init__()
        self.total_timesteps = int(total_timesteps)
        self.progress = progress
        self.history: list[dict[str, float]] = []
        self._rewards: list[np.ndarray] = []
        self._epdms: list[float] = []
        self._bar: tqdm | None = None

    def _on_training_start(self) -> None:
        self._bar = tqdm(total=self.total_timesteps, initial=self.num_timesteps, desc="rl", unit="step",
                         disable=not self.progress)

    def _on_rollout_start(self) -> None:
        self._rewards, self._epdms = [], []

    def _on_step(self) -> bool:
        self._rewards.append(np.asarray(self.locals["rewards"], dtype=np.float64))
        self._epdms.extend(info.get("epdms", np.nan) for info in self.locals["infos"])
        if self._bar is not None:
            self._bar.update(self.model.n_envs)
        return True

    def _on_rollout_end(self) -> None:
        reward = float(np.mean(np.concatenate(self._rewards)))
        epdms = float(np.nanmean(self._epdms)) if np.isfinite(self._epdms).any() else float("nan")
        self.history.append({"timesteps": int(self.num_timesteps), "reward": reward, "epdms": epdms})
        self.logger.record("rollout/reward_mean", reward)
        self.logger.record("rollout/epdms_mean", epdms)
        if self._bar is not None:
            self._bar.set_postfix(reward=f"{reward:.3f}")

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()


class PeriodicCheckpoint(BaseCallback):
    """Checkpoints after every `every`-th update (at the next rollout's start) and when training ends."""

    def __init__(self, run_dir: Path, config: RLConfig, audit: RewardHackingAudit, monitor: RolloutMonitor) -> None:
        super().__init__()
        self.run_dir, self.config, self.audit, self.monitor = run_dir, config, audit, monitor
        self.last_saved = -1

    def save(self) -> None:
        if self.num_timesteps == self.last_saved:
            return
        counters = {"audit": [r.to_dict() for r in self.audit.history], "rollouts": self.monitor.history,
                    "stopped_early": self.audit.stopped_early}
        save_checkpoint(self.run_dir, self.model, self.config, counters)  # type: ignore[arg-type]
        self.last_saved = self.num_timesteps

    def _on_training_start(self) -> None:
        self.last_saved = self.num_timesteps  # what was loaded is already on disk

    def _on_rollout_start(self) -> None:
        rollout = self.model.n_steps * self.model.n_envs
        if self.num_timesteps and (self.num_timesteps // rollout) % self.config.checkpoint_every == 0:
            self.save()

    def _on_training_end(self) -> None:
        self.save()

    def _on_step(self) -> bool:
        return True


# -------------------------------------------------------------------------------------------- the run
def _check_resumable(run_dir: Path, config: RLConfig) -> None:
    saved_path = run_dir / CONFIG_FILE
    if not saved_path.is_file():
        return
    saved, now = json.loads(saved_path.read_text()), config.to_dict()
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        raise ValueError(
            f"run folder {run_dir} was started with a different RLConfig ({', '.join(changed)} differ); "
            "use a new --run-dir, or the same settings to resume"
        )


def default_run_dir() -> Path:
    return paths.exp_root() / "rl" / time.strftime("%Y.%m.%d.%H.%M.%S")


def train_rl(config: RLConfig, il_checkpoint: str | Path, run_dir: str | Path | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Fine-tune the VLA of `il_checkpoint` by DPPO on the learned env; resume if `run_dir` holds a checkpoint.

    :returns: the summary (also written to `<run_dir>/summary.json`): step counts, throughput, the per-rollout
        reward curve, the audit history, and `exported`, the folder of the fine-tuned VLAAgent.
    """
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_resumable(run_dir, config)
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2))

    agent = make_agent("vla", checkpoint=il_checkpoint)
    env = build_env(config, agent)
    model = build_model(config, agent, env)
    folder = latest_checkpoint(run_dir)
    counters = load_checkpoint(folder, model) if folder is not None else {}
    start = model.num_timesteps
    history = [AuditRecord(**r) for r in counters.get("audit", [])]
    env.seed(config.seed + start)  # scene draws of a resumed segment differ from the first one's, reproducibly

    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    model.set_logger(Logger(str(logs), [CSVOutputFormat(str(logs / f"progress_{start:08d}.csv")),
                                        TensorBoardOutputFormat(str(logs / "tb"))]))
    audit = build_audit(config, agent, history)
    audit.stopped_early = bool(counters.get("stopped_early", False))
    monitor = RolloutMonitor(config.total_timesteps, progress)
    monitor.history = list(counters.get("rollouts", []))
    checkpoint = PeriodicCheckpoint(run_dir, config, audit, monitor)
    callbacks = CallbackList([monitor, audit, checkpoint])

    started = time.perf_counter()
    remaining = config.total_timesteps - start
    if remaining > 0 and not audit.stopped_early:
        model.learn(remaining, callback=callbacks, reset_num_timesteps=False)
    seconds = time.perf_counter() - started
    model.logger.close()

    exported = run_dir / "model"
    core: VLACore = model.policy.core  # type: ignore[assignment]
    core.to_vla_agent().save_pretrained(exported)
    summary = {
        "run_dir": str(run_dir),
        "il_checkpoint": str(il_checkpoint),
        "reward_model": config.to_dict()["reward_model"],
        "resumed_from": start,
        "num_timesteps": int(model.num_timesteps),
        "n_updates": int(model._n_updates),
        "seconds": round(seconds, 1),
        "env_steps_per_s": round((model.num_timesteps - start) / seconds, 2) if seconds > 0 else None,
        "stopped_early": audit.stopped_early,
        "rollouts": monitor.history,
        "audit": [r.to_dict() for r in audit.history],
        "exported": str(exported),
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    env.close()
    return summary
