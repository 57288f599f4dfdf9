"""written_behind: chunks written in order on one worker thread while the next one is produced."""

from __future__ import annotations

import threading
import time

import pytest

from email_engine_assets.quality.write_behind import written_behind


def test_the_next_chunk_is_produced_while_the_previous_one_is_written():
    producing = [threading.Event() for _ in range(5)]  # producing[i]: item i is being produced
    written, in_flight = [], []

    def produce():
        for i in range(5):
            producing[i].set()
            yield i

    def write(i):
        in_flight.append(i)
        assert in_flight == [i]  # one write at a time
        if i + 1 < 5:  # a write made before the loop went on would wait here in vain
            assert producing[i + 1].wait(10), f"item {i + 1} was not produced while item {i} was written"
        written.append(i)
        in_flight.pop()

    assert list(written_behind(produce(), write)) == [0, 1, 2, 3, 4]
    assert written == [0, 1, 2, 3, 4]  # all written, in order, when the loop ends
    assert not [t for t in threading.enumerate() if t.name.startswith("write-behind")]


def test_a_failed_write_stops_the_loop_with_its_error():
    produced = []

    def produce():
        for i in range(10):
            produced.append(i)
            yield i

    def write(i):
        if i == 2:
            raise ValueError(f"chunk {i}: refused")

    with pytest.raises(ValueError, match="chunk 2: refused"):
        for _ in written_behind(produce(), write):
            pass
    assert produced == [0, 1, 2, 3]  # at most one chunk produced past the failed one


def test_a_failed_producer_waits_for_the_write_in_flight():
    written = []

    def produce():
        yield 1
        raise RuntimeError("read failed")

    def write(i):
        time.sleep(0.05)
        written.append(i)

    with pytest.raises(RuntimeError, match="read failed"):
        list(written_behind(produce(), write))
    assert written == [1]
