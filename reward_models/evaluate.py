"""How faithful and how fast a Reward World Model is, measured against the rule-based scorer on held-out scenes.

Fidelity (on labelled navtest candidates):
- per sub-score: AUROC for the binary ones (DAC, TLC, TTC, LK, HC, EC; positive = the score is 1) and for NC/DDC
  the 3-class accuracy plus the AUROC of "score < 1" (a collision or a wrong-way drive);
- Pearson and Spearman correlation of predicted vs true EPDMS over all candidates;
- selection: the true EPDMS of the candidate the RWM picks in each scene, against the best of K (oracle), the human
  demonstration and a random pick — what matters when the RWM ranks a policy's samples.
Speed: trajectories per second of the RWM and of the rule-based scorer, on the same scenes in the same run.
A calibration plot (reliability of the binary heads, predicted vs true EPDMS) is written as PNG.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from irlvla_env.rewards import SUBSCORE_NAMES, RewardModel
from reward_models.labelling import LabelledScenes

BINARY_NAMES = ("DAC", "TLC", "TTC", "LK", "HC", "EC")
THREE_CLASS_NAMES = ("NC", "DDC")


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve by the rank statistic (ties averaged); NaN when only one class is present."""
    scores, positives = np.asarray(scores, np.float64).ravel(), np.asarray(positives, bool).ravel()
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def correlation(predicted: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman); NaN when either side is constant."""
    p, t = np.asarray(predicted, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    if p.std() == 0 or t.std() == 0:
        return float("nan"), float("nan")
    return float(stats.pearsonr(p, t)[0]), float(stats.spearmanr(p, t)[0])


def selection_metrics(predicted: np.ndarray, true: np.ndarray, demo_index: int = 0, seed: int = 0) -> dict[str, float]:
    """Mean true EPDMS `(S, K)` of the RWM's pick per scene, of the best, the human and a random candidate."""
    rows = np.arange(len(true))
    random_pick = np.random.default_rng(seed).integers(0, true.shape[1], len(true))
    picked = true[rows, predicted.argmax(1)]
    return {
        "epdms_rwm_pick": float(picked.mean()),
        "epdms_best_of_k": float(true.max(1).mean()),
        "epdms_human": float(true[:, demo_index].mean()),
        "epdms_random_pick": float(true[rows, random_pick].mean()),
        "gap_to_best": float((true.max(1) - picked).mean()),
    }


def fidelity_metrics(predicted_epdms: np.ndarray, true_epdms: np.ndarray) -> dict[str, float]:
    """Correlation and selection quality of predicted vs true EPDMS, both `(S, K)`."""
    pearson, spearman = correlation(predicted_epdms, true_epdms)
    return {"pearson": pearson, "spearman": spearman, **selection_metrics(predicted_epdms, true_epdms)}


def subscore_metrics(predicted: dict[str, np.ndarray], labels: np.ndarray, class_probs: dict[str, np.ndarray]) -> dict[str, float]:
    """AUROC per binary sub-score, accuracy (+ AUROC of "< 1") per 3-class one.

    :param predicted: short name -> `(N,)` predicted probability / expected value.
    :param labels: `(N, 9)` true sub-scores.
    :param class_probs: `NC`/`DDC` -> `(N, 3)` predicted class distributions.
    """
    out: dict[str, float] = {}
    for name in BINARY_NAMES:
        true = labels[:, SUBSCORE_NAMES.index(name)]
        valid = np.isfinite(true)
        out[f"auroc_{name}"] = auroc(predicted[name][valid], true[valid] >= 0.5) if valid.any() else float("nan")
    for name in THREE_CLASS_NAMES:
        true = labels[:, SUBSCORE_NAMES.index(name)]
        classes = np.clip(np.round(true * 2), 0, 2).astype(int)
        out[f"accuracy_{name}"] = float(np.mean(class_probs[name].argmax(1) == classes))
        out[f"auroc_{name}"] = auroc(predicted[name], true >= 1.0)
    ep = labels[:, SUBSCORE_NAMES.index("EP")]
    out["mae_EP"] = float(np.mean(np.abs(predicted["EP"] - ep)))
    return out


def calibration_plot(
    predicted: dict[str, np.ndarray], labels: np.ndarray, predicted_epdms: np.ndarray, true_epdms: np.ndarray,
    path: str | Path, bins: int = 10,
) -> Path:
    """Reliability diagram of the binary heads (and NC = 1) next to a predicted-vs-true EPDMS scatter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    edges = np.linspace(0, 1, bins + 1)
    for name in ("NC", *BINARY_NAMES):
        true = labels[:, SUBSCORE_NAMES.index(name)]
        valid = np.isfinite(true)
        if not valid.any():
            continue
        prob, hit = predicted[name][valid], (true[valid] >= (1.0 if name == "NC" else 0.5))
        which = np.clip(np.digitize(prob, edges) - 1, 0, bins - 1)
        counts = np.bincount(which, minlength=bins)
        keep = counts > 0
        mean_prob = np.bincount(which, prob, bins)[keep] / counts[keep]
        frequency = np.bincount(which, hit.astype(float), bins)[keep] / counts[keep]
        left.plot(mean_prob, frequency, marker="o", label=name)
    left.plot([0, 1], [0, 1], "k--", lw=1)
    left.set(xlabel="predicted probability", ylabel="observed frequency", title="sub-score calibration")
    left.legend(fontsize=8)
    right.scatter(true_epdms.ravel(), predicted_epdms.ravel(), s=3, alpha=0.3)
    right.plot([0, 1], [0, 1], "k--", lw=1)
    right.set(xlabel="rule-based EPDMS", ylabel="RWM EPDMS", title="EPDMS: predicted vs true")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def flatten_scenes(data: LabelledScenes, scenes: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Per-row observations, trajectories `(B, 8, 3)` and tokens of every candidate of `scenes` (protocol input)."""
    k = data.num_candidates
    repeat = np.repeat(scenes, k)
    observations = {key: value[repeat] for key, value in data.observations.items()}
    trajectories = data.candidates[scenes].reshape(-1, 8, 3)
    return observations, trajectories, [str(t) for t in data.tokens[repeat]]


