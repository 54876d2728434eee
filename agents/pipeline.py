"""`irlvla pipeline`: the three stages of IRL-VLA on one data set, then the report.

    data ─► imitation (EgoStatusMLP, TransFuser-style, VLA) ─► RWM: label candidates, IRL training, fidelity
         ─► RL: DPPO of the VLA on the learned env (RWM reward, and the rule-based reward as the ablation)
         ─► evaluation of every agent with the rule-based EPDMS (and of the VLAs with the RWM choosing their mode)
         ─► report (Markdown table, PNG curves, stage times)

Every stage writes into the pipeline folder and marks itself done (`stages.json`), so an interrupted pipeline
resumes where it stopped; the trainers underneath resume their own checkpoints too. Sizes come from a preset:
`default` (2 CPU cores, the embedded synthetic world), `toy` (the test suite), `real` (real NAVSIM on GPUs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from irlvla_env import paths

STAGES = ("data", "il", "rwm", "rl", "eval", "report")
SCORE = "EPDMS"  # the summary column `agents.evaluate.evaluate_agents` reports
TABLE_AGENTS = ("constant_velocity", "ego_status_mlp", "transfuser", "vla_il", "vla_rl_rwm", "vla_rl_epdms",
                "vla_il_guided", "vla_rl_rwm_guided", "human")
AGENT_LABELS = {
    "constant_velocity": "ConstantVelocity",
    "ego_status_mlp": "EgoStatusMLP",
    "transfuser": "TransFuser-style",
    "vla_il": "VLA-IL",
    "vla_rl_rwm": "VLA-IL+RL (RWM reward)",
    "vla_rl_epdms": "VLA-IL+RL (rule-based reward)",
    "vla_il_guided": "VLA-IL, RWM mode choice",
    "vla_rl_rwm_guided": "VLA-IL+RL (RWM reward), RWM mode choice",
    "human": "Human",
}


@dataclass
class PipelineConfig:
    """Sizes of every stage. `preset()` gives the named presets; any field can be overridden.

    :param synth: synthetic-world size (`default` or `tiny`); ignored when `$OPENSCENE_DATA_ROOT` points at real data.
    :param il_epochs: imitation epochs per agent.
    :param il_agent_kwargs: constructor arguments per agent (e.g. fewer VLA anchors for a world with few scenes).
    :param il_max_train_scenes: cap on navtrain scenes for imitation (None: all).
    :param il_batch_size: imitation batch of every agent (None: the IL preset's own per agent).
    :param il_val_scenes: navtest scenes of imitation's per-epoch validation L2 (None: all).
    :param rwm_train_scenes / rwm_eval_scenes: navtrain / navtest scenes whose candidates are labelled.
    :param rwm_epochs: RWM training epochs.
    :param rl_timesteps: env steps of each RL run.
    :param seeds: RL seeds; the report gives the mean and spread over them.
    :param eval_scenes: navtest scenes every agent is scored on (None: all; a cap is spread over every log).
    :param workers: parallel scene workers (Ray) for labelling and scoring; 1 runs in-process. Labelling uses at
        least `jobs` workers (the RWM stage has nothing else to run).
    :param jobs: independent runs (the RL runs, the agents' evaluations) in this many processes at once, each
        with `cpu_count // jobs` torch threads. RL and the rule-based scorer use one core each, so on 2 cores two
        jobs cut the default pipeline's RL stage 352 -> 260 s and its evaluation 272 -> 163 s. The agents that
        need no RL are scored during the RL stage, on the core the shorter RL run leaves idle.
    :param il_val_every: imitation epochs between two validations (the last epoch always validates). The model
        kept is the last epoch's either way, so the validation L2 is only a curve; every epoch cost 7 s of 45.
    :param rwm_variant: the Reward World Model trained in the RWM stage (`reward_models.train.VARIANTS`), e.g.
        `rwm-large`: with the same imitation stage it lifted the VLA's RWM mode choice from 85.9 to 86.6 EPDMS and
        left RL(RWM) at 83.2 (one run), for about 1.7x the RWM training time. Use a new `--output` folder: a
        finished RWM stage is reused whatever the variant.
    :param guided_reward_weight: also score the IL and RWM-reward RL VLAs with their executed mode chosen by
        confidence + this weight x RWM reward (`agents.reward_guided`); None leaves those rows out.
    """

    name: str = "default"
    synth: str = "default"
    data_root: str | None = None
    output_dir: str | None = None
    il_agents: tuple[str, ...] = ("ego_status_mlp", "transfuser", "vla")
    # All at 20 epochs, over three seeds on navtest: TransFuser-style 82.4 (78.2 at 10), the VLA with its reference
    # plan 84.2 (81.4 at 10; the VLA without it had scored lower at 20 than at 10).
    il_epochs: dict[str, int] = field(default_factory=lambda: {"ego_status_mlp": 20, "transfuser": 20, "vla": 20})
    il_agent_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    il_max_train_scenes: int | None = None
    il_batch_size: int | None = 32
    il_val_scenes: int | None = 300
    il_val_every: int = 5
    rwm_train_scenes: int | None = 1500
    rwm_eval_scenes: int | None = 200
    rwm_epochs: int = 30
    rwm_policy_samples: int = 8
    rl_timesteps: int = 4096
    rl_num_envs: int = 16
    rl_audit_scenes: int = 32
    seeds: tuple[int, ...] = (0,)
    eval_scenes: int | None = None
    workers: int = 1
    jobs: int = 2
    rwm_variant: str = "rwm"
    guided_reward_weight: float | None = 80.0  # agents.reward_guided's default, chosen on held-out navtrain scenes

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "PipelineConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown pipeline preset {name!r}; choose one of {sorted(PRESETS)}")
        values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(name=name, **values)

    def folder(self) -> Path:
        return Path(self.output_dir) if self.output_dir else paths.exp_root() / "pipeline" / self.name


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The whole pipeline inside the test suite: tiny world, a few scenes, a few steps.
    "toy": {
        "synth": "tiny",
        "il_epochs": {"ego_status_mlp": 2, "transfuser": 1, "vla": 1},
        "il_agent_kwargs": {"vla": {"num_anchors": 8}},  # k-means needs more futures than anchors: 14 here
        "il_batch_size": 8,
        "il_val_scenes": 6,
        "rwm_train_scenes": 8,
        "rwm_eval_scenes": 6,
        "rwm_epochs": 2,
        "rwm_policy_samples": 2,
        "rl_timesteps": 32,
        "rl_num_envs": 4,
        "rl_audit_scenes": 4,
        "eval_scenes": 6,
        "il_val_every": 1,
    },
    # Real NAVSIM on GPUs: every scene, longer training, three seeds, Ray workers.
    "real": {
        "synth": "default",
        "il_epochs": {"ego_status_mlp": 60, "transfuser": 60, "vla": 60},
        "il_batch_size": None,  # the IL preset's per agent: 64, and 32 for the VLA (one GPU's memory)
        "il_val_scenes": None,
        "rwm_train_scenes": None,
        "rwm_eval_scenes": None,
        "rwm_epochs": 30,
        "rl_timesteps": 200_000,
        "rl_num_envs": 64,
        "rl_audit_scenes": 256,
        "seeds": (0, 1, 2),
        "eval_scenes": None,
        "workers": 8,
        "jobs": 1,  # one GPU: the runs take turns on it
    },
}


# ------------------------------------------------------------------------------------------------ bookkeeping


class StageLog:
    """`stages.json` in the pipeline folder: which stages are done, their results and wall times (atomic writes)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "stages.json"
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def done(self, stage: str) -> bool:
        return stage in self.data

    def result(self, stage: str) -> Any:
        return self.data[stage]["result"]

    def forget(self, *stages: str) -> None:
        """Mark `stages` as not done (their trainers still resume what they finished)."""
        for stage in stages:
            self.data.pop(stage, None)
        self._write()

    def record(self, stage: str, result: Any, seconds: float) -> None:
        self.data[stage] = {"result": result, "seconds": round(seconds, 1)}
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)

    def seconds(self) -> dict[str, float]:
        """Wall time per stage in pipeline order (a stage redone after `forget` is recorded last)."""
        return {stage: self.data[stage]["seconds"] for stage in STAGES if stage in self.data}


def run_stage(log: StageLog, stage: str, work: Callable[[], Any]) -> Any:
    if log.done(stage):
        print(f"[pipeline] {stage}: done before, reusing ({log.data[stage]['seconds']} s)")
        return log.result(stage)
    print(f"[pipeline] {stage} ...", flush=True)
    started = time.perf_counter()
    result = work()
    log.record(stage, result, time.perf_counter() - started)
    print(f"[pipeline] {stage}: {log.data[stage]['seconds']} s", flush=True)
    return result


# ------------------------------------------------------------------------------------------------------ stages


def stage_data(config: PipelineConfig) -> dict[str, Any]:
    """Reuse real data when `$OPENSCENE_DATA_ROOT` is set; otherwise generate (once) the synthetic world."""
    if config.data_root is None and os.environ.get("OPENSCENE_DATA_ROOT"):
        return {"data_root": str(paths.data_root()), "synthetic": False}
    from irlvla_env.synthetic.config import SynthConfig
    from irlvla_env.synthetic.generate import ensure_dataset

    synth = SynthConfig.tiny() if config.synth == "tiny" else SynthConfig.default()
    default_root = paths.cache_home() / "synthetic" / "tiny" if config.synth == "tiny" else paths.data_root()
    root = Path(config.data_root) if config.data_root else default_root  # the tiny world never replaces the default
    ensure_dataset(root, synth, maps_root=root / "maps")
    return {"data_root": str(root), "synthetic": True}


def stage_il(config: PipelineConfig, data_root: str, folder: Path) -> dict[str, str]:
    from agents.training.config import ILConfig
    from agents.training.il import train

    checkpoints = {}
    for agent in config.il_agents:
        kwargs = {"agent_kwargs": config.il_agent_kwargs[agent]} if agent in config.il_agent_kwargs else {}
        if config.il_batch_size is not None:
            kwargs["batch_size"] = config.il_batch_size
        il = ILConfig.preset(
            "cpu" if config.name != "real" else "real",
            agent=agent,
            **kwargs,  # only when given: the real preset fills in its own sizes and batches otherwise
            data_root=data_root,
            run_dir=str(folder / "il" / agent),
            epochs=config.il_epochs.get(agent, 5),
            max_train_scenes=config.il_max_train_scenes,
            max_val_scenes=config.il_val_scenes,
            val_every=config.il_val_every,
        )
        result = train(il)
        checkpoints[agent] = str(Path(result["run_dir"]) / "model")
    return checkpoints


def stage_rwm(config: PipelineConfig, data_root: str, folder: Path, vla_checkpoint: str | None) -> dict[str, Any]:
    from reward_models.evaluate import evaluate_rwm
    from reward_models.labelling import LabelledScenes, LabellingConfig
    from reward_models.model import RWMRewardModel
    from reward_models.train import RWMTrainConfig, prepare_labels, train_rwm
    from irlvla_env.rewards import EPDMSReward

    policy = VLASampler(vla_checkpoint) if vla_checkpoint and config.rwm_policy_samples else None
    candidates = {"num_policy": config.rwm_policy_samples if policy else 0}
    # Labelling is the stage's only job, so it takes the cores the jobs of the later stages share. A scene's
    # candidates and labels do not depend on the worker (seeded by token; the VLA plans deterministically).
    labelling = LabellingConfig(split="navtrain", data_root=data_root, max_scenes=config.rwm_train_scenes,
                                num_workers=max(config.workers, config.jobs), candidates=candidates,
                                policy_id=policy.identity() if policy else None)
    train_config = RWMTrainConfig.for_variant(config.rwm_variant, run_name=config.name, epochs=config.rwm_epochs,
                                              labelling=labelling)
    labels_dir = prepare_labels(train_config, policy=policy)
    # One RWM run per label set (its folder name digests the labelling settings and the sampling policy's weights):
    # a pipeline with a retrained VLA gets a new RWM instead of resuming, and finding done, another labels' run.
    train_config = dataclasses.replace(train_config, labels_dir=str(labels_dir),
                                       run_name=f"{config.name}-{Path(labels_dir).name}")
    best = train_rwm(train_config)

    eval_labelling = dataclasses.replace(labelling, split="navtest", max_scenes=config.rwm_eval_scenes)
    eval_config = dataclasses.replace(train_config, labels_dir=None, labelling=eval_labelling)
    eval_dir = prepare_labels(eval_config, policy=policy)
    rule = EPDMSReward(metric_cache_root=eval_labelling.resolved_metric_cache_root())
    report = evaluate_rwm(RWMRewardModel.from_pretrained(best, name="rwm"), LabelledScenes.load(eval_dir),
                          folder / "rwm_eval", rule_based=rule)
    # navtest drives on a map navtrain never shows: the held-out navtrain scenes that picked the epoch tell the
    # in-domain fidelity apart from what the new map costs
    validation = json.loads((Path(best) / "config.json").read_text()).get("validation", {})
    return {"checkpoint": str(best), "metrics": report["metrics"], "validation": validation}


def expected_rl_runs(config: PipelineConfig) -> dict[str, list[dict[str, str]]]:
    """The RL runs `stage_rl` makes, in the shape of its result (only their folder names)."""
    return {reward: [{"run_dir": f"{reward}_seed{seed}"} for seed in config.seeds] for reward in ("rwm", "epdms")}


def rl_run_names(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    return {reward: [Path(run["run_dir"]).name for run in group] for reward, group in runs.items()}


def stage_rl(config: PipelineConfig, data_root: str, folder: Path, vla_checkpoint: str, rwm_checkpoint: str,
             pool: "JobPool", alongside: Callable[[], Any] | None = None) -> dict:
    """DPPO runs with the RWM and the rule-based reward, one per seed; `alongside` is called once they are queued,
    to queue work for the cores that finished runs leave idle."""
    from agents.ppo.config import RLConfig
    from agents.ppo.train import train_rl

    futures: dict[str, list[Future]] = {"rwm": [], "epdms": []}
    # The rule-based reward's runs first: they take about three times as long, so they start at once.
    for reward_name, reward in (("epdms", "epdms"), ("rwm", rwm_checkpoint)):
        for seed in config.seeds:
            rl = RLConfig(reward_model=reward, total_timesteps=config.rl_timesteps, num_envs=config.rl_num_envs,
                          batch_size=min(64, config.rl_num_envs * RLConfig.n_steps),
                          audit_scenes=config.rl_audit_scenes, seed=seed, data_root=data_root)
            run_dir = folder / "rl" / f"{reward_name}_seed{seed}"
            futures[reward_name].append(pool.submit(train_rl, rl, vla_checkpoint, run_dir, config.jobs <= 1))
    if alongside is not None:
        alongside()
    gather([f for group in futures.values() for f in group])
    return {reward_name: [f.result() for f in futures[reward_name]] for reward_name in ("rwm", "epdms")}


def submit_evals(config: PipelineConfig, data_root: str, folder: Path, checkpoints: dict[str, str | None],
                 pool: "JobPool") -> dict[str, Future]:
    """Queue the rule-based scoring of every agent in `checkpoints` on `pool`; RL agents are scored once per seed."""
    futures = {}
    for key, checkpoint in checkpoints.items():
        registry_name = "vla_reward_guided" if "_guided" in key else "vla" if key.startswith("vla") else key
        futures[key] = pool.submit(evaluate_one, registry_name, Path(checkpoint) if checkpoint else None,
                                   config.eval_scenes, data_root, folder / "eval" / key, config.workers)
    return futures


def stage_eval(config: PipelineConfig, data_root: str, folder: Path, checkpoints: dict[str, str | None],
               pool: "JobPool", queued: dict[str, Future] | None = None) -> dict:
    """Rule-based EPDMS of every agent; `queued` holds evaluations submitted earlier (during the RL stage)."""
    queued = dict(queued or {})
    queued.update(submit_evals(config, data_root, folder, {k: v for k, v in checkpoints.items() if k not in queued},
                               pool))
    return dict(zip(checkpoints, gather([queued[key] for key in checkpoints])))


def evaluate_one(registry_name: str, checkpoint: Path | None, max_scenes: int | None, data_root: str,
                 run_dir: Path, workers: int) -> dict[str, float]:
    """One agent's rule-based sub-scores and EPDMS on navtest (a top-level function, so a job process can run it)."""
    from agents.evaluate import evaluate_agents

    table = evaluate_agents([(registry_name, checkpoint)], split="navtest", max_scenes=max_scenes,
                            data_root=data_root, run_dir=run_dir, num_workers=workers)
    return {column: float(v) for column, v in table.iloc[0].items()}


class JobPool:
    """Up to `jobs` processes shared by the RL and evaluation stages; work runs in the order it is submitted.

    One pool for both stages lets the evaluations that need no RL (baselines, imitation, human) take the core that
    the shorter RL run leaves idle while the rule-based-reward run is still going. Processes are spawned rather
    than forked: a fork copies torch's thread pool and a Ray client in an unusable state. Each gets
    `cpu_count // jobs` torch threads, so the jobs share the cores instead of oversubscribing them. With
    `jobs <= 1` every call runs in this process when it is submitted.
    """

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._executor: Any = None

    def submit(self, work: Callable[..., Any], *args: Any) -> Future:
        if self.jobs <= 1:
            future: Future = Future()
            try:
                future.set_result(work(*args))
            except Exception as err:  # noqa: BLE001 — handed to the caller through the future, as a process would
                future.set_exception(err)
            return future
        if self._executor is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            threads = max(1, (os.cpu_count() or 1) // self.jobs)
            self._executor = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_share_cores, initargs=(threads,))
        return self._executor.submit(work, *args)

    def __enter__(self) -> "JobPool":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self._executor is not None:  # after an error, queued work is dropped; running jobs finish (and resume)
            self._executor.shutdown(wait=True, cancel_futures=error is not None)
            self._executor = None


def gather(futures: list[Future]) -> list[Any]:
    """Results in order, once all are done; the first failed job's error is raised after the others finish
    (their results are on disk, so a rerun resumes them)."""
    wait(futures)
    for future in futures:
        if future.exception() is not None:
            raise future.exception()
    return [future.result() for future in futures]


def _share_cores(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------ report


def aggregate_seeds(rows: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Collapse `vla_rl_rwm@seed` rows into their mean, keeping the per-seed spread of the score."""
    out: dict[str, dict[str, float]] = {}
    groups: dict[str, list[dict[str, float]]] = {}
    for key, row in rows.items():
        groups.setdefault(key.split("@")[0], []).append(row)
    for key, group in groups.items():
        mean = {column: float(np.mean([r[column] for r in group])) for column in group[0]}
        scores = [r[SCORE] for r in group]
        mean["seeds"] = len(group)
        mean["score_std"] = float(np.std(scores)) if len(group) > 1 else 0.0
        out[key] = mean
    return out


def save_plot(path: Path, title: str, ylabel: str, draw: Callable[[Any], None]) -> None:
    """One PNG figure over env steps, drawn by `draw(ax)`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    draw(ax)
    ax.set_xlabel("env steps")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(folder: Path, config: PipelineConfig, rows: dict[str, dict[str, float]], rl: dict, rwm: dict,
                 seconds: dict[str, float]) -> Path:
    report = folder / "report"
    report.mkdir(parents=True, exist_ok=True)
    table = aggregate_seeds(rows)
    columns = [c for c in next(iter(table.values())) if c not in ("seeds", "score_std")]
    lines = ["| agent | " + " | ".join(columns) + " | seeds |", "|---" * (len(columns) + 2) + "|"]
    for key in TABLE_AGENTS:
        if key not in table:
            continue
        row = table[key]
        cells = [f"{100 * row[c]:.1f}" for c in columns]
        if row["seeds"] > 1:
            cells[columns.index(SCORE)] += f" ± {100 * row['score_std']:.1f}"
        lines.append(f"| {AGENT_LABELS[key]} | " + " | ".join(cells) + f" | {int(row['seeds'])} |")
    delta_lines = []
    if {"vla_il", "vla_rl_rwm", "vla_rl_epdms"} <= set(table):
        gain = 100 * (table["vla_rl_rwm"][SCORE] - table["vla_il"][SCORE])
        gap = 100 * (table["vla_rl_rwm"][SCORE] - table["vla_rl_epdms"][SCORE])
        delta_lines = [f"- VLA-IL+RL (RWM) − VLA-IL: {gain:+.2f} EPDMS points (target ≥ +2)",
                       f"- VLA-IL+RL (RWM) − VLA-IL+RL (rule-based): {gap:+.2f} points (target within ±1)"]
        for key in ("vla_il_guided", "vla_rl_rwm_guided"):
            if key in table:
                delta_lines.append(f"- {AGENT_LABELS[key]} − VLA-IL: "
                                   f"{100 * (table[key][SCORE] - table['vla_il'][SCORE]):+.2f} points")
    fidelity = rwm.get("metrics", {})
    fidelity_lines = [f"- {k}: {v:.3f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in sorted(fidelity.items())]
    held_out = {k: v for k, v in rwm.get("validation", {}).items() if k in ("pearson", "spearman", "epdms_rwm_pick",
                                                                           "gap_to_best")}
    if held_out:
        fidelity_lines += ["", "Held-out navtrain scenes (the training maps; they pick the best epoch): "
                           + ", ".join(f"{k} {v:.3f}" for k, v in sorted(held_out.items())) + "."]
    time_lines = [f"| {stage} | {s:.1f} |" for stage, s in seconds.items()]
    text = "\n".join(
        [f"# IRL-VLA pipeline report ({config.name})", "", "Rule-based EPDMS and sub-scores (×100) on synthetic "
         f"navtest ({config.eval_scenes or 'all'} scenes); RL rows are the mean over seeds {list(config.seeds)}.", "", *lines, "", *delta_lines, "", "## Reward World Model fidelity "
         "(navtest candidates)", "", *fidelity_lines, "", "## Wall time per stage [s]", "", "| stage | seconds |",
         "|---|---|", *time_lines, f"| total | {sum(seconds.values()):.1f} |", "",
         "Figures: `rl_curves.png` (reward per rollout), `rwm_vs_epdms.png` (audit: RWM reward vs rule-based EPDMS).",
         ""]
    )
    (report / "report.md").write_text(text)
    (report / "table.json").write_text(json.dumps(table, indent=2))

    def rl_curves(ax) -> None:
        for reward_name, runs in rl.items():
            for run in runs:
                steps = [r.get("timesteps", i) for i, r in enumerate(run.get("rollouts", []))]
                values = [r.get("reward", np.nan) for r in run.get("rollouts", [])]
                ax.plot(steps, values, label=f"{reward_name} reward, {Path(run['run_dir']).name}")

    def audit_curves(ax) -> None:
        for run in rl.get("rwm", []):
            audit, name = run.get("audit", []), Path(run["run_dir"]).name
            steps = [a["timesteps"] for a in audit]
            ax.plot(steps, [a["reward_model"] for a in audit], "o-", label=f"RWM reward ({name})")
            ax.plot(steps, [a["rule_epdms"] for a in audit], "s--", label=f"rule-based EPDMS ({name})")

    save_plot(report / "rl_curves.png", "DPPO learning curves", "mean reward per rollout", rl_curves)
    save_plot(report / "rwm_vs_epdms.png", "Reward-hacking audit: learned reward vs true EPDMS",
              "held-out navtest scenes", audit_curves)
    return report


# ---------------------------------------------------------------------------------------------- the pipeline


class VLASampler:
    """`agent_input -> (M, 8, 3)`: the imitation VLA's trajectory modes, as policy candidates for RWM labelling."""

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = checkpoint
        self._agent = None

    def __call__(self, agent_input: Any) -> np.ndarray:
        import torch

        from agents.registry import make_agent

        if self._agent is None:
            self._agent = make_agent("vla", checkpoint=self.checkpoint).eval()
        features = {}
        for builder in self._agent.get_feature_builders():
            features.update(builder.compute_features(agent_input))
        batch = {k: v.unsqueeze(0) for k, v in features.items()}
        with torch.no_grad():
            modes = self._agent(batch)["modes"][0]
        return modes.cpu().numpy().astype(np.float32)

    def identity(self) -> str:
        """A digest of the checkpoint's weights: labels made with other weights must not be reused."""
        import hashlib

        from agents.abstract_agent import WEIGHTS_NAME
        from agents.registry import resolve_checkpoint

        weights = resolve_checkpoint(self.checkpoint) / WEIGHTS_NAME
        return hashlib.sha256(weights.read_bytes()).hexdigest()[:16]

    def __getstate__(self) -> dict:
        return {"checkpoint": self.checkpoint, "_agent": None}


def guided_checkpoints(config: PipelineConfig, folder: Path, checkpoints: dict[str, str | None],
                       rwm_checkpoint: str) -> dict[str, str]:
    """Checkpoint folders of the IL and RWM-reward RL VLAs with the RWM choosing their executed mode."""
    from agents.reward_guided import RewardGuidedAgent

    guided = {}
    for key, checkpoint in checkpoints.items():
        if key == "vla_il" or key.startswith("vla_rl_rwm@"):
            name = key.replace("@", "_guided@") if "@" in key else f"{key}_guided"
            target = folder / "guided" / name.replace("@", "_seed")
            RewardGuidedAgent.assemble(target, str(checkpoint), rwm_checkpoint, config.guided_reward_weight)
            guided[name] = str(target)
    return guided


def run_pipeline(config: PipelineConfig) -> Path:
    folder = config.folder()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    log = StageLog(folder)
    data = run_stage(log, "data", lambda: stage_data(config))
    root = data["data_root"]
    il = run_stage(log, "il", lambda: stage_il(config, root, folder))
    rwm = run_stage(log, "rwm", lambda: stage_rwm(config, root, folder, il.get("vla")))
    if log.done("rl") and rl_run_names(log.result("rl")) != rl_run_names(expected_rl_runs(config)):
        log.forget("rl", "eval")  # other seeds asked for: finished runs resume at once, the new ones train
    checkpoints: dict[str, str | None] = {"constant_velocity": None, "human": None}
    for agent in config.il_agents:
        checkpoints["vla_il" if agent == "vla" else agent] = il[agent]
    guided = config.guided_reward_weight is not None and "vla" in il
    if guided:
        checkpoints.update(guided_checkpoints(config, folder, checkpoints, rwm["checkpoint"]))
    with JobPool(config.jobs) as pool:
        queued: dict[str, Future] = {}

        def evaluate_alongside() -> None:  # the agents that need no RL, scored while the longer RL run goes on
            if config.jobs > 1 and not log.done("eval"):
                queued.update(submit_evals(config, root, folder, checkpoints, pool))

        rl = run_stage(log, "rl", lambda: stage_rl(config, root, folder, il["vla"], rwm["checkpoint"], pool,
                                                   evaluate_alongside))
        tuned = {f"vla_rl_{reward_name}@{seed}": run["exported"]
                 for reward_name, runs in rl.items() for run, seed in zip(runs, config.seeds)}
        if guided:
            tuned.update(guided_checkpoints(config, folder, tuned, rwm["checkpoint"]))
        checkpoints.update(tuned)
        if log.done("eval") and set(log.result("eval")) != set(checkpoints):
            log.forget("eval")  # other agents asked for (e.g. the guided rows): score them all again
        rows = run_stage(log, "eval", lambda: stage_eval(config, root, folder, checkpoints, pool, queued))
    report = write_report(folder, config, rows, rl, rwm, log.seconds())
    print((report / "report.md").read_text())
    print(f"[pipeline] report: {report}")
    return report


def register(sub: argparse._SubParsersAction, groups: dict) -> None:
    parser = sub.add_parser("pipeline", help="all three stages of IRL-VLA, then the evaluation report")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS), help="sizes (default: 2 CPU cores)")
    parser.add_argument("--data-root", help="dataset root (default: $OPENSCENE_DATA_ROOT or the synthetic world)")
    parser.add_argument("--output", help="pipeline folder (default: <exp_root>/pipeline/<preset>); resumes if present")
    parser.add_argument("--seeds", type=int, nargs="+", help="RL seeds (default: preset)")
    parser.add_argument("--workers", type=int, help="Ray workers for labelling and scoring")
    parser.add_argument("--rwm-variant", help="Reward World Model variant of the RWM stage (default rwm; e.g. rwm-large)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    config = PipelineConfig.preset(args.preset, data_root=args.data_root, output_dir=args.output,
                                   seeds=tuple(args.seeds) if args.seeds else None, workers=args.workers,
                                   rwm_variant=args.rwm_variant)
    run_pipeline(config)
    return 0
