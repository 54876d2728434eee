"""NAVSIM v2 data layer: the data model, log loader, map API and file readers (spec §1–§3).

Public names are re-exported lazily (PEP 562), so `import irlvla_env.navsim.geometry` in a hot loop does not
pull in pyogrio, pandas and PIL.
"""

from __future__ import annotations

from irlvla_env.lazy import lazy_exports

_EXPORTS = {
    "irlvla_env.navsim.dataclasses": (
        "AgentInput", "Annotations", "Camera", "Cameras", "EgoStatus", "Frame", "Lidar", "Scene", "SceneFilter",
        "SceneMetadata", "SensorConfig", "Trajectory", "TrajectorySampling", "CAMERA_NAMES", "CAMERA_KEYS",
        "MAP_LOCATIONS", "NAVSIM_INTERVAL_LENGTH",
    ),
    "irlvla_env.navsim.loader": ("SceneLoader", "SPLITS", "SplitSpec", "load_split", "LogFormatError"),
    "irlvla_env.navsim.map_api": (
        "NuPlanMap", "SemanticMapLayer", "Lane", "LaneConnector", "Roadblock", "RoadblockConnector", "LazyMap",
        "load_map", "canonical_location",
    ),
    "irlvla_env.navsim.map_io": ("write_gpkg", "read_gpkg_layers", "write_maps_index", "read_maps_index",
                                 "MapFormatError"),
    "irlvla_env.navsim.pcd": ("read_pcd", "write_pcd", "PCDFormatError"),
    "irlvla_env.navsim.safe_pickle": ("load_pickle", "dump_pickle_atomic", "UnsafePickleError", "CorruptLogError"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


__getattr__ = lazy_exports(__name__, globals(), _MODULE_OF)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
