"""PowerMTA's config file, read for what the engine needs from it (REFERENCE.md, "PowerMTA").

* ``include PATH`` lines (a path relative to the including file's directory, or a glob such as
  ``/etc/pmta/customs/*.conf``, matches read in name order) are followed; a file that includes
  itself, directly or through others, is refused naming the chain;
* ``<virtual-mta NAME> ... </virtual-mta>`` and ``<virtual-mta-pool NAME> virtual-mta A ...
  </virtual-mta-pool>``: the names a transport's ``virtual_mta`` may use (checked before a send);
* ``<acct-file PATH> records d,b,t,f,rb  move-to DIR ... </acct-file>``: where the accounting files
  are (``records`` as ``d,b,t``, ``d b f`` or ``all``); PowerMTA writes them under the base name
  and its rotation names (``acct-2026-11-29-0000.csv`` for ``acct.csv``), and ``move-to`` moves
  rotated files to another directory (:meth:`AcctFile.locations`);
* ``<source ADDRESS>`` (an IP, a CIDR such as ``10.0.0.0/8``, or ``0/0``): whether PowerMTA
  processes the ``x-job``, ``x-virtual-mta`` and ``x-envid`` headers of what that address injects
  (:meth:`PowerMtaConfig.source_for`: the most specific block that matches wins, its settings
  alone count; a block named otherwise, such as ``{auth}``, never matches an address);
* ``http-mgmt-port N``: the HTTP management port.

Everything else (domains, patterns, listeners) is skipped. Sections may sit on one line or span
many; ``#`` starts a comment. An error names the file and the line; the files together are capped
at :data:`MAX_CONFIG_BYTES`.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_SECTION_DEPTH = 16
MAX_INCLUDE_DEPTH = 16
MAX_CONFIG_FILES = 1000

# Accounting record types PowerMTA writes (REFERENCE.md); ``records all`` is every one of them.
RECORD_TYPES: tuple[str, ...] = ("d", "b", "t", "tq", "r", "f", "rb", "rs")
DEFAULT_RECORDS: tuple[str, ...] = ("d", "b")
# The <source> settings that make PowerMTA take the engine's headers instead of passing them on.
PROCESS_X_JOB = "process-x-job"
PROCESS_X_VIRTUAL_MTA = "process-x-virtual-mta"
PROCESS_X_ENVID = "process-x-envid"
_YES = frozenset({"yes", "true", "on", "1"})

_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z][A-Za-z0-9-]*)\s*([^>]*)>")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_COMMENT = re.compile(r"(^|\s)#.*$")
_GLOB = re.compile(r"[*?\[]")


class PowerMtaConfigError(ValueError):
    """The config file cannot be read as PowerMTA config; ``str()`` names the file and the line."""


@dataclass(frozen=True)
class AcctFile:
    """One ``<acct-file>``: its path (the base name), the records it takes, where rotated files are moved."""

    path: str
    records: tuple[str, ...]
    line: int
    move_to: str | None = None
    file: str = ""

    def locations(self) -> tuple[str, ...]:
        """The directories holding this accounting stream's files: the base name's, then ``move-to``'s."""
        base = os.path.dirname(self.path) or "."
        if not self.move_to:
            return (base,)
        moved = self.move_to if os.path.isabs(self.move_to) else os.path.join(base, self.move_to)
        return (base, moved) if os.path.normpath(moved) != os.path.normpath(base) else (base,)

    def names(self) -> re.Pattern[str]:
        """The file names PowerMTA gives this stream: the base name itself and its rotation names,
        the base name with ``-<digits...>`` before the extension (``acct-2026-11-29-0000.csv``,
        ``acct-2026-11-29-0000-1.csv`` for ``acct.csv``). ``acct-bounced.csv`` is another stream's."""
        return rotation_names(os.path.basename(self.path))


def rotation_names(base: str) -> re.Pattern[str]:
    """The names of the files PowerMTA writes for the accounting base name ``base`` (see :meth:`AcctFile.names`)."""
    stem, ext = os.path.splitext(base)
    return re.compile(rf"{re.escape(stem)}(?:-[0-9][0-9._-]*)?{re.escape(ext)}")


