"""Chunks written behind: the next chunk is read and computed while the previous one is written.

The quality assets spend most of a chunk waiting on PostgreSQL: the read of the next chunk and the
write of the previous one run on two connections (two server backends) at once, and the Python
work overlaps the write. At most one write is in flight, so memory holds two chunks at most.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def written_behind(items: Iterable[T], write: Callable[[T], object]) -> Iterator[T]:
    """Yield each item of ``items`` once ``write(item)`` has started on a worker thread.

    Writes run one at a time, in order; the next item is produced while one is written. A write's
    error is raised in the caller at the next item or at the end. When the iteration ends (or the
    caller stops, or ``items`` raises) the write in flight is waited for: none outlives the loop.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-behind") as pool:
        pending: Future | None = None
        for item in items:
            if pending is not None:
                pending.result()
            pending = pool.submit(write, item)
            yield item
        if pending is not None:
            pending.result()
