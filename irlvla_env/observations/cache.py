"""A per-token observation cache on disk, with an optional in-memory copy for fast environment steps.

Layout: `<root>/<config hash>/<token>.npz` (plus `config.json` saying which config the hash stands for), so
observations built under different configs never mix. Files are written to a temporary name and moved into
place with `os.replace`, so a reader never sees a half-written file, and read with `allow_pickle=False`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from irlvla_env.navsim.dataclasses import AgentInput
from irlvla_env.observations.builder import build_observation
from irlvla_env.observations.config import ObservationConfig

Observation = dict[str, Any]
AgentInputSource = Callable[[str], AgentInput] | Any  # a callable, or anything with get_agent_input_from_token
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
TEXT_KEYS = ("prompt",)


class CorruptCacheError(ValueError):
    """A cache file cannot be read back; the message names it."""


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write through `write(file)` into a temporary file beside `path`, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ObservationCache:
    """Observations of one `ObservationConfig`, one `.npz` per scene token.

    :param root: cache root; observations go to `root/<config.config_hash()>/`.
    :param config: the observation config the cached observations were built with.
    """

    def __init__(self, root: str | Path, config: ObservationConfig) -> None:
        self.config = config
        self.folder = Path(root).expanduser() / config.config_hash()
        self._memory: dict[str, Observation] = {}

    def path(self, token: str) -> Path:
        if not TOKEN_PATTERN.match(token):
            raise ValueError(f"scene token {token!r} has characters not allowed in a cache file name")
        return self.folder / f"{token}.npz"

    def __contains__(self, token: str) -> bool:
        return token in self._memory or self.path(token).is_file()

    def __len__(self) -> int:
        """Number of observations stored on disk."""
        return len(list(self.folder.glob("*.npz"))) if self.folder.is_dir() else 0

    def put(self, token: str, observation: Observation) -> Path:
        """Store one observation atomically; returns its file."""
        path = self.path(token)
        arrays = {key: np.asarray(value) for key, value in observation.items()}
        config_file = self.folder / "config.json"
        if not config_file.is_file():
            text = json.dumps(self.config.to_dict(), indent=2, sort_keys=True).encode()
            _atomic_write(config_file, lambda f: f.write(text))
        _atomic_write(path, lambda f: np.savez(f, **arrays))
        return path

    def get(self, token: str) -> Observation | None:
        """The observation of `token` from memory or disk, or None when it was never stored."""
        if token in self._memory:
            return self._memory[token]
        path = self.path(token)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: str(data[key][()]) if key in TEXT_KEYS else data[key] for key in data.files}
        except (OSError, ValueError, EOFError) as error:
            raise CorruptCacheError(f"observation cache file {path} is unreadable: {error}") from error

    def get_or_build(self, token: str, loader: AgentInputSource) -> Observation:
        """The cached observation, or build it from `loader`'s agent input, store it and return it.

        :param loader: a `SceneLoader` (anything with `get_agent_input_from_token`) or a callable token -> AgentInput.
        """
        try:
            observation = self.get(token)
        except CorruptCacheError as error:
            warnings.warn(f"{error}; rebuilding it", stacklevel=2)
            observation = None
        if observation is None:
            get_input = getattr(loader, "get_agent_input_from_token", loader)
            observation = build_observation(get_input(token), self.config)
            self.put(token, observation)
        return observation

    def preload(self, tokens: Iterable[str], loader: AgentInputSource | None = None) -> None:
        """Keep the observations of `tokens` in memory (building missing ones when `loader` is given)."""
        tokens = list(tokens)
        for token in tqdm(tokens, desc="loading observations", unit="scene", disable=len(tokens) < 100):
            if token in self._memory:
                continue
            observation = self.get_or_build(token, loader) if loader is not None else self.get(token)
            if observation is None:
                raise KeyError(f"token {token!r} is not in the observation cache {self.folder} and no loader was given")
            self._memory[token] = observation

    def clear_memory(self) -> None:
        self._memory.clear()
