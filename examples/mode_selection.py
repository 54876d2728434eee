"""Which of the VLA's own modes would a reward model pick? The headroom RL on that reward can reach.

    python examples/mode_selection.py --vla <IL checkpoint> --reward-model <RWM checkpoint or name> --scenes 150

For every scene the VLA plans all its modes; each is scored with the rule-based EPDMS (one-stage) and with the
reward model, and the script prints the true EPDMS of the mode picked by

- `confidence`: the VLA's own choice (its imitation policy);
- `reward`: the reward model's best mode;
- `kl_optimum`: argmax of confidence / temperature + reward / beta, the mode a KL-regularised RL on this reward
  converges to (the optimum of E[r] - beta KL(pi || pi_IL) with pi_IL = softmax(confidence / temperature));
- `best`: the rule-based best mode (an oracle).

A reward model whose `reward` pick falls below `confidence` cannot teach RL to choose better modes; a `kl_optimum`
above `confidence` is what RL with that reward could gain in mode choice alone. A second table gives the true
sub-scores at each pick, which shows where a reward model misjudges the policy's own modes.

`--weights` adds picks by argmax(confidence + w * reward); `--exclude-spread 1500` leaves out the default RWM's
labelled navtrain scenes, so w can be chosen on scenes the reward model has not seen (`agents.reward_guided`).

Measured (imitation VLA of a default pipeline, default RWM, 300 navtest scenes): confidence 0.811, reward 0.788,
kl_optimum 0.842, best 0.954. With `--weights` on another pipeline's VLA and RWM: on the 1,320 held-out navtrain
scenes confidence 0.860, w = 20 / 50 / 80 / 120 / 200: 0.873 / 0.883 / 0.885 / 0.885 / 0.880; on all 1,000 navtest
scenes confidence 0.8275, w = 80: 0.859 (best 0.959). Against the confidence pick, the RWM's pick gains DAC (0.91 vs 0.87), DDC and EP
and loses TLC (0.967 vs 1.0), NC and TTC (150 scenes).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm import tqdm

from agents.registry import make_agent
from irlvla_env.envs.scene_pool import ScenePool


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vla", required=True, help="VLA checkpoint folder (or IL run folder)")
    parser.add_argument("--reward-model", default="rwm", help="registered name or checkpoint folder")
    parser.add_argument("--split", default="navtest")
    parser.add_argument("--scenes", type=int, default=150)
    parser.add_argument("--temperature", type=float, default=0.1, help="of the imitation policy's mode softmax")
    parser.add_argument("--beta", type=float, default=0.05, help="KL weight of the regularised optimum")
    parser.add_argument("--weights", default="",
                        help="comma-separated reward weights w: also pick argmax(confidence + w * reward)")
    parser.add_argument("--exclude-spread", type=int, default=0,
                        help="leave out the scenes `spread_tokens(N)` picks, e.g. the RWM's 1,500 labelled navtrain "
                             "scenes, so a weight can be chosen on scenes the reward model has not seen")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",") if w.strip()]

    agent = make_agent("vla", checkpoint=args.vla).eval()
    pool = ScenePool(args.split, agent.observation_config, args.data_root)
    excluded = set(pool.loader.spread_tokens(args.exclude_spread)) if args.exclude_spread else set()
    kept = [token for token in pool.tokens if token not in excluded]
    scenes = kept[:: max(1, len(kept) // args.scenes)][: args.scenes]  # every log, not the first few
    rule, learned = pool.reward_model("epdms"), pool.reward_model(args.reward_model)
    picks: dict[str, list[float]] = {"confidence": [], "reward": [], "kl_optimum": [], "best": []}
    picks.update({f"conf+{w:g}*reward": [] for w in weights})
    subscores: dict[str, dict[str, list[float]]] = {name: {} for name in picks}  # true sub-scores at each pick
    for token in tqdm(scenes, desc="scenes"):
        batch = {key: np.asarray(value)[None] for key, value in pool.observation(token).items()}
        with torch.no_grad():
            out = agent(agent.observation_features(batch))
        modes = out["modes"][0].cpu().numpy().astype(np.float32)
        confidence = out["confidences"][0].cpu().numpy()
        repeated = {key: np.repeat(value, len(modes), axis=0) for key, value in batch.items()}
        tokens = [token] * len(modes)
        scored = rule.predict(repeated, modes, tokens)
        true = scored.epdms
        reward = learned.predict(repeated, modes, tokens).reward
        chosen = {
            "confidence": int(np.argmax(confidence)),
            "reward": int(np.argmax(reward)),
            "kl_optimum": int(np.argmax(confidence / args.temperature + reward / args.beta)),
            "best": int(np.argmax(true)),
            **{f"conf+{w:g}*reward": int(np.argmax(confidence + w * reward)) for w in weights},
        }
        for name, index in chosen.items():
            picks[name].append(true[index])
            for metric, values in scored.subscores.items():
                subscores[name].setdefault(metric, []).append(values[index])
    result = {name: float(np.mean(values)) for name, values in picks.items()}
    print(f"true EPDMS (one-stage) of the picked mode, {len(scenes)} {args.split} scenes, "
          f"{len(modes)} modes each, reward model {args.reward_model!r}:")
    for name, value in result.items():
        print(f"  {name:<17} {value:.4f}")
    metrics = [m for m in subscores["best"] if np.isfinite(subscores["best"][m]).any()]
    print("true sub-scores at each pick:")
    print("  " + " " * 17 + "".join(f"{m:>7}" for m in metrics))
    for name, table in subscores.items():
        print(f"  {name:<17}" + "".join(f"{np.nanmean(table[m]):>7.3f}" for m in metrics))
    return result


if __name__ == "__main__":
    main()
