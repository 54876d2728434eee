"""Reading and writing nuPlan map GeoPackages with pyogrio alone (spec §1.2, §3.1).

geopandas is not installed, so layers travel as plain pandas DataFrames whose optional `geometry` column holds
shapely geometries, and the layer CRS rides along in `DataFrame.attrs["crs"]`. Feature ids follow the devkit:
on read the GPKG fid becomes a *string* index, mirrored into a `fid` column, because map object ids are those
strings everywhere above this layer.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pyogrio.raw
import shapely

from irlvla_env.paths import MAP_VERSION

MAPS_INDEX_NAME = f"{MAP_VERSION}.json"
GPKG_NAME = "map.gpkg"
GEOMETRY_COLUMN = "geometry"


class MapFormatError(ValueError):
    """A map file lacks something the reader needs; the message names the file and the layer/column."""


def gpkg_path(maps_root: str | Path, location: str, version: str) -> Path:
    """`<maps_root>/<location>/<version>/map.gpkg`, the nuPlan layout."""
    return Path(maps_root) / location / version / GPKG_NAME


def _geometry_type(geoms: np.ndarray) -> str:
    """The OGR layer geometry type: the common shapely type, or `Unknown` for mixed or empty layers."""
    kinds = {g.geom_type for g in geoms if g is not None}
    return kinds.pop() if len(kinds) == 1 else "Unknown"


def _field_arrays(df: pd.DataFrame, path: Path, layer: str) -> tuple[list[str], list[np.ndarray], list]:
    """Column names, numpy values and null masks for every non-geometry column (the fid column included)."""
    names, values, masks = [], [], []
    for name in df.columns:
        if name == GEOMETRY_COLUMN:
            continue
        series = df[name]
        mask = series.isna().to_numpy()
        if isinstance(series.dtype, pd.api.extensions.ExtensionDtype):
            # Nullable ints/bools/strings: fill the holes with a placeholder of the right type, flag them null.
            numpy_dtype = getattr(series.dtype, "numpy_dtype", object)
            fill = "" if numpy_dtype == object else 0
            array = series.fillna(fill).to_numpy(dtype=numpy_dtype)
        else:
            array = series.to_numpy()
        if array.dtype == object:
            array = np.array([None if m else v for v, m in zip(array, mask)], dtype=object)
            if any(not isinstance(v, (str, type(None))) for v in array):
                bad = next(type(v).__name__ for v in array if not isinstance(v, (str, type(None))))
                raise TypeError(f"{path}: layer {layer!r} column {name!r} mixes strings with {bad}; cast it first")
        names.append(str(name))
        values.append(array)
        masks.append(mask if mask.any() and array.dtype != object else None)
    return names, values, masks


def _write_layer(tmp: Path, path: Path, layer: str, df: pd.DataFrame, crs: str | None) -> None:
    """Write one layer into the temporary file `tmp`; errors name the final `path`."""
    if "fid" in df.columns:
        fid = pd.to_numeric(df["fid"], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(fid).any() or np.any(fid != np.round(fid)):
            raise TypeError(f"{path}: layer {layer!r} has a non-integer fid column; GPKG feature ids are integers")
        df = df.assign(fid=fid.astype(np.int64))  # GDAL takes an integer `fid` field as the feature id
    names, values, masks = _field_arrays(df, path, layer)
    if GEOMETRY_COLUMN in df.columns:
        geoms = df[GEOMETRY_COLUMN].to_numpy(dtype=object)
        wkb = shapely.to_wkb(geoms)
        geometry_type, layer_crs = _geometry_type(geoms), crs
    else:
        wkb, geometry_type, layer_crs = None, None, None
    pyogrio.raw.write(
        str(tmp),
        wkb,
        values,
        names,
        field_mask=masks if any(m is not None for m in masks) else None,
        layer=layer,
        driver="GPKG",
        geometry_type=geometry_type,
        crs=layer_crs,
    )


def write_gpkg(path: str | Path, layers: Mapping[str, pd.DataFrame], crs: str) -> Path:
    """Write `layers` (name → DataFrame) into one GeoPackage at `path`, atomically.

    A DataFrame with a shapely `geometry` column becomes a vector layer in `crs` (e.g. `"EPSG:32611"`); one
    without becomes an attribute table (like nuPlan's `meta`). An integer `fid` column sets the feature ids,
    otherwise GDAL numbers rows from 1. The file is built under a temporary name in the same folder and moved
    into place, so readers never see half a map.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".gpkg", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # GDAL must create the SQLite file itself
    try:
        for name, df in layers.items():
            _write_layer(tmp, path, name, df, crs)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
    return path


def list_gpkg_layers(path: str | Path) -> list[str]:
    """Layer names of a GeoPackage; FileNotFoundError naming the file when it is absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"map GeoPackage not found: {path}")
    return [str(name) for name, _ in pyogrio.list_layers(str(path))]


def read_gpkg_layers(path: str | Path, names: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """Read layers of a GeoPackage as DataFrames (all layers when `names` is None).

    Each frame has the fid as a string index and in a `fid` column, the attribute columns, a shapely
    `geometry` column for vector layers, and `attrs["crs"]` (WKT/authority string, or None).
    """
    path = Path(path)
    available = list_gpkg_layers(path)
    wanted = available if names is None else list(names)
    missing = [n for n in wanted if n not in available]
    if missing:
        raise MapFormatError(f"{path}: missing layer(s) {missing}; the file has {available}")
    out: dict[str, pd.DataFrame] = {}
    for name in wanted:
        meta, fids, wkb, field_data = pyogrio.raw.read(str(path), layer=name, return_fids=True)
        fid_str = np.asarray(fids).astype(str)
        columns: dict[str, object] = {"fid": fid_str}
        for field, data in zip(meta["fields"], field_data):
            if field != "fid":
                columns[str(field)] = data
        if wkb is not None:
            columns[GEOMETRY_COLUMN] = shapely.from_wkb(wkb)
        df = pd.DataFrame(columns, index=pd.Index(fid_str, name=None))
        df.attrs["crs"] = meta.get("crs")
        out[name] = df
    return out


def write_maps_index(
    maps_root: str | Path,
    versions: Mapping[str, str],
    layers: Mapping[str, dict] | None = None,
) -> Path:
    """Write (or update) `<maps_root>/nuplan-maps-v1.0.json` = `{location: {"version": ..., "layers": {...}}}`.

    Entries already in the file for other locations are kept, so maps can be added one location at a time.
    `layers` optionally carries per-location raster-layer metadata (nuPlan stores such entries; nothing here
    reads them).
    """
    root = Path(maps_root)
    root.mkdir(parents=True, exist_ok=True)
    index_path = root / MAPS_INDEX_NAME
    index: dict = {}
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as err:
            raise MapFormatError(f"{index_path}: not valid JSON ({err}); delete or fix it") from err
    for location, version in versions.items():
        index[location] = {"version": str(version), "layers": dict((layers or {}).get(location, {}))}
    fd, tmp = tempfile.mkstemp(prefix=f".{MAPS_INDEX_NAME}.", dir=root)
    with os.fdopen(fd, "w") as fh:
        json.dump(index, fh, indent=2, sort_keys=True)
    os.replace(tmp, index_path)
    return index_path


def read_maps_index(maps_root: str | Path) -> dict[str, dict]:
    """The parsed `nuplan-maps-v1.0.json`; FileNotFoundError naming the file when it is absent."""
    index_path = Path(maps_root) / MAPS_INDEX_NAME
    if not index_path.is_file():
        raise FileNotFoundError(f"maps index not found: {index_path} (set $NUPLAN_MAPS_ROOT or run `irlvla data synth`)")
    try:
        return json.loads(index_path.read_text())
    except json.JSONDecodeError as err:
        raise MapFormatError(f"{index_path}: not valid JSON ({err})") from err


# ------------------------------------------------------------------------------------------------ projection
# nuPlan GeoPackages store WGS84 longitude/latitude and the devkit reprojects every layer to the location's UTM
# zone named in `meta`. pyproj is not installed, so the one conversion that real maps need — geographic WGS84 to
# UTM — is done here with the Krüger series (sub-millimetre inside a zone); anything else needs pyproj.
_WGS84_A = 6378137.0
_WGS84_F = 1.0 / 298.257223563
_UTM_K0 = 0.9996
_GEOGRAPHIC_WGS84 = {"EPSG:4326", "OGC:CRS84", "WGS84", "+PROJ=LONGLAT +DATUM=WGS84 +NO_DEFS"}


def _normalise_crs(crs: str | None) -> str | None:
    return None if crs is None else " ".join(str(crs).upper().split())


def _is_geographic_wgs84(crs: str) -> bool:
    text = _normalise_crs(crs)
    return text in _GEOGRAPHIC_WGS84 or (
        text.startswith(("GEOGCS[\"WGS 84\"", "GEOGCRS[\"WGS 84\"")) and "PROJCS" not in text
    )


def parse_utm(crs: str) -> tuple[int, bool] | None:
    """`(zone, south)` for `EPSG:326zz` / `EPSG:327zz`, a `+proj=utm +zone=zz [+south]` string or a WGS 84 / UTM
    WKT, else None."""
    text = _normalise_crs(crs)
    if text.startswith("EPSG:32") and len(text) == 10 and text[7] in "67" and text[8:].isdigit():
        return int(text[8:]), text[7] == "7"
    wkt_zone = re.search(r'"WGS 84 / UTM ZONE (\d+)([NS])"', text)
    if wkt_zone:
        return int(wkt_zone.group(1)), wkt_zone.group(2) == "S"
    if "+PROJ=UTM" in text:
        tokens = dict(t.lstrip("+").split("=", 1) if "=" in t else (t.lstrip("+"), "") for t in text.split())
        if tokens.get("ZONE", "").isdigit() and tokens.get("DATUM", "WGS84") == "WGS84":
            return int(tokens["ZONE"]), "SOUTH" in tokens
    return None


def lonlat_to_utm(lon: np.ndarray, lat: np.ndarray, zone: int, south: bool) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 degrees → UTM easting/northing in metres (Krüger series to n⁴)."""
    n = _WGS84_F / (2.0 - _WGS84_F)
    big_a = _WGS84_A / (1.0 + n) * (1.0 + n**2 / 4.0 + n**4 / 64.0)
    alpha = (
        n / 2.0 - 2.0 * n**2 / 3.0 + 5.0 * n**3 / 16.0 + 41.0 * n**4 / 180.0,
        13.0 * n**2 / 48.0 - 3.0 * n**3 / 5.0 + 557.0 * n**4 / 1440.0,
        61.0 * n**3 / 240.0 - 103.0 * n**4 / 140.0,
        49561.0 * n**4 / 161280.0,
    )
    e = 2.0 * np.sqrt(n) / (1.0 + n)
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    dlam = np.radians(np.asarray(lon, dtype=np.float64) - (6.0 * zone - 183.0))
    sin_phi = np.sin(phi)
    t = np.sinh(np.arctanh(sin_phi) - e * np.arctanh(e * sin_phi))
    xi = np.arctan2(t, np.cos(dlam))
    eta = np.arctanh(np.sin(dlam) / np.sqrt(1.0 + t**2))
    easting, northing = eta.copy(), xi.copy()
    for j, a_j in enumerate(alpha, start=1):
        easting += a_j * np.cos(2 * j * xi) * np.sinh(2 * j * eta)
        northing += a_j * np.sin(2 * j * xi) * np.cosh(2 * j * eta)
    return 500000.0 + _UTM_K0 * big_a * easting, (10000000.0 if south else 0.0) + _UTM_K0 * big_a * northing


def reproject_layer(df: pd.DataFrame, target_crs: str | None, source: str, layer: str) -> pd.DataFrame:
    """`df` with its geometries in `target_crs` (the map's `projectedCoordSystem`).

    Unchanged when the layer has no geometry or CRS (in-memory maps are built in the projected frame) or when
    the CRS already matches. WGS84 → UTM is computed here; any other pair needs pyproj.
    """
    source_crs = df.attrs.get("crs")
    if GEOMETRY_COLUMN not in df.columns or target_crs is None or source_crs is None:
        return df
    if _normalise_crs(source_crs) == _normalise_crs(target_crs):
        return df
    utm = parse_utm(target_crs)
    if utm is not None and _is_geographic_wgs84(source_crs):
        def project(coords: np.ndarray) -> np.ndarray:
            return np.column_stack(lonlat_to_utm(coords[:, 0], coords[:, 1], *utm))
    else:
        try:
            import pyproj
        except ModuleNotFoundError as err:
            raise MapFormatError(
                f"{source}: layer {layer!r} is in {source_crs!r} but the map's projectedCoordSystem is {target_crs!r}; "
                "reprojecting between those needs pyproj, which is not installed"
            ) from err
        transformer = pyproj.Transformer.from_crs(source_crs, target_crs, always_xy=True)

        def project(coords: np.ndarray) -> np.ndarray:
            return np.column_stack(transformer.transform(coords[:, 0], coords[:, 1]))

    out = df.copy()
    out[GEOMETRY_COLUMN] = shapely.transform(df[GEOMETRY_COLUMN].to_numpy(dtype=object), project)
    out.attrs["crs"] = target_crs
    return out
