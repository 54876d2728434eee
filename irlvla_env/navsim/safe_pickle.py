"""Loading OpenScene pickles without executing arbitrary code.

A pickle can name any importable callable, so `pickle.load` on a downloaded log would run whatever the file
asks. The log format (spec §1.3) needs only builtin containers and numpy arrays, so the unpickler admits exactly
those globals and refuses everything else with an error naming the file and the global.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

_BUILTINS = frozenset(
    {
        "dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "bool",
        "complex", "slice", "range", "NoneType",
    }
)  # fmt: skip
# numpy moved `core` to `_core` in 2.0; pickles written by either version name one or the other.
_NUMPY_GLOBALS = frozenset(
    (module, name)
    for core in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
) | {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy", "bool_")}
# Protocol-2 pickles spell bytes as `_codecs.encode(str, "latin1")`; ordered dicts are plain containers.
_OTHER_GLOBALS = frozenset({("_codecs", "encode"), ("collections", "OrderedDict")})
_NUMPY_DTYPE_MODULE = "numpy.dtypes"  # numpy 2 pickles dtypes as e.g. `numpy.dtypes.Float64DType`


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside builtins + numpy."""


class CorruptLogError(ValueError):
    """The pickle is truncated or otherwise unreadable."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedReader, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol < 3 spells it the Python 2 way
        allowed = (
            (module == "builtins" and name in _BUILTINS)
            or (module, name) in _NUMPY_GLOBALS
            or (module, name) in _OTHER_GLOBALS
            or (module == _NUMPY_DTYPE_MODULE and name.endswith("DType"))
        )
        if not allowed:
            raise UnsafePickleError(
                f"{self._path}: refusing to unpickle global {module}.{name} (only builtins and numpy arrays are allowed)"
            )
        return super().find_class(module, name)


def load_pickle(path: str | Path) -> Any:
    """Unpickle `path` admitting only builtin containers/scalars and numpy arrays, dtypes and scalars."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, path).load()
    except UnsafePickleError:
        raise
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise CorruptLogError(f"{path}: corrupt or truncated pickle ({type(err).__name__}: {err})") from err


def dump_pickle_atomic(obj: Any, path: str | Path) -> Path:
    """Pickle `obj` to `path` via a temporary file in the same folder, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
