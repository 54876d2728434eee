"""One imitation-training step of an agent against the batch size: seconds per step, samples/s and peak memory.

    python benchmarks/bench_train_step.py --agent vla --preset real --device cuda --batches 8 16 32 64
    python benchmarks/bench_train_step.py --agent transfuser                 # CPU sizes on the CPU

It answers "which batch fits this GPU, and how fast": features and targets are built by the agent's own builders
from one navtest scene (the embedded synthetic data unless `$OPENSCENE_DATA_ROOT` says otherwise) and repeated to
each batch size, then forward, loss, backward and an AdamW step run as `irlvla train il` runs them (bf16 autocast
on CUDA); "vs first" is the throughput relative to the first batch size. Peak memory is
`torch.cuda.max_memory_allocated` (CUDA only), so the caching allocator's reserve is not counted. A batch that runs out of memory is reported as such and the larger ones are skipped.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench_agents import autocast, build_agent, first_scene, repeat_batch, where  # benchmarks/, beside this file


def one_sample(agent, data_root: str | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Features and targets of the first navtest scene, built by the agent's builders."""
    agent_input, scene = first_scene(agent, data_root)
    features: dict[str, torch.Tensor] = {}
    targets: dict[str, torch.Tensor] = {}
    for builder in agent.get_feature_builders():
        features.update(builder.compute_features(agent_input))
    for builder in agent.get_target_builders():
        targets.update(builder.compute_targets(scene))
    return features, targets


def time_steps(agent, optimizer, features, targets, device: torch.device, repeats: int) -> float:
    """Median seconds of one training step after one warm-up step."""

    def step() -> None:
        with autocast(device):
            predictions = agent(features)
            loss = agent.compute_loss(features, targets, predictions)
            loss = loss["loss"] if isinstance(loss, dict) else loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="vla")
    parser.add_argument("--preset", default="cpu", choices=["cpu", "real"], help="agent sizes (default: cpu)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    agent = build_agent(args.agent, args.preset)
    features, targets = one_sample(agent, args.data_root)
    agent.to(device).train()
    optimizer = torch.optim.AdamW([p for p in agent.parameters() if p.requires_grad], lr=1e-5)
    trainable = sum(p.numel() for p in agent.parameters() if p.requires_grad)
    print(f"== {args.agent} ({args.preset}) training step on {where(device)}: {trainable:,} trainable parameters ==")
    print(f"{'batch':>6} {'s/step':>9} {'samples/s':>10} {'vs first':>9} {'peak GB':>9}")
    first_rate = None
    for batch in args.batches:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            on_device = [{k: v.to(device) for k, v in repeat_batch(d, batch).items()} for d in (features, targets)]
            seconds = time_steps(agent, optimizer, *on_device, device, args.repeats)
        except torch.OutOfMemoryError:
            print(f"{batch:>6} {'out of memory':>30}")
            break
        peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
        rate = batch / seconds
        first_rate = first_rate or rate
        print(f"{batch:>6} {seconds:>9.3f} {rate:>10.1f} {rate / first_rate:>8.2f}x {peak:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
