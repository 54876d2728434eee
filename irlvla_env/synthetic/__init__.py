"""The embedded synthetic world: a seeded procedural NAVSIM-layout data set (maps, logs, sensor blobs).

`ensure_dataset(root, config)` generates it once and reuses it; `SynthConfig` says what to generate. Both are
imported lazily, so importing a light module of this package (e.g. `sensors`) does not pull in the generator.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "ensure_dataset": "irlvla_env.synthetic.generate",
    "generate_dataset": "irlvla_env.synthetic.generate",
    "SynthConfig": "irlvla_env.synthetic.config",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'irlvla_env.synthetic' has no attribute {name!r}")
