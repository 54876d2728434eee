"""PEP 562 lazy re-exports: a package names its public objects, and the modules behind them load on first use.

That keeps light imports light (`import irlvla_env` registers the env ids without torch-heavy modules, and
`irlvla_env.navsim.geometry` in a hot loop does not pull in pyogrio and pandas).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, namespace: dict[str, Any], exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `name` is looked up in module `exports[name]` on first access and stored
    in the package's `namespace` (its `globals()`), so later accesses are plain attribute lookups."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value
        return value

    return __getattr__