def throughput(model: RewardModel, data: LabelledScenes, scenes: np.ndarray, repeats: int = 3) -> float:
    """Trajectories per second of `model.predict` on all candidates of `scenes` (best of `repeats`)."""
    observations, trajectories, tokens = flatten_scenes(data, scenes)
    model.predict(observations, trajectories[:1], tokens[:1])  # warm-up (lazy imports, caches)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(observations, trajectories, tokens)
        best = min(best, time.perf_counter() - start)
    return len(trajectories) / best


def evaluate_reward_model(model: RewardModel, data: LabelledScenes, batch_scenes: int = 32) -> tuple[dict[str, float], dict]:
    """Fidelity metrics of any `RewardModel` on labelled scenes; returns (metrics, raw predictions for plots)."""
    k = data.num_candidates
    subscores = {name: [] for name in SUBSCORE_NAMES}
    epdms, reward, class_probs = [], [], {name: [] for name in THREE_CLASS_NAMES}
    for start in range(0, len(data), batch_scenes):
        scenes = np.arange(start, min(start + batch_scenes, len(data)))
        observations, trajectories, tokens = flatten_scenes(data, scenes)
        output = model.predict(observations, trajectories, tokens)
        for name in SUBSCORE_NAMES:
            subscores[name].append(output.subscores[name])
        epdms.append(output.epdms)
        reward.append(output.reward)
        if hasattr(model, "predict_tensors"):  # an RWM: its 3-class distributions, for accuracy
            prediction = model.predict_tensors(observations, trajectories, tokens)
            for name in THREE_CLASS_NAMES:
                class_probs[name].append(prediction.class_probs(name).mean(-2).cpu().numpy())
    predicted = {name: np.concatenate(v) for name, v in subscores.items()}
    if class_probs["NC"]:
        probs = {name: np.concatenate(v) for name, v in class_probs.items()}
    else:  # an exact scorer: a one-hot distribution of its own values
        probs = {name: np.eye(3)[np.clip(np.round(predicted[name] * 2), 0, 2).astype(int)] for name in THREE_CLASS_NAMES}
    predicted_epdms = np.concatenate(epdms).reshape(len(data), k)
    predicted_reward = np.concatenate(reward).reshape(len(data), k)
    labels = data.labels.reshape(-1, len(SUBSCORE_NAMES))
    metrics = subscore_metrics(predicted, labels, probs)
    metrics.update(fidelity_metrics(predicted_epdms, data.epdms))
    reward_pick = selection_metrics(predicted_reward, data.epdms)
    metrics["epdms_reward_pick"] = reward_pick["epdms_rwm_pick"]
    raw = {"subscores": predicted, "labels": labels, "epdms": predicted_epdms}
    return metrics, raw


def evaluate_rwm(
    model: RewardModel,
    data: LabelledScenes,
    output_dir: str | Path,
    rule_based: RewardModel | None = None,
    speed_scenes: int = 8,
) -> dict[str, Any]:
    """Fidelity + calibration plot + speed against the rule-based scorer; writes `metrics.json` and the PNG."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics, raw = evaluate_reward_model(model, data)
    calibration_plot(raw["subscores"], raw["labels"], raw["epdms"], data.epdms, output_dir / "calibration.png")
    scenes = np.arange(min(speed_scenes, len(data)))
    metrics["throughput_rwm"] = throughput(model, data, scenes)
    if rule_based is not None:
        metrics["throughput_rule_based"] = throughput(rule_based, data, scenes, repeats=1)
        metrics["speedup"] = metrics["throughput_rwm"] / metrics["throughput_rule_based"]
    report = {"model": getattr(model, "name", type(model).__name__), "scenes": len(data),
              "candidates_per_scene": data.num_candidates, "metrics": metrics}
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    return report


def format_report(report: dict[str, Any]) -> str:
    """A two-column text table of the metrics, fidelity first, then speed side by side."""
    m = report["metrics"]
    lines = [f"RWM evaluation: {report['model']} on {report['scenes']} scenes x {report['candidates_per_scene']} candidates"]
    for key in sorted(m):
        lines.append(f"  {key:<28} {m[key]:>12.4f}")
    return "\n".join(lines)
