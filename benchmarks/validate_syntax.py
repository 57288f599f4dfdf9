"""Throughput of the address syntax check against email-validator, same addresses, same run.

    python benchmarks/validate_syntax.py --rows 1000000

Generates seeded realistic addresses (mostly valid; ~5% broken in varied ways; some upper
case, accented local parts and internationalised domains), times
``email_engine_assets.quality.syntax.check_addresses`` and
``email_validator.validate_email(strict=True, check_deliverability=False)``, and counts the
addresses on which the two disagree (validity or email key).
"""

from __future__ import annotations

import argparse
import random
import time

import email_validator
import polars as pl

from email_engine_assets.quality.syntax import check_addresses

FIRST = ["john", "marie", "li", "ahmed", "olga", "pierre", "anna", "jose", "wei", "fatima",
         "lucas", "emma", "noah", "chloe", "ivan", "sara", "tom", "yuki", "omar", "nina"]
LAST = ["smith", "dupont", "wang", "khan", "ivanova", "martin", "garcia", "muller", "rossi",
        "kowalski", "silva", "nguyen", "jensen", "okafor", "tanaka", "cohen", "brown", "lee"]
DOMAINS = ["gmail.com", "yahoo.fr", "outlook.com", "hotmail.co.uk", "orange.fr", "gmx.de",
           "example-corp.com", "mail.univ-lyon1.fr", "acme.io", "shop.co.jp", "web.de", "free.fr"]
IDN_DOMAINS = ["münchen.de", "bücher.de", "café.fr", "пример.рф", "例え.jp", "ñandú.com.ar"]
ACCENTED = ["josé", "zoë", "françois", "müller", "søren", "łukasz", "ñoño", "renée"]


def _valid_address(rng: random.Random) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice([f"{first}.{last}", f"{first}{last}", f"{first[0]}{last}",
                        f"{first}_{last}{rng.randint(1, 99)}", f"{first}+news", f"{last}.{first}"])
    domain = rng.choice(DOMAINS) if rng.random() < 0.8 else f"{last}-{rng.randint(1, 9999)}.com"
    roll = rng.random()
    if roll < 0.10:
        local = local.capitalize()
        domain = domain.upper()
    elif roll < 0.12:
        local = rng.choice(ACCENTED) + "." + last
    elif roll < 0.13:
        domain = rng.choice(IDN_DOMAINS)
    return f"{local}@{domain}"


def _broken_address(rng: random.Random) -> str:
    address = _valid_address(rng)
    local, _, domain = address.partition("@")
    breakers = [
        lambda: local + domain,                       # no @
        lambda: f"{local}@@{domain}",
        lambda: f"{local} @{domain}",
        lambda: f"{local}..x@{domain}",
        lambda: f".{local}@{domain}",
        lambda: f"{local}.@{domain}",
        lambda: f"{local}@{domain}.",
        lambda: f"{local}@{domain.split('.')[0]}",    # no dot
        lambda: f"{local}@{domain.replace('.', ',')}",
        lambda: f"{local}@{domain}.123",
        lambda: f"{local}@printer.local",
        lambda: f"{local}@-{domain}",
        lambda: f"{local}@{domain.split('.')[0]}-.com",
        lambda: "x" * 70 + f"@{domain}",
        lambda: f'"{local}"@{domain}',
        lambda: f"{local.title()} <{local}@{domain}>",
        lambda: f'=HYPERLINK("mailto:{local}@{domain}")',
        lambda: f"{local}@{domain}@{domain}",
        lambda: f"{local}@gm__ail.com",
        lambda: f"{local}@{'a' * 64}.com",
        lambda: f"{local}@ab--cd.com",
        lambda: f"{local}@[192.168.0.1]",
        lambda: "",
        lambda: f"{local}@{domain}\u200b",            # zero-width space
        lambda: f"{local}＠{domain}",                  # full-width at-sign
    ]
    return rng.choice(breakers)()


def generate_addresses(n: int, seed: int = 7) -> list[str]:
    """``n`` seeded addresses, about 5% broken."""
    rng = random.Random(seed)
    return [_broken_address(rng) if rng.random() < 0.05 else _valid_address(rng) for _ in range(n)]


def _reference_keys(addresses: list[str]) -> list[str | None]:
    keys: list[str | None] = []
    for address in addresses:
        try:
            checked = email_validator.validate_email(address, check_deliverability=False, strict=True)
        except email_validator.EmailNotValidError:
            keys.append(None)
        else:
            keys.append(f"{checked.local_part.lower()}@{checked.ascii_domain.lower()}")
    return keys


def run_syntax_benchmark(n: int, seed: int = 7) -> dict:
    """Time both checks on the same ``n`` addresses; returns throughputs, ratio and differences."""
    addresses = generate_addresses(n, seed)
    series = pl.Series("address", addresses, dtype=pl.String)

    started = time.perf_counter()
    result = check_addresses(series)
    ours_seconds = time.perf_counter() - started

    started = time.perf_counter()
    reference = _reference_keys(addresses)
    reference_seconds = time.perf_counter() - started

    ours = result["email_key"].to_list()
    differences = [
        {"address": address, "ours": key, "email_validator": expected}
        for address, key, expected in zip(addresses, ours, reference)
        if key != expected
    ]
    invalid = sum(key is None for key in reference)
    return {
        "rows": n,
        "invalid_rows": invalid,
        "check_addresses_seconds": ours_seconds,
        "email_validator_seconds": reference_seconds,
        "check_addresses_per_second": n / ours_seconds,
        "email_validator_per_second": n / reference_seconds,
        "speedup": reference_seconds / ours_seconds,
        "differing_verdicts": len(differences),
        "differences": differences[:20],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    report = run_syntax_benchmark(args.rows, args.seed)
    print(f"rows                  {report['rows']:,} ({report['invalid_rows']:,} invalid)")
    print(f"check_addresses       {report['check_addresses_per_second']:,.0f} addresses/s "
          f"({report['check_addresses_seconds']:.2f} s)")
    print(f"email-validator       {report['email_validator_per_second']:,.0f} addresses/s "
          f"({report['email_validator_seconds']:.2f} s)")
    print(f"speed-up              {report['speedup']:.1f}x")
    print(f"differing verdicts    {report['differing_verdicts']}")
    for difference in report["differences"]:
        print(f"  {difference['address']!r}: ours={difference['ours']!r} "
              f"email-validator={difference['email_validator']!r}")


if __name__ == "__main__":
    main()
