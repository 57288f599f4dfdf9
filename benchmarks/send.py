"""A campaign's send against the speed of the MTA's listener (issue 17, §5).

    python benchmarks/send.py [--recipients 100000] [--connections 4] [--pipeline-depth N] [--cli] [--database-url URL]

A minimal pipelining SMTP listener runs on loopback in a process of its own (asyncio; it parses
only what it needs to answer: ``EHLO`` offers ``PIPELINING``, ``8BITMIME`` and ``DSN``; ``MAIL``,
``RCPT``, ``RSET`` get 250, ``DATA`` 354, the end of the data 250, ``QUIT`` 221). Against it, each in
a fresh process of its own (so that its peak RSS is its own):

* **unsigned**: a campaign of ``--recipients`` contacts, frozen and ``running`` in a scratch
  database (``benchmarks.campaign_ledger.setup``), sent by ``sender.send_campaign`` (claim, compose
  with the real Composer and the template of ``benchmarks/dkim_sign.py``, inject, record) through
  :class:`~email_engine_resources.powermta.PowerMtaSmtpTransport` (``connections: --connections``)
  pointed at the listener; timed from the call to its return: the loop of ``email-engine campaign
  send`` after the freeze (the freeze, the checks and the process start are not in the time);
* **signed**: the same with a DKIM key of 2048 bits (``DkimKey``, OpenSSL);
* **raw**: as many messages of the same size (the composed messages of a sample, cycled, with the
  ``x-job`` header the transport adds) injected by a minimal client over as many connections:
  ``MAIL``, ``RCPT`` and ``DATA`` in one write, wait for 354, send the data, wait for 250; run
  before and after the sends, the better of the two counting (other work on a shared machine only
  ever slows a run down).

Prints messages a second for each, the ratios to raw (issue 17's goals: unsigned within 4x, signed
within 10x), each process's own peak RSS (VmHWM) and the share of a core the sender used. Scratch database ``email_engine_bench_send`` on
``--database-url`` (else ``EMAIL_ENGINE_DATABASE_URL``, else the embedded server), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from email_engine_resources.settings import DATABASE_URL_ENV  # noqa: E402

BENCH_DATABASE = "email_engine_bench_send"
SAMPLE = 500  # composed messages the raw client cycles through


# --- the listener ------------------------------------------------------------------------------


class _Listener(asyncio.Protocol):
    """One SMTP session: commands line by line, then the data up to ``CRLF.CRLF``, nothing kept."""

    EHLO = b"250-bench.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 DSN\r\n"

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = b""
        self.in_data = False
        transport.write(b"220 bench.example ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        out = []
        while buffer:
            if self.in_data:
                end = buffer.find(b"\r\n.\r\n")
                if end < 0:
                    buffer = buffer[-4:]  # enough to find a terminator split across reads
                    break
                buffer = buffer[end + 5:]
                self.in_data = False
                out.append(b"250 ok\r\n")
                continue
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                break
            verb, buffer = buffer[:4].upper(), buffer[line_end + 2:]
            if verb == b"DATA":
                out.append(b"354 go\r\n")
                self.in_data = True
                buffer = b"\r\n" + buffer  # the data may end at once (an empty message)
            elif verb in (b"EHLO", b"HELO"):
                out.append(self.EHLO)
            elif verb == b"QUIT":
                out.append(b"221 bye\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            else:
                out.append(b"250 ok\r\n")
        self.buffer = buffer
        if out:
            self.transport.write(b"".join(out))


def _listen(conn) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Listener, "127.0.0.1", 0, backlog=256)
        conn.send(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        server.close()

    asyncio.run(main())


# --- the senders, each in a process of its own ---------------------------------------------------


def _send(url: str, name: str, recipients: int, connections: int, pem: bytes | None, port: int, workers: int,
          depth: int | None = None) -> dict:
    """``send_campaign`` of a campaign of ``recipients``, unsigned or signed with ``pem``."""
    from benchmarks.campaign_ledger import setup
    from benchmarks.dkim_sign import DOMAIN, SELECTOR, composer_factory
    from email_engine_assets.campaigns.sender import send_campaign
    from email_engine_assets.content.messages import DkimKey
    from email_engine_resources import postgres as database
    from email_engine_resources.powermta import PowerMtaSmtpTransport

    engine = database.get_engine(url)
    campaign = setup(engine, name, recipients)
    composer = composer_factory()(name, DkimKey(DOMAIN, SELECTOR, pem) if pem else None)
    transport = PowerMtaSmtpTransport(name="pmta", host="127.0.0.1", port=port, bounce_address="b@bounce.acme.example",
                                      connections=connections, allow_private=True, helo_name="bench.example",
                                      **({"pipeline_depth": depth} if depth else {}))
    cpu, started = time.process_time(), time.perf_counter()
    report = send_campaign(engine, campaign, composer, transport, compose_workers=workers)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    assert report.completed and report.outcomes["sent"] == recipients, report
    return {"seconds": elapsed, "send_cpu": cpu / elapsed}


def _sample(engine, recipients: int) -> list[bytes]:
    """The wire form of ``SAMPLE`` composed messages (``x-job`` on top, dot-stuffed, terminated); composed
    here, in the parent, so that the raw client's process holds only them."""
    from benchmarks.campaign_ledger import setup
    from benchmarks.dkim_sign import composer_factory
    from email_engine_assets.campaigns import store

    setup(engine, "raw", min(SAMPLE, recipients))
    with engine.begin() as conn:
        rows, _ = store.claim_batch(conn, "acme", "raw", SAMPLE)
    composer = composer_factory()("raw", None)
    out = []
    for row in rows:
        message = composer.compose(row["contact"], contact_id=row["contact_id"], row_token=row["token"]).message
        out.append(b"x-job: acme.raw\r\n" + message.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    return out


async def _raw_connection(port: int, messages: list[bytes], count: int, offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await reader.readline()).startswith(b"220")
    writer.write(b"EHLO bench.example\r\n")
    while (line := await reader.readline())[3:4] == b"-":
        pass
    for i in range(offset, offset + count):
        writer.write(b"MAIL FROM:<b@bounce.acme.example>\r\nRCPT TO:<u%d@example.com>\r\nDATA\r\n" % i)
        for _ in range(3):
            line = await reader.readline()
        assert line.startswith(b"354"), line
        writer.write(messages[i % len(messages)])
        assert (await reader.readline()).startswith(b"250")
    writer.write(b"QUIT\r\n")
    await reader.readline()
    writer.close()


def _raw(messages: list[bytes], recipients: int, connections: int, port: int) -> dict:
    shares = [recipients // connections + (i < recipients % connections) for i in range(connections)]

    async def run() -> None:
        await asyncio.gather(*(_raw_connection(port, messages, n, sum(shares[:i])) for i, n in enumerate(shares)))

    started = time.perf_counter()
    asyncio.run(run())
    return {"seconds": time.perf_counter() - started, "bytes": sum(map(len, messages)) // len(messages)}


def _peak_rss_kib() -> int:
    """This process's own high-water RSS. Not ``getrusage``'s ``ru_maxrss``: Linux carries into it the
    RSS of the process that forked this one before its exec (the parent's, here)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux


def _child(kind, args, conn) -> None:
    result = (_raw if kind == "raw" else _send)(*args)
    result["peak_rss_kib"] = _peak_rss_kib()
    conn.send(result)


def _in_process(kind: str, *args) -> dict:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: its peak RSS is its own
    parent, child = context.Pipe()
    process = context.Process(target=_child, args=(kind, args, child))
    process.start()
    try:
        peak = 0
        while not parent.poll(0.02):  # the process and the composing workers it starts, summed
            peak = max(peak, _tree_rss_kib(process.pid))
            if not process.is_alive():
                break
        result = parent.recv()
        result["peak_rss_kib"] = max(peak, result["peak_rss_kib"])
        return result
    except EOFError:
        process.join()
        raise SystemExit(f"the {kind} process failed (exit code {process.exitcode})") from None
    finally:
        process.join()


# --- the CLI-timed mode: `email-engine campaign send` from its start to its exit ----------------------


def _workspace(root: Path, recipients: int, port: int, depth: int | None = None) -> None:
    """Two tenants of ``recipients`` contacts each (one file to import), a segment of everyone, the
    template of ``benchmarks/dkim_sign.py``, a PowerMTA transport pointed at the listener, and a draft
    campaign each; ``acmesig`` signs with DKIM (its key in ``BENCH_DKIM_KEY``)."""
    from benchmarks.dkim_sign import TEMPLATE

    for tenant, dkim in (("acme", ""), ("acmesig", "dkim: {domain: acme.example, selector: s2026, private_key: {env: BENCH_DKIM_KEY}}\n")):
        (root / "tenants").mkdir(parents=True, exist_ok=True)
        (root / "tenants" / f"{tenant}.yaml").write_text(
            f"id: {tenant}\nname: Acme Industrie\ndefault_category: news\nsources: [{{id: crm}}]\n"
            'unsubscribe: {base_url: "https://unsubscribe.acme.example"}\n' + dkim +
            "segments:\n  - name: everyone\n    all: [{field: email, regex: '@'}]\n"
            f"transports:\n  - {{name: pmta, kind: powermta, host: 127.0.0.1, port: {port}, bounce_address: b@bounce.acme.example, "
            "connections: 4, allow_private: true" + (f", pipeline_depth: {depth}" if depth else "") + "}\n")
        (root / "templates" / tenant).mkdir(parents=True)
        (root / "templates" / tenant / "news_en.yaml").write_text(TEMPLATE)
        inbox = root / "inbox" / tenant / "crm"
        inbox.mkdir(parents=True)
        with (inbox / "contacts.csv").open("w") as out:
            out.write("email,first_name,language\n")
            out.writelines(f"u{i}@example.com,Ann{i},en\n" for i in range(recipients))
        (root / "campaigns" / tenant).mkdir(parents=True)
        (root / "campaigns" / tenant / "spring.yaml").write_text(
            "segment: everyone\ncategory: news\nfrom_name: Acme\nfrom_email: news@acme.example\ntransport: pmta\n")


def _tree_rss_kib(pid: int) -> int:
    """The RSS of ``pid`` and of every process under it, summed."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(stat[1])
        rss[int(entry)] = int(stat[21]) * (resource.getpagesize() // 1024)
    tree, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in tree} - tree
        grew = bool(more)
        tree |= more
    return sum(rss.get(p, 0) for p in tree)


def _timed_cli(args: list[str], env: dict) -> dict:
    """``email-engine <args>`` from its start to its exit, and the peak of its process tree's summed RSS
    (sampled every 20 ms)."""
    import subprocess

    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "email_engine_assets.cli", *args], env=env, cwd=Path(__file__).resolve().parents[1],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while child.poll() is None:
        peak = max(peak, _tree_rss_kib(child.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    out, err = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"email-engine {' '.join(args)} failed ({child.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
    return {"seconds": seconds, "peak_rss_kib": peak, "out": out}


def cli_main(args, pem: bytes, port: int, workers: int | None) -> tuple[dict, dict, list[bytes]]:
    """The two campaigns sent by ``email-engine campaign send`` in a scratch workspace and database, after
    ``email-engine run`` imported the contacts and built the segment: (unsigned, signed, a raw sample)."""
    import tempfile

    from benchmarks.main_run import closed_port
    from email_engine_resources import postgres as database
    from email_engine_resources.settings import HOME_ENV, WORKSPACE_ENV

    server = args.database_url or database.embedded_server_url()
    url = database.with_database(server, BENCH_DATABASE + "_cli")
    database.drop_database(url)
    database.ensure_database(url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "workspace"
            _workspace(root, args.recipients, port, args.pipeline_depth)
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), DATABASE_URL_ENV: url,
                   HOME_ENV: str(Path(tmp) / "home"), WORKSPACE_ENV: str(root), "BENCH_DKIM_KEY": pem.decode("ascii"),
                   "EMAIL_ENGINE_DNS_NAMESERVERS": "127.0.0.1", "EMAIL_ENGINE_DNS_PORT": str(closed_port())}
            if workers is not None:
                env["EMAIL_ENGINE_COMPOSE_WORKERS"] = str(workers)
            env.pop("DAGSTER_HOME", None)
            env.pop("EMAIL_ENGINE_DAGSTER_DATABASE_URL", None)
            _timed_cli(["db", "upgrade"], env)
            engine = database.get_engine(url)
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO dns_cache (domain, status, mx_hosts, ttl_s, expires_at) "
                                     "VALUES ('example.com', 'mx', ARRAY['mx.example.com'], 86400, now() + interval '1 day')")
            built = _timed_cli(["run"], env)
            print(f"email-engine run (import, checks, segment of {args.recipients:,}): {built['seconds']:.0f} s", flush=True)
            unsigned = _timed_cli(["campaign", "send", "acme.spring"], env)
            signed = _timed_cli(["campaign", "send", "acmesig.spring"], env)
            for key, result in (("acme.spring", unsigned), ("acmesig.spring", signed)):
                with engine.connect() as conn:
                    sent = conn.exec_driver_sql("SELECT count(*) FROM campaign_sends WHERE tenant_id || '.' || campaign = %(k)s "
                                                "AND state = 'sent'", {"k": key}).scalar_one()
                if sent != args.recipients:
                    raise SystemExit(f"{key}: {sent} sent of {args.recipients}:\n{result['out'][-3000:]}")
            sample = _sample(engine, args.recipients)
            engine.dispose()
    finally:
        database.drop_database(url)
    return unsigned, signed, sample


def main() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from benchmarks.scratch import scratch_database

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--database-url", default=os.environ.get(DATABASE_URL_ENV, ""))
    parser.add_argument("--cli", action="store_true", help="time `email-engine campaign send` from its start to its exit "
                        "(after `email-engine run` built the segment), summed RSS of its process tree")
    parser.add_argument("--workers", type=int, default=None, help="composing processes (default: as `campaign send`, one per core)")
    parser.add_argument("--pipeline-depth", type=int, default=None, help="messages a connection takes at a time (the transport's "
                        "pipeline_depth; default 4)")
    args = parser.parse_args()
    from email_engine_assets.campaigns.composing import default_workers
    workers = default_workers() if args.workers is None else args.workers
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    context = multiprocessing.get_context("spawn")
    control, child = context.Pipe()
    listener = context.Process(target=_listen, args=(child,), daemon=True)
    listener.start()
    port = control.recv()
    n, c = args.recipients, args.connections
    try:
        if args.cli:
            unsigned, signed, sample = cli_main(args, pem, port, args.workers)
            raw_before = _in_process("raw", sample, n, c, port)
            raw_after = _in_process("raw", sample, n, c, port)
        else:
            with scratch_database(BENCH_DATABASE, args.database_url) as engine:
                url = engine.url.render_as_string(hide_password=False)
                sample = _sample(engine, n)
                raw_before = _in_process("raw", sample, n, c, port)
                unsigned = _in_process("send", url, "unsigned", n, c, None, port, workers, args.pipeline_depth)
                signed = _in_process("send", url, "signed", n, c, pem, port, workers, args.pipeline_depth)
                raw_after = _in_process("raw", sample, n, c, port)
    finally:
        control.send("stop")
        listener.join(10)
    # the limit is the better of two raw runs, before and after the sends: on a shared machine other work only slows one down
    raw = min(raw_before, raw_after, key=lambda r: r["seconds"])
    depth = f" (pipeline depth {args.pipeline_depth})" if args.pipeline_depth else ""
    print(f"{n:,} recipients, {c} connections{depth}, messages of about {raw['bytes']:,} bytes on the wire, listener on loopback")
    rate = {name: n / r["seconds"] for name, r in (("raw", raw), ("unsigned", unsigned), ("signed", signed))}
    for name, r, label in (("unsigned", unsigned, "campaign send, unsigned"), ("signed", signed, "campaign send, DKIM rsa-2048"),
                           ("raw", raw, "raw pipelined injection")):
        ratio = "" if name == "raw" else f"  {rate['raw'] / rate[name]:5.1f}x raw" + (
            "" if args.cli else f", {r['send_cpu']:.0%} of a core")
        print(f"{label:<30} {rate[name]:>8,.0f} msg/s  {r['seconds']:7.1f} s  peak RSS {r['peak_rss_kib'] / 1024:6.0f} MiB{ratio}")
    print(f"  (raw before the sends {n / raw_before['seconds']:,.0f} msg/s, after {n / raw_after['seconds']:,.0f}: the better one counts)")
    print(f"goals (issue 17): unsigned within 4x raw ({rate['raw'] / rate['unsigned']:.1f}x), "
          f"signed within 10x raw ({rate['raw'] / rate['signed']:.1f}x); signed / unsigned {rate['signed'] / rate['unsigned']:.0%}")


if __name__ == "__main__":
    main()
