"""Scene-parallel work: the same chunked map runs in-process or over Ray, with one progress bar.

Metric caching, scoring and reward-model labelling all split tokens into chunks and run one function per chunk.
One worker runs in-process (no Ray start-up cost, easy to debug); more run on a local Ray instance with that many
CPUs, or on the cluster at `ray_address` ("auto" or "ray://host:port"), with no code change.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """`items` cut into consecutive lists of at most `size`."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def map_chunks(
    fn: Callable[..., Any],
    shared: tuple,
    parts: Sequence[Sequence[Any]],
    num_workers: int | None = None,
    ray_address: str | None = None,
    desc: str = "scenes",
    extra: tuple = (),
    size: Callable[[Any], int] = len,
) -> Iterator[Any]:
    """Yield `fn(*shared, part, *extra)` for every part, in completion order, advancing a bar by `size(part)`.

    `shared` objects (a loader, an agent) are sent to Ray once with `ray.put`, not once per part.
    """
    workers = num_workers or (os.cpu_count() or 1)
    bar = tqdm(total=sum(size(p) for p in parts), desc=desc, unit="scene")
    try:
        if ray_address is None and workers <= 1:
            for part in parts:
                yield fn(*shared, part, *extra)
                bar.update(size(part))
            return
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            if ray_address is None:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=ray_address, log_to_driver=False)
        try:
            remote = ray.remote(fn)
            refs = [ray.put(obj) for obj in shared]
            pending = {remote.remote(*refs, part, *extra): size(part) for part in parts}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                yield ray.get(done[0])
                bar.update(pending.pop(done[0]))
        finally:
            if started_here:
                ray.shutdown()
    finally:
        bar.close()
