"""Where outbound connections may go, and the per-IP probe limit shared through PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from email_engine_assets.quality import store
from email_engine_resources.network_policy import target_refusal

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private network"),
    ("172.16.5.4", "private network"),
    ("192.168.1.1", "private network"),
    ("fc00::1", "private network"),
    ("fd12:3456::1", "private network"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("100.64.0.1", "shared (CGNAT)"),
    ("100.127.255.254", "shared (CGNAT)"),
    ("224.0.0.251", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.10", "not globally routable"),  # documentation
    ("2001:db8::1", "not globally routable"),
    ("198.18.0.1", "not globally routable"),  # benchmarking
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped forms are judged by the IPv4 address
    ("::ffff:10.0.0.1", "private network"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:100.64.0.1", "shared (CGNAT)"),
    ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
    ("2002:a00:1::1", "private network"),  # 6to4 of 10.0.0.1
    ("::127.0.0.1", "reserved"),  # IPv4-compatible (deprecated)
]


@pytest.mark.parametrize(("address", "kind"), REFUSED)
def test_non_public_addresses_are_refused(address: str, kind: str) -> None:
    reason = target_refusal(address)
    assert reason is not None and kind in reason and "private targets are not allowed" in reason
    assert target_refusal(address, allow_private=True) is None


@pytest.mark.parametrize("address", ["8.8.8.8", "203.0.114.1", "2a00:1450:4007:80a::200e", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert target_refusal(address) is None


@pytest.mark.parametrize("text", ["mx.example.com", "", "127.0.0.1.nip.io", "10.0.0.1/8"])
def test_only_ip_addresses_are_judged(text: str) -> None:
    with pytest.raises(ValueError):
        target_refusal(text)


# --- the per-IP limit in PostgreSQL -------------------------------------------------------------

ONE_WINDOW = 10**9  # seconds: windows are aligned on the epoch; a test never straddles two


def test_probe_slots_never_exceed_the_limit_under_concurrency(engine) -> None:
    granted: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def take() -> None:
        start.wait()
        for _ in range(3):
            with engine.begin() as conn:
                ok = store.take_probe_slot(conn, "192.0.2.25", max_sessions=7, window_s=ONE_WINDOW)
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=take) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(granted) == 36 and granted.count(True) == 7
    with engine.begin() as conn:
        assert store.take_probe_slot(conn, "2001:db8::25", max_sessions=7, window_s=ONE_WINDOW)  # other IP, own count
        assert conn.exec_driver_sql("SELECT sessions FROM probe_slots WHERE ip = '192.0.2.25'").scalar_one() == 7


def test_a_new_window_starts_a_new_count_and_drops_the_old_one(engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO probe_slots VALUES ('192.0.2.26', '2000-01-01', 5)"  # an earlier window
        )
        assert store.take_probe_slot(conn, "192.0.2.26", max_sessions=1, window_s=ONE_WINDOW)
        assert not store.take_probe_slot(conn, "192.0.2.26", max_sessions=1, window_s=ONE_WINDOW)
        rows = conn.exec_driver_sql("SELECT sessions FROM probe_slots WHERE ip = '192.0.2.26'").scalars().all()
    assert rows == [1]
