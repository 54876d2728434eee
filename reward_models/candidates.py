"""Candidate trajectories per scene: what the Reward World Model learns to tell apart.

A scene's candidate set mixes four sources, each with a job:

- **vocabulary** — k-means centres of navtrain human futures (the planning vocabulary of Hydra-MDP/DiffusionDrive):
  plausible manoeuvres that ignore this scene, half chosen near the demonstration (hard negatives), half at random;
- **perturbations** of the demonstration — lateral/longitudinal/heading offsets, speed scaling, swerves, hard brakes,
  lane changes: near-misses whose sub-scores flip (off-road, collision, discomfort) while the shape stays human;
- the **demonstration** itself, which maximum-entropy IRL must rank first;
- **policy samples** from any callable `agent_input -> (N, 8, 3)` (the VLA's diffusion planner), so the reward is
  accurate where RL will query it.

Every draw is seeded by `(seed, token)`, so a scene's candidates do not depend on which worker or shard made them.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from tqdm.auto import tqdm

POSE_DT = 0.5  # [s] between trajectory poses
NUM_POSES = 8
LANE_WIDTH = 3.5  # [m] typical lane width, for lane-change perturbations

PolicySampler = Callable[[Any], np.ndarray]


class Source(IntEnum):
    """Where a candidate came from (stored with the labels; evaluation reports per source)."""

    DEMONSTRATION = 0
    VOCABULARY = 1
    PERTURBATION = 2
    POLICY = 3


@dataclass
class CandidateConfig:
    """How many candidates of each source a scene gets; `K = 1 + num_vocabulary + num_perturbations + num_policy`.

    :param num_vocabulary: vocabulary entries per scene (half nearest to the demonstration, half random).
    :param num_perturbations: perturbed copies of the demonstration.
    :param num_policy: samples drawn from the policy, if one is given (otherwise filled from the vocabulary).
    :param seed: base seed; a scene's stream is seeded by `(seed, crc32(token))`.
    """

    num_vocabulary: int = 32
    num_perturbations: int = 31
    num_policy: int = 0
    seed: int = 0

    @property
    def num_candidates(self) -> int:
        return 1 + self.num_vocabulary + self.num_perturbations + self.num_policy


@dataclass
class Candidates:
    """`trajectories (K, 8, 3)` local float32 and `sources (K,)` int8 of one scene; row `demo_index` is the human."""

    trajectories: np.ndarray
    sources: np.ndarray
    demo_index: int = 0


# --------------------------------------------------------------------------------------------- geometry


def headings_from_positions(xy: np.ndarray, initial_heading: float | np.ndarray = 0.0) -> np.ndarray:
    """Heading of each pose from the direction of travel `(..., P, 2) -> (..., P)`; a pose that barely moves
    keeps the previous heading (a stopped car does not turn)."""
    step = np.diff(xy, axis=-2, prepend=np.zeros_like(xy[..., :1, :]))
    heading = np.arctan2(step[..., 1], step[..., 0])
    moving = np.linalg.norm(step, axis=-1) > 0.05
    out = np.empty(heading.shape)
    previous = np.broadcast_to(np.asarray(initial_heading, dtype=np.float64), heading.shape[:-1]).copy()
    for p in range(heading.shape[-1]):
        previous = np.where(moving[..., p], heading[..., p], previous)
        out[..., p] = previous
    return out


def _with_origin(xy: np.ndarray) -> np.ndarray:
    """Prepend the ego origin `(0, 0)` to `(..., P, 2)` positions."""
    return np.concatenate([np.zeros_like(xy[..., :1, :]), xy], axis=-2)


def resample_by_distance(xy: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Positions at arc lengths `distances (..., P)` along the polyline origin -> `xy (..., P, 2)` (extrapolating
    straight past its end); how speed changes keep the path but change the timing."""
    path = _with_origin(xy)
    seg = np.linalg.norm(np.diff(path, axis=-2), axis=-1)
    arc = np.concatenate([np.zeros_like(seg[..., :1]), np.cumsum(seg, axis=-1)], axis=-1)  # (..., P+1)
    flat_path, flat_arc = path.reshape(-1, path.shape[-2], 2), arc.reshape(-1, arc.shape[-1])
    flat_d = np.broadcast_to(distances, xy.shape[:-1]).reshape(-1, xy.shape[-2])
    out = np.empty((flat_path.shape[0], xy.shape[-2], 2))
    for i in range(flat_path.shape[0]):
        a, p, d = flat_arc[i], flat_path[i], flat_d[i]
        if a[-1] < 1e-3:  # a stopped demonstration: move straight ahead
            out[i] = np.stack([d, np.zeros_like(d)], axis=-1)
            continue
        keep = np.concatenate([[True], np.diff(a) > 1e-6])
        a, p = a[keep], p[keep]
        out[i, :, 0] = np.interp(d, a, p[:, 0])
        out[i, :, 1] = np.interp(d, a, p[:, 1])
        beyond = d > a[-1]
        if beyond.any():
            direction = (p[-1] - p[-2]) / max(np.linalg.norm(p[-1] - p[-2]), 1e-6)
            out[i, beyond] = p[-1] + (d[beyond] - a[-1])[:, None] * direction
    return out.reshape(xy.shape)


