"""The embedded synthetic world: a seeded procedural NAVSIM-layout data set (maps, logs, sensor blobs).

`ensure_dataset(root, config)` generates it once and reuses it; `SynthConfig` says what to generate. Both are
imported lazily, so importing a light module of this package (e.g. `sensors`) does not pull in the generator.
"""

from __future__ import annotations

from irlvla_env.lazy import lazy_exports

_LAZY = {
    "ensure_dataset": "irlvla_env.synthetic.generate",
    "generate_dataset": "irlvla_env.synthetic.generate",
    "SynthConfig": "irlvla_env.synthetic.config",
}
__all__ = sorted(_LAZY)

__getattr__ = lazy_exports(__name__, globals(), _LAZY)
