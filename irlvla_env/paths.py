"""Where data, maps and experiment outputs live, resolved from navsim's environment variables.

`OPENSCENE_DATA_ROOT`, `NUPLAN_MAPS_ROOT` and `NAVSIM_EXP_ROOT` win when set. When they are not, everything
defaults to the embedded synthetic world under the user cache folder, so a fresh machine runs with no set-up.
"""

from __future__ import annotations

import os
from pathlib import Path

MAP_VERSION = "nuplan-maps-v1.0"  # navsim hard-codes this string instead of reading NUPLAN_MAP_VERSION


def cache_home() -> Path:
    """`$IRLVLA_CACHE` or `$XDG_CACHE_HOME/irlvla` or `~/.cache/irlvla`."""
    if os.environ.get("IRLVLA_CACHE"):
        return Path(os.environ["IRLVLA_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "irlvla"


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else None


def data_root() -> Path:
    """Dataset root holding `navsim_logs/` and `sensor_blobs/`."""
    return _env_path("OPENSCENE_DATA_ROOT") or cache_home() / "synthetic" / "dataset"


def maps_root() -> Path:
    """Map root holding `nuplan-maps-v1.0.json` and `<location>/<version>/map.gpkg`."""
    return _env_path("NUPLAN_MAPS_ROOT") or data_root() / "maps"


def exp_root() -> Path:
    """Experiment outputs: metric caches, feature caches, checkpoints, reports."""
    return _env_path("NAVSIM_EXP_ROOT") or cache_home() / "exp"


def require_dir(path: Path, what: str, env_var: str | None = None) -> Path:
    """Return `path` if it is a folder, else raise an error that names it (and the variable that set it)."""
    if not path.is_dir():
        hint = f" (set by ${env_var})" if env_var and os.environ.get(env_var) else ""
        raise FileNotFoundError(f"{what} folder not found: {path}{hint}. Run `irlvla data synth` or set ${env_var}.")
    return path