@dataclass(frozen=True)
class SourceBlock:
    """One ``<source ...>`` block: what it matches and its settings (keyword lower-cased -> last value)."""

    match: str
    settings: dict[str, str]
    file: str
    line: int

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The addresses the block matches; none for a named source (``{auth}``, ``{pickup}``)."""
        if self.match in ("0/0", "*"):
            return ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")
        try:
            return (ipaddress.ip_network(self.match, strict=False),)
        except ValueError:
            return ()

    def enabled(self, setting: str) -> bool:
        """Whether ``setting`` is ``yes`` here (PowerMTA's default for the process-x settings is ``no``)."""
        return self.settings.get(setting, "no").lower() in _YES

    def where(self) -> str:
        return f"<source {self.match}> ({self.file}, line {self.line})"


@dataclass(frozen=True)
class PowerMtaConfig:
    """What was read: virtual MTA names, pools with their members, accounting files, sources, the management port."""

    path: str
    virtual_mtas: frozenset[str] = frozenset()
    pools: dict[str, tuple[str, ...]] = field(default_factory=dict)
    acct_files: tuple[AcctFile, ...] = ()
    http_mgmt_port: int | None = None
    sources: tuple[SourceBlock, ...] = ()
    files: tuple[str, ...] = ()

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

    def source_for(self, address: str) -> SourceBlock | None:
        """The ``<source>`` block PowerMTA applies to a connection from ``address``: of the blocks whose
        IP or CIDR holds it, the one with the longest prefix (``0/0`` last); the later one on a tie."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        best: tuple[int, int, SourceBlock] | None = None
        for order, block in enumerate(self.sources):
            for network in block.networks():
                if ip.version == network.version and ip in network:
                    rank = (network.prefixlen, order)
                    if best is None or rank > best[:2]:
                        best = (*rank, block)
        return best[2] if best else None


def header_settings(config: PowerMtaConfig, address: str, *, virtual_mta: bool) -> tuple[SourceBlock | None, list[str], bool]:
    """What the ``<source>`` block for ``address`` lacks for the engine's injection headers.

    Returns (the block, the missing settings, whether ``x-envid`` is processed). ``x-job`` always
    needs ``process-x-job``; ``x-virtual-mta`` (sent only when the transport names a virtual MTA)
    needs ``process-x-virtual-mta``. ``process-x-envid`` is not required: without it the engine
    gives the ENVID on ``MAIL FROM`` (DSN) and never as a header.
    """
    block = config.source_for(address)
    needed = [PROCESS_X_JOB] + ([PROCESS_X_VIRTUAL_MTA] if virtual_mta else [])
    if block is None:
        return None, needed, False
    return block, [s for s in needed if not block.enabled(s)], block.enabled(PROCESS_X_ENVID)


@dataclass
class _Files:
    """The files read so far (a cap on their number and total size), for :func:`_expanded_lines`."""

    read: list[str] = field(default_factory=list)
    size: int = 0


def read_powermta_config(path: str | Path) -> PowerMtaConfig:
    """Read and check a PowerMTA config file and the files it includes; :class:`PowerMtaConfigError` naming the file and line."""
    shown = str(path)
    files = _Files()
    text = _read_file(shown, files, None)
    return _parse(_expanded_lines(text, shown, files, (shown,)), shown, files)


def parse_powermta_config(text: str, path: str = "<config>") -> PowerMtaConfig:
    """Parse config text (see the module docstring); ``path`` names the file in errors and anchors relative includes."""
    files = _Files(read=[path], size=len(text))
    return _parse(_expanded_lines(text, path, files, (path,)), path, files)


def _read_file(path: str, files: _Files, where: str | None) -> str:
    prefix = f"{where}: {path}" if where else path
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise PowerMtaConfigError(f"{prefix}: cannot be read: {exc.strerror or exc}") from None
    files.size += len(raw)
    files.read.append(path)
    if files.size > MAX_CONFIG_BYTES:
        raise PowerMtaConfigError(f"{prefix}: the config files together are larger than {MAX_CONFIG_BYTES} bytes; "
                                  "is this a PowerMTA config file?")
    if len(files.read) > MAX_CONFIG_FILES:
        raise PowerMtaConfigError(f"{prefix}: more than {MAX_CONFIG_FILES} config files included")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # PowerMTA configs are ASCII in practice; never fail on a comment


def _expanded_lines(text: str, path: str, files: _Files, chain: tuple[str, ...]):
    """(file, line number, line without its comment) of ``text``, an ``include`` line replaced by the included files' lines."""
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = _COMMENT.sub("", line)
        words = line.split()
        if not words or words[0].lower() != "include":
            yield path, line_no, line
            continue
        where = f"{path}, line {line_no}"
        if len(words) != 2:
            raise PowerMtaConfigError(f"{where}: include needs one path (got {line.strip()[:80]!r})")
        if len(chain) > MAX_INCLUDE_DEPTH:
            raise PowerMtaConfigError(f"{where}: includes nested deeper than {MAX_INCLUDE_DEPTH}")
        target = os.path.expanduser(words[1])
        if not os.path.isabs(target):
            target = os.path.normpath(os.path.join(os.path.dirname(path) or ".", target))
        if _GLOB.search(target):
            targets = sorted(glob.glob(target))
        else:
            targets = [target]
        for included in targets:
            real = os.path.realpath(included)
            if real in (os.path.realpath(c) for c in chain):
                shown = " -> ".join([*chain, included])
                raise PowerMtaConfigError(f"{where}: include cycle refused: {shown}")
            content = _read_file(included, files, where)
            yield from _expanded_lines(content, included, files, (*chain, included))


def _parse(lines, path: str, files: _Files) -> PowerMtaConfig:
    stack: list[tuple[str, str, str, int]] = []  # (section, argument, file, line)
    vmtas: set[str] = set()
    pools: dict[str, list[str]] = {}
    pool_where: dict[str, str] = {}
    accts: list[AcctFile] = []
    sources: list[SourceBlock] = []
    section_words: list[str] = []
    top_words: list[tuple[str, str]] = []  # (word, "file, line N")

    def words_in(segment: str, where: str) -> None:
        words = segment.split()
        if not words:
            return
        section = stack[-1][0] if stack else None
        if section == "virtual-mta-pool":
            pools[stack[-1][1]].extend(words)
        elif section in ("acct-file", "source"):
            section_words.extend(words)
        elif section is None:
            top_words.extend((w, where) for w in words)

    for file, line_no, line in lines:
        where = f"{file}, line {line_no}"
        pos = 0
        for tag in _TAG.finditer(line):
            words_in(line[pos:tag.start()], where)
            pos = tag.end()
            closing, name, argument = tag.group(1), tag.group(2).lower(), tag.group(3).strip()
            if closing:
                if not stack or stack[-1][0] != name:
                    open_one = f"<{stack[-1][0]}> opened in {stack[-1][2]}, line {stack[-1][3]}" if stack else "no open section"
                    if stack and stack[-1][2] == file:
                        open_one = f"<{stack[-1][0]}> opened on line {stack[-1][3]}"
                    raise PowerMtaConfigError(f"{where}: </{name}> does not close {open_one}")
                section, arg, opened_file, opened = stack.pop()
                opened_at = f"{opened_file}, line {opened}"
                if section == "acct-file":
                    accts.append(AcctFile(arg, _records(section_words, opened_at), opened, _setting(section_words, "move-to"),
                                          opened_file))
                    section_words = []
                elif section == "source":
                    sources.append(SourceBlock(arg, _settings(section_words), opened_file, opened))
                    section_words = []
                continue
            if len(stack) >= MAX_SECTION_DEPTH:
                raise PowerMtaConfigError(f"{where}: sections nested deeper than {MAX_SECTION_DEPTH}")
            if name in ("virtual-mta", "virtual-mta-pool"):
                if not _NAME.fullmatch(argument):
                    raise PowerMtaConfigError(f"{where}: <{name}> needs a name of letters, digits, "
                                              f"'.', '_', '-' (got {argument[:60]!r})")
                if argument.lower() in {n.lower() for n in vmtas | set(pools)}:
                    raise PowerMtaConfigError(f"{where}: {argument!r} is defined twice")
                if name == "virtual-mta":
                    vmtas.add(argument)
                else:
                    pools[argument] = []
                    pool_where[argument] = where
            elif name in ("acct-file", "source") and not argument:
                raise PowerMtaConfigError(f"{where}: <{name}> needs a {'path' if name == 'acct-file' else 'address'}")
            if name in ("acct-file", "source"):
                section_words = []
            stack.append((name, argument, file, line_no))
        words_in(line[pos:], where)
    if stack:
        section, _arg, opened_file, opened = stack[-1]
        raise PowerMtaConfigError(f"{opened_file}, line {opened}: <{section}> is never closed")

    members: dict[str, tuple[str, ...]] = {}
    for pool, words in pools.items():
        names = [w for keyword, w in zip(words[::2], words[1::2]) if keyword.lower() == "virtual-mta"]
        if len(words) % 2 or len(names) * 2 != len(words):
            raise PowerMtaConfigError(f"{pool_where[pool]}: <virtual-mta-pool {pool}> holds something "
                                      f"other than 'virtual-mta NAME' lines")
        unknown = [n for n in names if n.lower() not in {v.lower() for v in vmtas}]
        if unknown:
            raise PowerMtaConfigError(f"{pool_where[pool]}: pool {pool!r} names {unknown[0]!r}, "
                                      f"which is no <virtual-mta>")
        members[pool] = tuple(names)

    port: int | None = None
    for i, (word, where) in enumerate(top_words):
        if word.lower() == "http-mgmt-port":
            value = top_words[i + 1][0] if i + 1 < len(top_words) else ""
            if not value.isdigit() or not 1 <= int(value) <= 65535:
                raise PowerMtaConfigError(f"{where}: http-mgmt-port needs a port number (got {value[:20]!r})")
            port = int(value)
    # A piped accounting file (``<acct-file |/usr/bin/prog>``) is a program, not a directory to read.
    return PowerMtaConfig(path=path, virtual_mtas=frozenset(vmtas), pools=members,
                          acct_files=tuple(a for a in accts if not a.path.startswith("|")), http_mgmt_port=port,
                          sources=tuple(sources), files=tuple(files.read))


def _setting(words: list[str], keyword: str) -> str | None:
    """The value after the last ``keyword`` of a section's words."""
    value = None
    for word, following in zip(words, words[1:]):
        if word.lower() == keyword:
            value = following
    return value


def _settings(words: list[str]) -> dict[str, str]:
    """A section's ``keyword value`` settings (keywords lower-cased; a later one wins)."""
    out: dict[str, str] = {}
    for word, following in zip(words, words[1:]):
        if word.lower().startswith("process-x-") or word.lower() in ("smtp-service", "always-allow-relaying"):
            out[word.lower()] = following
    return out


def _records(words: list[str], where: str) -> tuple[str, ...]:
    """``records`` in its forms: ``d,b,t``, ``d b f``, ``d, b``, ``all``; the words after it up to the next setting."""
    found: list[str] | None = None
    for i, word in enumerate(words):
        if word.lower() != "records":
            continue
        found = []
        for value in words[i + 1:]:
            pieces = [p.strip().lower() for p in value.split(",") if p.strip()]
            if not pieces or not all(p in RECORD_TYPES or p == "all" for p in pieces):
                if "," in value and found is not None:
                    bad = next(p for p in pieces if p not in RECORD_TYPES and p != "all")
                    raise PowerMtaConfigError(f"{where}: records names {bad[:20]!r}, which is no record type "
                                              f"({', '.join(RECORD_TYPES)} or all)")
                break
            found.extend(pieces)
        if not found:
            raise PowerMtaConfigError(f"{where}: records needs record types ({', '.join(RECORD_TYPES)} or all)")
    if found is None:
        return DEFAULT_RECORDS  # PowerMTA's default
    if "all" in found:
        return RECORD_TYPES
    return tuple(dict.fromkeys(found))
