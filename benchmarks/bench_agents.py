"""Inference latency of every registered agent, and of the VLA's planner against the number of denoising steps.

    .venv/bin/python benchmarks/bench_agents.py [--repeats 20] [--batch 1] [--threads 2] [--data-root DIR]
    python benchmarks/bench_agents.py --device cuda --preset real --batch 8   # NAVSIM-size agents on a GPU

Part 1 times `agent.forward` on features built by each agent's own builders from one scene of the navtest split
(the embedded synthetic data unless `$OPENSCENE_DATA_ROOT` says otherwise), batch `--batch`, on `--device`, untrained
weights: latency does not depend on them. `--preset real` builds the learnable agents at the sizes of
`irlvla train il --preset real`; on CUDA the forward also runs under bf16 autocast, as that training does. Part 2 times the VLA planner alone on a fixed scene context (from random
observations of the right shapes, so it runs without data) for
K = 1, 2, 5, 10, 20 truncated DDIM steps from the anchors, side by side with the reference that DiffusionDrive
compares against: 20 steps of vanilla diffusion from pure noise (t = 999). DiffusionDrive reports 2 steps at 7.6 ms
vs 130 ms for the 20-step head on an RTX 4090 (ratio 0.06). Part 3 times the RWM mode choice (`agents.reward_guided`):
the VLA alone against the VLA plus the default-size RWM scoring all its modes, one scene.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from agents.registry import AGENT_CLASSES, ASSEMBLED, PARAMETER_FREE, make_agent
from agents.reward_guided import RewardGuidedAgent
from agents.training.config import ILConfig
from agents.vla import VLAAgent
from irlvla_env.navsim.loader import load_split

STEP_COUNTS = (1, 2, 5, 10, 20)
REFERENCE_STEPS = 20


def synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """`fn` that returns only once the GPU has finished its work, so wall time covers the kernels it queued."""
    if device.type != "cuda":
        return fn
    return lambda: (fn(), torch.cuda.synchronize(device))


def time_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn` in milliseconds after two warm-up calls."""
    for _ in range(2):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(samples)


def time_interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function in ms, calling them in turn each round so that load from other
    processes hits every entry alike (the ratios stay meaningful on a shared machine)."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(1000.0 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in samples.items()}


def first_scene(agent, data_root: str | None):
    """`(agent_input, scene)` of the first navtest scene, loaded with the agent's sensors."""
    scenes = load_split("navtest", data_root, sensor_config=agent.get_sensor_config(), max_scenes=1)
    token = scenes.tokens[0]
    return scenes.get_agent_input_from_token(token), scenes.get_scene_from_token(token)


