"""Shared fixtures: one tiny synthetic NAVSIM data set per test session, generated into a temporary folder.

Nothing global is set (no environment variables): tests pass the root and the maps root explicitly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from irlvla_env.navsim.loader import SceneLoader, load_split
from irlvla_env.synthetic.config import SynthConfig
from irlvla_env.synthetic.generate import ensure_dataset


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of `SynthConfig.tiny()` (logs, sensor blobs, manifest); maps live in `<root>/maps`."""
    root = tmp_path_factory.mktemp("synthetic")
    return ensure_dataset(root, SynthConfig.tiny(), maps_root=root / "maps", progress=False)


@pytest.fixture(scope="session")
def synthetic_maps_root(synthetic_root: Path) -> Path:
    return synthetic_root / "maps"


@pytest.fixture(scope="session")
def navtest_loader(synthetic_root: Path) -> SceneLoader:
    """SceneLoader over the tiny navtest split (no sensors)."""
    return load_split("navtest", synthetic_root, maps_root=synthetic_root / "maps")