# ------------------------------------------------------------------------------------------ perturbations


def perturb_demonstration(demo: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` perturbed copies `(count, 8, 3)` of a demonstration `(8, 3)`, cycling through the families of
    the module docstring with random magnitudes, so every family appears once count >= 7."""
    demo = np.asarray(demo, dtype=np.float64)
    t = POSE_DT * np.arange(1, NUM_POSES + 1)
    ramp = np.clip(t / t[-1], 0, 1)
    smooth = 3 * ramp**2 - 2 * ramp**3  # smoothstep 0 -> 1 over the horizon
    normals = np.stack([-np.sin(demo[:, 2]), np.cos(demo[:, 2])], axis=-1)  # left of the path at each pose
    arc_total = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(_with_origin(demo[:, :2]), axis=0), axis=1))])
    arc = arc_total[1:]
    out = np.empty((count, NUM_POSES, 3))
    for i in range(count):
        family = i % 7
        xy, heading = demo[:, :2].copy(), demo[:, 2].copy()
        sign = rng.choice([-1.0, 1.0])
        if family == 0:  # lateral offset that builds up and stays
            xy += sign * rng.uniform(0.5, 4.0) * ramp[:, None] ** 0.5 * normals
            heading = headings_from_positions(xy)
        elif family == 1:  # longitudinal offset: ahead of or behind the human along the path
            shift = rng.uniform(-0.4, 0.6) * max(arc[-1], 4.0) * ramp
            xy = resample_by_distance(demo[:, :2], np.maximum(arc + shift, 0.0))
            heading = headings_from_positions(xy)
        elif family == 2:  # heading offset: rotate the whole plan about the ego
            angle = sign * rng.uniform(0.05, 0.5)
            c, s = np.cos(angle), np.sin(angle)
            xy = xy @ np.array([[c, s], [-s, c]])
            heading = heading + angle
        elif family == 3:  # speed scaling along the same path (fast or slow)
            xy = resample_by_distance(demo[:, :2], arc * rng.choice([rng.uniform(0.3, 0.8), rng.uniform(1.2, 2.0)]))
            heading = headings_from_positions(xy)
        elif family == 4:  # swerve: out and back (a single sine lobe)
            xy += sign * rng.uniform(0.8, 3.0) * np.sin(np.pi * ramp)[:, None] * normals
            heading = headings_from_positions(xy)
        elif family == 5:  # hard brake: constant deceleration to a stop
            v0 = max(arc[0] / POSE_DT, 0.5)
            decel = rng.uniform(3.0, 9.0)
            distance = np.where(t < v0 / decel, v0 * t - 0.5 * decel * t**2, v0**2 / (2 * decel))
            xy = resample_by_distance(demo[:, :2], np.minimum(distance, arc))
            heading = headings_from_positions(xy)
        else:  # lane change, one lane left or right, completed smoothly over the horizon
            xy += sign * LANE_WIDTH * rng.uniform(0.8, 1.1) * smooth[:, None] * normals
            heading = headings_from_positions(xy)
        out[i, :, :2], out[i, :, 2] = xy, heading
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------- vocabulary


def kmeans(points: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """k-means++ then Lloyd iterations on `(N, D)`; returns `(k, D)` centres, sorted by cluster size."""
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if n < k:
        raise ValueError(f"k-means needs at least k={k} points, got {n}")
    rng = np.random.default_rng(seed)
    centres = np.empty((k, points.shape[1]))
    centres[0] = points[rng.integers(n)]
    closest = ((points - centres[0]) ** 2).sum(1)
    for j in range(1, k):
        probs = closest / closest.sum() if closest.sum() > 0 else np.full(n, 1.0 / n)
        centres[j] = points[rng.choice(n, p=probs)]
        closest = np.minimum(closest, ((points - centres[j]) ** 2).sum(1))
    sq_points = (points**2).sum(1)[:, None]
    for _ in range(iterations):
        distance = sq_points - 2 * points @ centres.T + (centres**2).sum(1)[None]
        assign = distance.argmin(1)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, points)
        updated = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        if np.allclose(updated, centres):
            break
        centres = updated
    return centres[np.argsort(-counts, kind="stable")]


def build_vocabulary(futures: np.ndarray, size: int = 256, seed: int = 0) -> np.ndarray:
    """Planning vocabulary `(size, 8, 3)`: k-means over human futures `(N, 8, 3)` on positions, with headings
    taken from the clustered positions (averaging angles directly would be wrong across ±pi)."""
    futures = np.asarray(futures, dtype=np.float64)
    if futures.ndim != 3 or futures.shape[1:] != (NUM_POSES, 3):
        raise ValueError(f"futures must have shape (N, {NUM_POSES}, 3), got {futures.shape}")
    size = min(size, len(futures))
    centres = kmeans(futures[:, :, :2].reshape(len(futures), -1), size, seed=seed).reshape(size, NUM_POSES, 2)
    vocabulary = np.concatenate([centres, headings_from_positions(centres)[..., None]], axis=-1)
    return vocabulary.astype(np.float32)


def human_futures(loader: Any, tokens: Iterable[str] | None = None) -> np.ndarray:
    """The logged 8-pose futures `(N, 8, 3)` of a loader's scenes (progress bar; no sensors needed)."""
    tokens = list(loader.tokens if tokens is None else tokens)
    futures = [
        loader.get_scene_from_token(token).get_future_trajectory(NUM_POSES).poses
        for token in tqdm(tokens, desc="human futures", unit="scene")
    ]
    return np.stack(futures).astype(np.float32)


def save_vocabulary(path: str | Path, vocabulary: np.ndarray) -> Path:
    """Write `(V, 8, 3)` as .npy atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    with os.fdopen(fd, "wb") as handle:
        np.save(handle, np.asarray(vocabulary, dtype=np.float32))
    os.replace(tmp, path)
    return path


def load_vocabulary(path: str | Path) -> np.ndarray:
    vocabulary = np.load(Path(path), allow_pickle=False)
    if vocabulary.ndim != 3 or vocabulary.shape[1:] != (NUM_POSES, 3) or not np.all(np.isfinite(vocabulary)):
        raise ValueError(f"vocabulary {path} must be finite with shape (V, {NUM_POSES}, 3), got {vocabulary.shape}")
    return vocabulary.astype(np.float32)


def ensure_vocabulary(path: str | Path, loader: Any, size: int = 256, seed: int = 0) -> np.ndarray:
    """Load the vocabulary at `path`, or build it from the loader's human futures and save it there."""
    path = Path(path)
    if path.is_file():
        return load_vocabulary(path)
    vocabulary = build_vocabulary(human_futures(loader), size=size, seed=seed)
    save_vocabulary(path, vocabulary)
    return vocabulary


# -------------------------------------------------------------------------------------------- generator


def scene_rng(seed: int, token: str) -> np.random.Generator:
    """A random stream that depends only on the seed and the scene token."""
    return np.random.default_rng([int(seed), zlib.crc32(str(token).encode())])


class CandidateGenerator:
    """Draws a scene's K candidates from the four sources (module docstring).

    :param vocabulary: `(V, 8, 3)` planning vocabulary.
    :param config: counts and seed.
    :param policy: optional `agent_input -> (N, 8, 3)` sampler; its rows must be finite local poses.
    """

    def __init__(self, vocabulary: np.ndarray, config: CandidateConfig | None = None, policy: PolicySampler | None = None):
        self.vocabulary = np.asarray(vocabulary, dtype=np.float32)
        if self.vocabulary.ndim != 3 or self.vocabulary.shape[1:] != (NUM_POSES, 3):
            raise ValueError(f"vocabulary must have shape (V, {NUM_POSES}, 3), got {self.vocabulary.shape}")
        self.config = config or CandidateConfig()
        self.policy = policy

    @property
    def num_candidates(self) -> int:
        return self.config.num_candidates

    def _vocabulary_pick(self, demo: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
        if count <= 0:
            return np.zeros((0, NUM_POSES, 3), np.float32)
        distance = np.linalg.norm(self.vocabulary[:, :, :2] - demo[None, :, :2], axis=-1).mean(-1)
        near = np.argsort(distance, kind="stable")[: (count + 1) // 2]
        rest = np.setdiff1d(np.arange(len(self.vocabulary)), near)
        if len(rest) == 0:  # a vocabulary smaller than the request: repeat entries
            rest = np.arange(len(self.vocabulary))
        far_count = count - len(near)
        far = rng.choice(rest, size=far_count, replace=len(rest) < far_count) if far_count > 0 else rest[:0]
        return self.vocabulary[np.concatenate([near, far])]

    def generate(self, token: str, demonstration: np.ndarray, agent_input: Any | None = None) -> Candidates:
        """The candidates of one scene; `demonstration (8, 3)` is its logged human future (row 0 of the result)."""
        cfg = self.config
        demo = np.asarray(demonstration, dtype=np.float32)
        if demo.shape != (NUM_POSES, 3) or not np.all(np.isfinite(demo)):
            raise ValueError(f"scene {token}: demonstration must be finite with shape ({NUM_POSES}, 3), got {demo.shape}")
        rng = scene_rng(cfg.seed, token)
        parts = [demo[None], perturb_demonstration(demo, rng, cfg.num_perturbations)]
        sources = [Source.DEMONSTRATION] + [Source.PERTURBATION] * cfg.num_perturbations
        num_policy = cfg.num_policy if self.policy is not None and agent_input is not None else 0
        if num_policy:
            samples = np.asarray(self.policy(agent_input), dtype=np.float32)
            if samples.ndim != 3 or samples.shape[1:] != (NUM_POSES, 3) or not np.all(np.isfinite(samples)):
                raise ValueError(f"scene {token}: policy samples must be finite (N, {NUM_POSES}, 3), got {samples.shape}")
            samples = samples[rng.choice(len(samples), size=num_policy, replace=len(samples) < num_policy)]
            parts.append(samples)
            sources += [Source.POLICY] * num_policy
        num_vocabulary = cfg.num_vocabulary + cfg.num_policy - num_policy  # keep K fixed without a policy
        parts.append(self._vocabulary_pick(demo, rng, num_vocabulary))
        sources += [Source.VOCABULARY] * num_vocabulary
        trajectories = np.concatenate(parts).astype(np.float32)
        return Candidates(trajectories, np.asarray(sources, dtype=np.int8), demo_index=0)
