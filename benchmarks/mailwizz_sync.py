"""MailWizz subscriber push: the sync's bulk calls vs one call per subscriber, at a per-call latency.

    python benchmarks/mailwizz_sync.py --subscribers 1000 --latency-ms 20 --bulk-size 100

Starts the MailWizz stand-in on loopback with ``latency_ms`` added to every call, then pushes the
same number of new subscribers into two fresh lists:

* ours: :meth:`MailwizzInstance.push_subscribers` (what ``mailwizz_subscribers`` calls), bulk
  calls of ``bulk_size`` subscribers;
* reference: one ``POST lists/{uid}/subscribers`` per subscriber over the same kept-alive client.

Prints both wall times, the calls each made and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from email_engine_resources.mailwizz import MailwizzInstance, Subscriber  # noqa: E402
from email_engine_tests.mailwizz_server import MailwizzState, running_mailwizz  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bulk-size", type=int, default=100)
    args = parser.parse_args()
    people = [Subscriber(f"user{i}@bench.example", {"FNAME": f"User{i}", "LNAME": "Bench"}) for i in range(args.subscribers)]
    state = MailwizzState(latency=args.latency_ms / 1000)
    with running_mailwizz(state) as (url, state):
        with MailwizzInstance(url, state.api_key, allow_private=True, bulk_size=args.bulk_size) as mw:
            bulk_list = mw.ensure_list("bench-bulk", from_name="B", from_email="b@bench.example", reply_to="")
            single_list = mw.ensure_list("bench-single", from_name="B", from_email="b@bench.example", reply_to="")

            calls = mw.client.calls
            started = time.perf_counter()
            results = mw.push_subscribers(bulk_list, people)
            ours = time.perf_counter() - started
            ours_calls = mw.client.calls - calls
            assert sum(1 for r in results if r.subscriber_uid) == args.subscribers

            calls = mw.client.calls
            started = time.perf_counter()
            for person in people:
                mw.client.post(f"lists/{single_list}/subscribers", {**person.fields, "EMAIL": person.email})
            reference = time.perf_counter() - started
            reference_calls = mw.client.calls - calls
        assert len(state.subscribers(bulk_list)) == len(state.subscribers(single_list)) == args.subscribers

    print(f"{args.subscribers} subscribers, {args.latency_ms:g} ms per call")
    print(f"  ours (bulk of {args.bulk_size}):      {ours:8.2f} s  {ours_calls:6d} calls  {args.subscribers / ours:10.0f} subscribers/s")
    print(f"  reference (one call each): {reference:8.2f} s  {reference_calls:6d} calls  {args.subscribers / reference:10.0f} subscribers/s")
    print(f"  ratio: bulk is {reference / ours:.1f}x faster")


if __name__ == "__main__":
    main()
