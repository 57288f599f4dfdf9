"""Email validation benchmarks in one run: syntax vs email-validator, then DNS at scale.

    python benchmarks/validate.py --rows 1000000 --contacts 1000000 --domains 50000 --delay-ms 20

Targets (BRIEF §4): syntax ≥ 10× email-validator's throughput with 0 differing verdicts; DNS:
1M contacts over 50k domains at 20 ms per answer in under 60 s, queries ≈ distinct domains.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from validate_dns import run_dns_benchmark  # noqa: E402
from validate_syntax import run_syntax_benchmark  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="addresses for the syntax benchmark")
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--domains", type=int, default=50_000)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()

    syntax = run_syntax_benchmark(args.rows)
    print("== syntax")
    print(f"rows                 {syntax['rows']:,} ({syntax['invalid_rows']:,} invalid)")
    print(f"ours                 {syntax['check_addresses_per_second']:,.0f} addresses/s")
    print(f"email-validator      {syntax['email_validator_per_second']:,.0f} addresses/s")
    print(f"ours / reference     {syntax['speedup']:.1f}x   (target >= 10x)")
    print(f"differing verdicts   {syntax['differing_verdicts']}   (target 0)")
    for difference in syntax.get("differences", [])[:20]:
        print(f"  {difference}")

    dns = run_dns_benchmark(args.contacts, args.domains, args.delay_ms, args.concurrency)
    print("== DNS")
    for key, value in dns.items():
        print(f"{key:<40} {value}")


if __name__ == "__main__":
    main()
