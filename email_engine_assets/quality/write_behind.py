"""Chunks written behind: the next chunk is read and computed while the previous ones are written.

The quality assets spend most of a chunk waiting on PostgreSQL: reading the next chunk and writing
the previous ones run on separate connections (separate server backends) at once, and the Python
work overlaps the writes. Writes of different contact ranges touch different rows, so they may run
side by side; memory holds ``writers + 1`` chunks at most.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def written_behind(items: Iterable[T], write: Callable[[T], object], writers: int = 1) -> Iterator[T]:
    """Yield each item of ``items`` once ``write(item)`` has started on a worker thread.

    At most ``writers`` writes run at a time, started in order (with one writer they also end in
    order); the next item is produced meanwhile. A write's error is raised in the caller at a later
    item or at the end. When the iteration ends (or the caller stops, or ``items`` raises) the
    writes in flight are waited for: none outlives the loop.
    """
    if writers < 1:
        raise ValueError(f"written_behind: writers must be at least 1, got {writers}")
    with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="write-behind") as pool:
        pending: deque[Future] = deque()
        for item in items:
            while pending and (len(pending) >= writers or pending[0].done()):
                pending.popleft().result()
            pending.append(pool.submit(write, item))
            yield item
        while pending:
            pending.popleft().result()
