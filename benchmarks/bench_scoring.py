"""Rule-based EPDMS throughput on the synthetic navtest, per CPU core, next to navsim's official scorer.

Measures (single process, one thread): metric caches built per second, and trajectories scored per second for
K = 1, 64 and 256 candidates per scene (perturbations of the logged future), log-replay traffic, human filter on.
Reference figures for navsim's scorer (per core): ≈ 1.4 metric caches/s and ≈ 5 trajectories/s. Then two of our
own changes against what they replaced, in the same run: the comfort metrics' Savitzky-Golay filters as a cached
matrix against `scipy.signal.savgol_filter` per call, and one plan per scene scored through the metric-cache store
with the file read for every plan (each agent of an evaluation, before) against once per process (now).

    OMP_NUM_THREADS=1 python benchmarks/bench_scoring.py --scenes 8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

OFFICIAL_CACHES_PER_S = 1.4
OFFICIAL_TRAJECTORIES_PER_S = 5.0


def _loader(scenes: int):
    from irlvla_env.navsim.loader import load_split

    try:
        return load_split("navtest")
    except FileNotFoundError:
        from irlvla_env.synthetic.generate import ensure_dataset
        from irlvla_env.synthetic.config import SplitSize, SynthConfig

        # Scoring reads logs and maps only, so tiny sensors keep the one-off generation short.
        small = SynthConfig(
            splits={"navtest": SplitSize(2, max(20, scenes + 14))}, image_size=(64, 36), lidar_beams=8,
            lidar_azimuth_step_deg=4.0,
        )
        root = ensure_dataset(Path(tempfile.gettempdir()) / "irlvla_bench_scoring", small)
        return load_split("navtest", data_root=root, maps_root=root / "maps")


def candidates(human: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """`k` plans around the logged one: speed scaled 0.5 … 1.3, lateral drift ±3 m, heading noise."""
    scale = rng.uniform(0.5, 1.3, (k, 1))
    drift = rng.uniform(-3.0, 3.0, (k, 1)) * np.linspace(0.1, 1.0, len(human))[None, :]
    out = np.repeat(human[None], k, axis=0).astype(np.float64)
    out[..., 0] *= scale
    out[..., 1] += drift
    out[..., 2] += rng.normal(0.0, 0.02, out.shape[:2])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from irlvla_env.scoring.epdms import score_trajectories
    from irlvla_env.scoring.metric_cache import MetricCacheStore, build_metric_cache

    loader = _loader(args.scenes)
    tokens = loader.tokens[: args.scenes]
    scenes = [loader.get_scene_from_token(t) for t in tokens]
    for scene in scenes[:1]:
        build_metric_cache(scene)  # warm-up: map trees, imports
    start = time.perf_counter()
    caches = [build_metric_cache(scene) for scene in scenes]
    cache_rate = len(caches) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as folder:  # storage round trip, reported separately
        store = MetricCacheStore(folder)
        start = time.perf_counter()
        for cache in caches:
            store.put(cache)
        for cache in caches:
            store.get(cache.token)
        io_ms = 1e3 * (time.perf_counter() - start) / len(caches)

    rng = np.random.default_rng(0)
    print(f"scenes: {len(caches)} (synthetic navtest), single core")
    print(f"{'measure':<34} {'ours':>10} {'official':>10} {'ratio':>8}")
    print(f"{'metric caches / s':<34} {cache_rate:10.2f} {OFFICIAL_CACHES_PER_S:10.2f} {cache_rate / OFFICIAL_CACHES_PER_S:8.1f}x")
    print(f"{'cache put+get [ms / scene]':<34} {io_ms:10.1f} {'-':>10} {'-':>8}")
    for k in (1, 64, 256):
        batches = [candidates(c.human_trajectory, k, rng) for c in caches]
        for cache, batch in zip(caches, batches):  # warm the per-scene memo (human run, PDM reference)
            score_trajectories(cache, batch[:1])
        start = time.perf_counter()
        for _ in range(args.repeats):
            for cache, batch in zip(caches, batches):
                score_trajectories(cache, batch)
        rate = args.repeats * k * len(caches) / (time.perf_counter() - start)
        label = f"trajectories / s (K = {k})"
        print(f"{label:<34} {rate:10.1f} {OFFICIAL_TRAJECTORIES_PER_S:10.2f} {rate / OFFICIAL_TRAJECTORIES_PER_S:8.1f}x")
    comfort_filters(args.repeats)
    store_reuse(caches, rng)


def _ms(work, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return 1e3 * (time.perf_counter() - start) / repeats


def comfort_filters(repeats: int) -> None:
    """One comfort signal set's filters (K = 21 rollouts, 55 samples): scipy per call vs the cached operator."""
    from scipy.signal import savgol_filter

    from irlvla_env.scoring.metrics import savgol_operator

    signals = np.random.default_rng(1).normal(size=(21, 55))
    settings = [(8, 2, 0), (8, 2, 0), (8, 2, 0), (15, 2, 1), (15, 2, 1), (5, 2, 1), (5, 3, 2)]  # comfort_signals'
    for window, poly, deriv in settings:
        np.testing.assert_allclose(signals @ savgol_operator(55, window, poly, deriv, 0.1),
                                   savgol_filter(signals, window, poly, deriv=deriv, delta=0.1, axis=-1), atol=1e-9)
    scipy_ms = _ms(lambda: [savgol_filter(signals, w, p, deriv=d, delta=0.1, axis=-1) for w, p, d in settings],
                   50 * repeats)
    ours_ms = _ms(lambda: [signals @ savgol_operator(55, w, p, d, 0.1) for w, p, d in settings], 50 * repeats)
    print(f"{'comfort filters [ms / set]':<34} {ours_ms:10.3f} {scipy_ms:10.3f} {scipy_ms / ours_ms:8.1f}x  (scipy)")


def store_reuse(caches: list, rng: np.random.Generator) -> None:
    """One plan per scene through `MetricCacheStore.get`: the file read every time vs once per process."""
    from irlvla_env.scoring import metric_cache
    from irlvla_env.scoring.epdms import score_trajectories

    plans = [candidates(c.human_trajectory, 1, rng) for c in caches]
    with tempfile.TemporaryDirectory() as folder:
        store = metric_cache.MetricCacheStore(folder)
        for cache in caches:
            store.put(cache)

        def score_all(cold: bool) -> None:
            for cache, plan in zip(caches, plans):
                if cold:
                    metric_cache._load.cache_clear()
                score_trajectories(store.get(cache.token), plan)

        score_all(False)
        cold_ms = _ms(lambda: score_all(True), 2) / len(caches)
        warm_ms = _ms(lambda: score_all(False), 2) / len(caches)
    print(f"{'one plan via the store [ms / scene]':<34} {warm_ms:10.1f} {cold_ms:10.1f} {cold_ms / warm_ms:8.1f}x  (read per plan)")


if __name__ == "__main__":
    main()