def repeat_batch(sample: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
    """One sample's tensors repeated `batch` times along a new leading dimension."""
    return {key: value.unsqueeze(0).expand(batch, *value.shape).contiguous() for key, value in sample.items()}


def batched_features(agent, agent_input, batch: int) -> dict[str, torch.Tensor]:
    """The agent's features of one input, repeated `batch` times along a new leading dimension."""
    features: dict[str, torch.Tensor] = {}
    for builder in agent.get_feature_builders():
        features.update(builder.compute_features(agent_input))
    return repeat_batch(features, batch)


def where(device: torch.device) -> str:
    return f"{torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (what IL training and a deployed GPU policy use); nothing on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def build_agent(name: str, preset: str):
    """Agent `name` at the CPU default or at the `real` IL preset's sizes."""
    kwargs = ILConfig.preset(preset, agent=name).agent_kwargs if name not in PARAMETER_FREE else {}
    return make_agent(name, **kwargs).eval()


def bench_agents(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    print(f"\n== agent inference latency ({where(device)}, preset {args.preset}, batch {args.batch}) ==")
    print(f"{'agent':<18} {'params':>12} {'latency ms':>11} {'ratio to vla':>13}")
    rows = []
    for name in (name for name in AGENT_CLASSES if name not in ASSEMBLED):  # the guided VLA: `bench_guided`
        agent = build_agent(name, args.preset)
        params = sum(p.numel() for p in agent.parameters())
        agent_input, scene = first_scene(agent, args.data_root)
        with torch.no_grad(), autocast(device):
            try:
                features = batched_features(agent, agent_input, args.batch)
            except NotImplementedError:  # no feature builders (log replay): timed per compute_trajectory call
                ms = time_ms(lambda: agent.compute_trajectory(agent_input, scene), args.repeats)
            else:
                agent.to(device)
                features = {key: value.to(device) for key, value in features.items()}
                ms = time_ms(synchronized(lambda: agent.forward(features), device), args.repeats)
        rows.append((name, params, ms))
    vla_ms = next(ms for name, _, ms in rows if name == "vla")
    for name, params, ms in rows:
        print(f"{name:<18} {params:>12,} {ms:>11.2f} {ms / vla_ms:>13.2f}")


def random_observations(agent: VLAAgent, batch: int) -> dict[str, np.ndarray]:
    """Observations of the VLA's shapes; latency does not depend on their content, so no data set is needed."""
    config, rng = agent.config, np.random.default_rng(0)
    return {
        "camera": rng.integers(0, 256, (batch, config.camera_height, config.camera_width, 3), dtype=np.uint8),
        "lidar_bev": rng.random((batch, 2, config.lidar_bev_size, config.lidar_bev_size), dtype=np.float32),
        "ego_status": rng.normal(size=(batch, config.num_history, 7)).astype(np.float32),
        "command": np.eye(4, dtype=np.float32)[rng.integers(0, 4, batch)],
    }


def bench_planner(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    agent = build_agent("vla", args.preset).to(device)
    features = agent.observation_features(random_observations(agent, args.batch))
    planner, config = agent.planner, agent.config
    with torch.no_grad(), autocast(device):
        context = agent.encode_context(features)
        fns = {"encode": lambda: agent.encode_context(features)}
        fns["reference"] = lambda: planner.sample_chain(
            context, num_steps=REFERENCE_STEPS, start_timestep=config.num_train_timesteps, deterministic=True
        )
        for k in STEP_COUNTS:
            fns[k] = lambda k=k: planner.sample_chain(context, num_steps=k, deterministic=True)
        timings = time_interleaved_ms({key: synchronized(fn, device) for key, fn in fns.items()}, args.repeats)
    encode_ms, reference_ms = timings["encode"], timings["reference"]
    rows = [(k, timings[k]) for k in STEP_COUNTS]
    print(f"\n== VLA planner latency vs denoising steps ({where(device)}, preset {args.preset}, batch {args.batch}, "
          f"{config.num_anchors} modes) ==")
    print(f"scene encoding (VLM + BEV), once per observation: {encode_ms:.2f} ms")
    print(f"{'steps':>5} {'start t':>8} {'planner ms':>11} {'ratio':>7} {'full policy ms':>15} {'ratio':>7}")
    for k, ms in rows:
        start = (config.start_timestep // k) * k - 1
        full_ratio = (encode_ms + ms) / (encode_ms + reference_ms)
        print(f"{k:>5} {start:>8} {ms:>11.2f} {ms / reference_ms:>7.2f} {encode_ms + ms:>15.2f} {full_ratio:>7.2f}")
    print(
        f"{REFERENCE_STEPS:>5} {config.num_train_timesteps - 1:>8} {reference_ms:>11.2f} {1.0:>7.2f} "
        f"{encode_ms + reference_ms:>15.2f} {1.0:>7.2f}   <- reference: vanilla diffusion from pure noise"
    )


def bench_guided(args: argparse.Namespace) -> None:
    """What letting the RWM choose the VLA's mode costs: one scene's VLA forward against forward + RWM on its modes."""
    from reward_models.model import RewardWorldModel, RWMConfig, RWMRewardModel

    device = torch.device(args.device)
    agent = build_agent("vla", args.preset).to(device)
    config = agent.config
    rwm = RWMRewardModel(RewardWorldModel(RWMConfig(camera_shape=(config.camera_height, config.camera_width),
                                                    lidar_bins=config.lidar_bev_size)), device=args.device)
    guided = RewardGuidedAgent(agent, rwm)
    observation = {key: value[0] for key, value in random_observations(agent, 1).items()}
    batch = {key: value[None] for key, value in observation.items()}
    with torch.no_grad(), autocast(device):
        timings = time_interleaved_ms({
            "vla": synchronized(lambda: agent(agent.observation_features(batch)), device),
            "vla + rwm": synchronized(lambda: guided.choose(observation), device),
        }, args.repeats)
    print(f"\n== RWM mode choice overhead ({where(device)}, preset {args.preset}, one scene, {config.num_anchors} modes, "
          f"RWM {sum(p.numel() for p in rwm.model.parameters()):,} params) ==")
    for name, ms in timings.items():
        print(f"{name:<10} {ms:>9.2f} ms {ms / timings['vla']:>6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", default=None, help="dataset root (default: $OPENSCENE_DATA_ROOT or synthetic)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--preset", default="cpu", choices=["cpu", "real"], help="agent sizes (default: cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        bench_agents(args)
    except FileNotFoundError as err:  # the agents need a scene; the planner benchmark below does not
        print(f"agent latency skipped: {err}\n(generate the synthetic data set first: irlvla data synth)")
    bench_planner(args)
    bench_guided(args)


if __name__ == "__main__":
    main()
