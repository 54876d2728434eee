"""Per-token cache of an agent's features and targets, so each epoch reads small arrays instead of sensors.

Layout: `<root>/<token>/<builder unique name>.npz`, one file per builder, written atomically (tmp + `os.replace`)
and read with `allow_pickle=False`. A builder's unique name encodes its settings, so changing e.g. the camera size
writes new files next to the old ones instead of reading stale ones.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from agents.abstract_agent import AbstractFeatureBuilder, AbstractTargetBuilder

Sample = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


class FeatureCache:
    """Reads and writes one agent's builders' outputs under `root`."""

    def __init__(
        self,
        root: str | Path,
        feature_builders: Sequence[AbstractFeatureBuilder],
        target_builders: Sequence[AbstractTargetBuilder],
    ):
        self.root = Path(root)
        self.feature_builders = list(feature_builders)
        self.target_builders = list(target_builders)
        names = [b.get_unique_name() for b in self.feature_builders + self.target_builders]
        if len(set(names)) != len(names):
            raise ValueError(f"feature/target builders must have unique names, got {names}")

    def _path(self, token: str, builder_name: str) -> Path:
        return self.root / token / f"{builder_name}.npz"

    def _missing(self, token: str) -> bool:
        return any(
            not self._path(token, b.get_unique_name()).is_file() for b in self.feature_builders + self.target_builders
        )

    def build(self, scene_loader, tokens: Sequence[str] | None = None, num_workers: int = 0, progress: bool = True) -> list[str]:
        """Compute what is missing for `tokens` (default: all of the loader's) and return the tokens.

        Work is spread over `num_workers` DataLoader worker processes; each token reads its scene once.
        """
        tokens = list(scene_loader.tokens if tokens is None else tokens)
        if not tokens:
            raise ValueError("cannot build a feature cache for an empty list of scenes (is the split empty?)")
        todo = [token for token in tokens if self._missing(token)]
        if todo:
            writer = _CacheWriter(self, scene_loader, todo)
            batches = DataLoader(writer, batch_size=None, num_workers=num_workers, collate_fn=_identity)
            for _ in tqdm(batches, total=len(todo), desc=f"caching {self.root.name}", disable=not progress):
                pass
        return tokens

    def write(self, scene) -> None:
        """Compute and store every builder's output for one ground-truth scene."""
        agent_input = scene.get_agent_input()
        token = scene.scene_metadata.initial_token
        for builder in self.feature_builders:
            _save_npz(self._path(token, builder.get_unique_name()), builder.compute_features(agent_input))
        for builder in self.target_builders:
            _save_npz(self._path(token, builder.get_unique_name()), builder.compute_targets(scene))

    def load(self, token: str) -> Sample:
        features: dict[str, torch.Tensor] = {}
        targets: dict[str, torch.Tensor] = {}
        for builders, into in ((self.feature_builders, features), (self.target_builders, targets)):
            for builder in builders:
                path = self._path(token, builder.get_unique_name())
                try:
                    with np.load(path, allow_pickle=False) as data:
                        into.update({key: torch.from_numpy(data[key]) for key in data.files})
                except (OSError, ValueError) as err:
                    raise RuntimeError(f"cannot read cached {builder.get_unique_name()} of token {token}: {path}: {err}") from err
        return features, targets


class CachedDataset(Dataset):
    """`(features, targets)` of cached tokens; the default collate stacks them into a batch.

    `in_memory` reads every sample once up front: worth it when the cache fits in RAM (the synthetic data on a
    CPU), where re-opening small files each epoch would cost more than the model's own step.
    """

    def __init__(self, cache: FeatureCache, tokens: Sequence[str], in_memory: bool = False):
        self.cache = cache
        self.tokens = list(tokens)
        self.samples = [cache.load(token) for token in self.tokens] if in_memory else None

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> Sample:
        if self.samples is not None:
            return self.samples[index]
        return self.cache.load(self.tokens[index])


class _CacheWriter(Dataset):
    """A dataset whose items write cache files, so a DataLoader parallelises caching across workers."""

    def __init__(self, cache: FeatureCache, scene_loader, tokens: list[str]):
        self.cache, self.scene_loader, self.tokens = cache, scene_loader, tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> str:
        token = self.tokens[index]
        self.cache.write(self.scene_loader.get_scene_from_token(token))
        return token


def _save_npz(path: Path, arrays: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **{key: value.detach().cpu().numpy() for key, value in arrays.items()})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _identity(item: str) -> str:
    return item
