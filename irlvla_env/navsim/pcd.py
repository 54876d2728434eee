"""Merged LiDAR point clouds in PCD v0.7 (spec §1.3): `read_pcd` → float32 `(6, N)`, `write_pcd` (binary).

Rows are `x, y, z, intensity, ring, lidar_id`, the layout navsim gets from nuPlan's `LidarPointCloud`. nuPlan
files name the last field `lidar_info`; `lidar_id` is accepted too. ASCII and binary data are read; fields other
than x, y, z that a file lacks are filled with zeros, and extra fields are ignored.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

PCD_ROWS = ("x", "y", "z", "intensity", "ring", "lidar_id")
_FIELD_ALIASES = {"lidar_info": "lidar_id"}
_TYPE_CODES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
               ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}  # fmt: skip


class PCDFormatError(ValueError):
    """A PCD file whose header or body cannot be read; the message names the file."""


def _parse_header(raw: bytes, path: Path) -> tuple[dict[str, list[str]], int]:
    """Header entries (keyword → values) and the byte offset where the data begin."""
    header: dict[str, list[str]] = {}
    offset = 0
    while offset < len(raw):
        end = raw.find(b"\n", offset)
        end = len(raw) if end < 0 else end
        line = raw[offset:end].decode("ascii", errors="replace").strip()
        offset = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        header[key.upper()] = values
        if key.upper() == "DATA":
            return header, offset
    raise PCDFormatError(f"{path}: PCD header has no DATA line")


def _record_dtype(header: dict[str, list[str]], path: Path) -> np.dtype:
    for key in ("FIELDS", "SIZE", "TYPE"):
        if key not in header:
            raise PCDFormatError(f"{path}: PCD header lacks {key}")
    names, sizes, types = header["FIELDS"], header["SIZE"], header["TYPE"]
    counts = header.get("COUNT", ["1"] * len(names))
    if not len(names) == len(sizes) == len(types) == len(counts):
        raise PCDFormatError(f"{path}: PCD header FIELDS/SIZE/TYPE/COUNT lengths differ: {header}")
    parts = []
    for name, size, kind, count in zip(names, sizes, types, counts):
        code = _TYPE_CODES.get((kind.upper(), int(size)))
        if code is None:
            raise PCDFormatError(f"{path}: PCD field {name!r} has unsupported TYPE {kind} SIZE {size}")
        parts.append((_FIELD_ALIASES.get(name, name), "<" + code, (int(count),) if int(count) > 1 else ()))
    if not {"x", "y", "z"} <= {p[0] for p in parts}:
        raise PCDFormatError(f"{path}: PCD FIELDS {names} lack x, y or z")
    return np.dtype(parts)


def read_pcd(path: str | Path) -> np.ndarray:
    """Read a PCD file into a float32 array `(6, N)` with rows `PCD_ROWS`."""
    path = Path(path)
    raw = path.read_bytes()
    header, offset = _parse_header(raw, path)
    dtype = _record_dtype(header, path)
    try:
        num_points = int(header.get("POINTS", [None])[0] or int(header["WIDTH"][0]) * int(header["HEIGHT"][0]))
    except (KeyError, ValueError, IndexError) as err:
        raise PCDFormatError(f"{path}: PCD header needs POINTS or WIDTH and HEIGHT") from err
    encoding = header["DATA"][0].lower() if header["DATA"] else ""
    if encoding == "binary":
        need = num_points * dtype.itemsize
        if len(raw) - offset < need:
            raise PCDFormatError(f"{path}: PCD body has {len(raw) - offset} bytes, header promises {need}")
        records = np.frombuffer(raw, dtype=dtype, count=num_points, offset=offset)
    elif encoding == "ascii":
        rows = [line.split() for line in raw[offset:].decode("ascii").splitlines() if line.strip()]
        width = sum(int(np.prod(dtype[n].shape or (1,))) for n in dtype.names)
        if len(rows) != num_points or any(len(r) != width for r in rows):
            raise PCDFormatError(f"{path}: PCD ASCII body does not match POINTS {num_points} x {width} values")
        flat = np.array(rows, dtype=np.float64)
        records = np.zeros(num_points, dtype=dtype)
        column = 0
        for name in dtype.names:
            size = int(np.prod(dtype[name].shape or (1,)))
            records[name] = flat[:, column : column + size].reshape(records[name].shape)
            column += size
    else:
        raise PCDFormatError(f"{path}: PCD DATA {encoding!r} is not supported (use ascii or binary)")
    out = np.zeros((len(PCD_ROWS), num_points), dtype=np.float32)
    for row, name in enumerate(PCD_ROWS):
        if name in records.dtype.names:
            values = records[name]
            out[row] = values[:, 0] if values.ndim > 1 else values
    return out


def write_pcd(path: str | Path, points: np.ndarray) -> Path:
    """Write float `(6, N)` points (rows `PCD_ROWS`) as binary PCD v0.7, atomically; nuPlan's field names."""
    path = Path(path)
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[0] != len(PCD_ROWS):
        raise ValueError(f"write_pcd({path}): points must have shape (6, N), got {points.shape}")
    n = points.shape[1]
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
        "FIELDS x y z intensity ring lidar_info\nSIZE 4 4 4 4 4 4\nTYPE F F F F F F\nCOUNT 1 1 1 1 1 1\n"
        f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA binary\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(np.ascontiguousarray(points.T, dtype="<f4").tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
