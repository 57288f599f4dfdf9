"""PowerMTA's config file, read for what the engine needs from it (REFERENCE.md, "PowerMTA").

* ``<virtual-mta NAME> ... </virtual-mta>`` and ``<virtual-mta-pool NAME> virtual-mta A ...
  </virtual-mta-pool>``: the names a transport's ``virtual_mta`` may use (checked before a send);
* ``<acct-file PATH> records d,b,t,f,rb ... </acct-file>``: where the accounting files are (the
  default ``accounting_dir`` is the directory of the first one);
* ``http-mgmt-port N``: the HTTP management port.

Everything else (domains, sources, includes) is skipped. Sections may sit on one line or span
many; ``#`` starts a comment. An error names the file and the line; the file is capped at
:data:`MAX_CONFIG_BYTES`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_SECTION_DEPTH = 16

_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z][A-Za-z0-9-]*)\s*([^>]*)>")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_COMMENT = re.compile(r"(^|\s)#.*$")


class PowerMtaConfigError(ValueError):
    """The config file cannot be read as PowerMTA config; ``str()`` names the file and the line."""


@dataclass(frozen=True)
class AcctFile:
    path: str
    records: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class PowerMtaConfig:
    """What was read: virtual MTA names, pools with their members, accounting files, the management port."""

    path: str
    virtual_mtas: frozenset[str] = frozenset()
    pools: dict[str, tuple[str, ...]] = field(default_factory=dict)
    acct_files: tuple[AcctFile, ...] = ()
    http_mgmt_port: int | None = None

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a virtual MTA or a pool (PowerMTA compares these names case-insensitively)."""
        lowered = name.lower()
        return lowered in {n.lower() for n in self.virtual_mtas} or lowered in {n.lower() for n in self.pools}

    def accounting_dir(self) -> str | None:
        """The directory of the first ``<acct-file>`` (PowerMTA writes and rotates its files there)."""
        return os.path.dirname(self.acct_files[0].path) if self.acct_files else None

    def check_virtual_mta(self, name: str | None) -> None:
        """``PowerMtaConfigError`` unless ``name`` (when set) is a virtual MTA or a pool of this config."""
        if name is None or self.knows(name):
            return
        known = sorted(self.virtual_mtas) + sorted(self.pools)
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") if known else "none"
        raise PowerMtaConfigError(f"{self.path}: virtual_mta {name!r} is neither a <virtual-mta> nor a "
                                  f"<virtual-mta-pool> of this config (known: {shown})")


def read_powermta_config(path: str | Path) -> PowerMtaConfig:
    """Read and check a PowerMTA config file; :class:`PowerMtaConfigError` naming the file and line."""
    shown = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise PowerMtaConfigError(f"{shown}: cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise PowerMtaConfigError(f"{shown}: larger than {MAX_CONFIG_BYTES} bytes; is this a PowerMTA config file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # PowerMTA configs are ASCII in practice; never fail on a comment
    return parse_powermta_config(text, shown)


def parse_powermta_config(text: str, path: str = "<config>") -> PowerMtaConfig:
    """Parse config text (see the module docstring); ``path`` only names the file in errors."""
    stack: list[tuple[str, str, int]] = []  # (section, argument, line)
    vmtas: set[str] = set()
    pools: dict[str, list[str]] = {}
    pool_lines: dict[str, int] = {}
    accts: list[AcctFile] = []
    acct_words: list[str] = []
    port: int | None = None
    top_words: list[tuple[str, int]] = []

    def words_in(segment: str, line_no: int) -> None:
        words = segment.split()
        if not words:
            return
        section = stack[-1][0] if stack else None
        if section == "virtual-mta-pool":
            pools[stack[-1][1]].extend(words)
        elif section == "acct-file":
            acct_words.extend(words)
        elif section is None:
            top_words.extend((w, line_no) for w in words)

    for line_no, line in enumerate(text.splitlines(), start=1):
        line = _COMMENT.sub("", line)
        pos = 0
        for tag in _TAG.finditer(line):
            words_in(line[pos:tag.start()], line_no)
            pos = tag.end()
            closing, name, argument = tag.group(1), tag.group(2).lower(), tag.group(3).strip()
            if closing:
                if not stack or stack[-1][0] != name:
                    open_one = f"<{stack[-1][0]}> opened on line {stack[-1][2]}" if stack else "no open section"
                    raise PowerMtaConfigError(f"{path}, line {line_no}: </{name}> does not close {open_one}")
                section, arg, opened = stack.pop()
                if section == "acct-file":
                    accts.append(AcctFile(arg, _records(acct_words), opened))
                    acct_words = []
                continue
            if len(stack) >= MAX_SECTION_DEPTH:
                raise PowerMtaConfigError(f"{path}, line {line_no}: sections nested deeper than {MAX_SECTION_DEPTH}")
            if name in ("virtual-mta", "virtual-mta-pool"):
                if not _NAME.fullmatch(argument):
                    raise PowerMtaConfigError(f"{path}, line {line_no}: <{name}> needs a name of letters, digits, "
                                              f"'.', '_', '-' (got {argument[:60]!r})")
                if argument.lower() in {n.lower() for n in vmtas | set(pools)}:
                    raise PowerMtaConfigError(f"{path}, line {line_no}: {argument!r} is defined twice")
                if name == "virtual-mta":
                    vmtas.add(argument)
                else:
                    pools[argument] = []
                    pool_lines[argument] = line_no
            elif name == "acct-file" and not argument:
                raise PowerMtaConfigError(f"{path}, line {line_no}: <acct-file> needs a path")
            stack.append((name, argument, line_no))
        words_in(line[pos:], line_no)
    if stack:
        section, _arg, opened = stack[-1]
        raise PowerMtaConfigError(f"{path}, line {opened}: <{section}> is never closed")

    members: dict[str, tuple[str, ...]] = {}
    for pool, words in pools.items():
        names = [w for keyword, w in zip(words[::2], words[1::2]) if keyword.lower() == "virtual-mta"]
        if len(words) % 2 or len(names) * 2 != len(words):
            raise PowerMtaConfigError(f"{path}, line {pool_lines[pool]}: <virtual-mta-pool {pool}> holds something "
                                      f"other than 'virtual-mta NAME' lines")
        unknown = [n for n in names if n.lower() not in {v.lower() for v in vmtas}]
        if unknown:
            raise PowerMtaConfigError(f"{path}, line {pool_lines[pool]}: pool {pool!r} names {unknown[0]!r}, "
                                      f"which is no <virtual-mta>")
        members[pool] = tuple(names)

    for i, (word, line_no) in enumerate(top_words):
        if word.lower() == "http-mgmt-port":
            value = top_words[i + 1][0] if i + 1 < len(top_words) else ""
            if not value.isdigit() or not 1 <= int(value) <= 65535:
                raise PowerMtaConfigError(f"{path}, line {line_no}: http-mgmt-port needs a port number (got {value[:20]!r})")
            port = int(value)
    # A piped accounting file (``<acct-file |/usr/bin/prog>``) is a program, not a directory to read.
    return PowerMtaConfig(path=path, virtual_mtas=frozenset(vmtas), pools=members,
                          acct_files=tuple(a for a in accts if not a.path.startswith("|")), http_mgmt_port=port)


def _records(words: list[str]) -> tuple[str, ...]:
    for keyword, value in zip(words, words[1:]):
        if keyword.lower() == "records":
            return tuple(r.strip().lower() for r in value.split(",") if r.strip())
    return ("d", "b")  # PowerMTA's default
