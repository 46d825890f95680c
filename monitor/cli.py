"""The `gtmon` command line.

Subcommands mirror the README: `sandbox` (try everything locally), `run`
(the daemon), `init`, `check` (one-shot, nagios exit codes), `cost`,
`emulator`, `fault`, `health`, `at-risk` and `config validate`. User errors print one clear
message and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from monitor import __version__
from monitor.config import AwsSettings, Config, ConfigError, load_config, validation_problems
from monitor.logs import configure_logging

if TYPE_CHECKING:
    from monitor.cost import CostBreakdown, Prices

__all__ = ["main"]

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"
# `gtmon fault` reads the emulator's URL from here when --endpoint is not given, so a
# shell that exported it once (as the README walkthrough does) never falls back to 8000.
ENDPOINT_ENV = "GTMON_ENDPOINT"


class UserError(Exception):
    """A mistake the user can fix; printed without a traceback."""


# What the `sandbox` extra installs that the emulator and the sandbox import; a production
# install (`pip install gtmon`) has none of it, and these commands say what to install.
SANDBOX_EXTRA_MODULES = ("moto", "rich")
SANDBOX_EXTRA_INSTALL = "pip install 'gtmon[sandbox]'"


def require_sandbox_extra(command: str) -> None:
    """Refuse `command` in one line when the sandbox extra is missing, instead of an
    ImportError traceback from deep inside the emulator."""
    missing = [name for name in SANDBOX_EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"`gtmon {command}` needs the sandbox extra ({', '.join(missing)} not installed): "
            f"{SANDBOX_EXTRA_INSTALL}"
        )


def _regions(value: str) -> list[str]:
    regions = [r.strip() for r in value.split(",") if r.strip()]
    if not regions:
        raise argparse.ArgumentTypeError("give at least one region, comma separated")
    return regions


def _describe_web_config(path: str) -> str:
    """Load the web config with its certificates and keys (ConfigError if anything is
    wrong) and say in a few words what it sets up."""
    from monitor.webconfig import load_web_config

    web = load_web_config(path)
    parts = ["TLS" if web.tls else "plain HTTP"]
    if web.client_auth_type not in ("NoClientCert", "RequestClientCert"):
        parts.append(f"client certificates ({web.client_auth_type})")
    parts.append(f"{len(web.users)} basic auth user(s)" if web.users else "no basic auth")
    if web.headers:
        parts.append(f"{len(web.headers)} header(s)")
    return f"web config {path}: {', '.join(parts)}"


def _cmd_config_validate(args: argparse.Namespace) -> int:
    # `--config FILE` like every other command; the positional FILE of earlier releases too.
    if args.file and args.config and args.file != args.config:
        raise UserError(f"config validate: give the file once, not {args.file} and --config {args.config}")
    path = args.config or args.file
    if not path:
        raise UserError("config validate: give the file to check: gtmon config validate --config FILE")
    config = load_config(path)
    summary = f"{len(config.regions)} regions, {len(config.tables)} tables"
    if config.metrics.web_config_file:
        summary += "; " + _describe_web_config(config.metrics.web_config_file)
    print(f"{path}: OK ({summary})")
    return 0


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    updates: dict[str, object] = {}
    if getattr(args, "home_region", None):
        if args.home_region not in config.regions:
            raise UserError(
                f"--home-region {args.home_region} is not one of {config.regions} in {args.config}"
            )
        updates["home_region"] = args.home_region
    if getattr(args, "endpoint", None):
        try:  # model_copy would skip the checks the file's endpoint_url got
            aws = AwsSettings.model_validate({**config.aws.model_dump(), "endpoint_url": args.endpoint})
        except ValidationError as exc:
            raise UserError(f"--endpoint {args.endpoint!r}: {validation_problems(exc)[0]}") from None
        updates["aws"] = aws
    return config.model_copy(update=updates) if updates else config


def _probe_target(args: argparse.Namespace) -> str:
    """The URL `gtmon health` checks: --url, or the config's own metrics address (a wildcard
    address is checked on loopback), https when its web config serves TLS."""
    path = "/readyz" if args.ready else "/healthz"
    if args.url:
        return str(args.url).rstrip("/") + path
    return _daemon_url(args.config, path)


def _daemon_url(config_path: str, path: str) -> str:
    """`path` on the daemon a config describes: its metrics address and port, https with TLS."""
    config = load_config(config_path)
    tls = False
    if config.metrics.web_config_file:
        from monitor.webconfig import load_web_config

        tls = load_web_config(config.metrics.web_config_file).tls
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.metrics.host, config.metrics.host)
    if ":" in host:
        host = f"[{host}]"
    if config.metrics.port == 0:
        raise UserError(f"{config_path}: metrics.port is 0 (a random port): give --url")
    return f"{'https' if tls else 'http'}://{host}:{config.metrics.port}{path}"


def _cmd_health(args: argparse.Namespace) -> int:
    import ssl
    import urllib.error
    import urllib.request

    url = "(no URL)"
    try:
        url = _probe_target(args)
        context = None
        if url.startswith("https:"):
            # The daemon next door, on loopback: its certificate is checked only with --cafile
            # (it rarely names 127.0.0.1).
            context = ssl.create_default_context(cafile=args.cafile)
            if not args.cafile:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if args.cert:
                context.load_cert_chain(args.cert, args.key)
        with urllib.request.urlopen(url, timeout=args.timeout, context=context) as response:
            text = response.read(200).decode("utf-8", "replace").strip()
            print(f"gtmon health: OK {url} ({response.status} {text})")
            return 0
    except urllib.error.HTTPError as exc:
        text = exc.read(200).decode("utf-8", "replace").strip().replace("\n", "; ")
        print(f"gtmon health: FAIL {url}: {exc.code} {text}", file=sys.stderr)
    except (ConfigError, UserError) as exc:
        print(f"gtmon health: FAIL {' '.join(str(exc).split())}", file=sys.stderr)
    except (OSError, ValueError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        print(f"gtmon health: FAIL {url}: {reason}", file=sys.stderr)
    # 1 is "unhealthy" for Docker's HEALTHCHECK (2 is reserved there).
    return 1


def _cmd_at_risk(args: argparse.Namespace) -> int:
    """Print what a running daemon's /api/at-risk says about a region (JSON with --json)."""
    import ssl
    import urllib.error
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode({"region": args.region, **({"table": args.table} if args.table else {})})
    url = _daemon_url(args.config, f"/api/at-risk?{query}")
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=args.cafile)
        if not args.cafile:  # the daemon next door, as for `gtmon health`
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url)
    user, password = os.environ.get("GTMON_WEB_USER"), os.environ.get("GTMON_WEB_PASSWORD")
    if user and password is not None:
        import base64

        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout, context=context) as response:
            report = json.load(response)
    except urllib.error.HTTPError as exc:
        text = exc.read(300).decode("utf-8", "replace").strip().replace("\n", "; ")
        raise UserError(f"{url}: {exc.code} {text}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
    print(json.dumps(report, indent=2) if args.json else _render_at_risk(report))
    return 0


def _render_at_risk(report: Mapping[str, object]) -> str:
    """The report for a terminal: per table the writes at risk now, then each incident."""
    from datetime import UTC, datetime

    def when(t: object) -> str:
        if not isinstance(t, int | float):
            return "-"
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"

    def key(k: object) -> str:
        if not isinstance(k, dict):
            return str(k)
        return ", ".join(f"{n}={next(iter(v.values())) if isinstance(v, dict) else v}"
                         for n, v in k.items())

    region = report.get("region")
    lines = [f"writes accepted in {region} that other regions' streams have not shown "
             f"(region {'up' if report.get('region_up') else 'DOWN'}):"]
    now = report.get("now") or {}
    assert isinstance(now, dict)
    for table, entry in sorted(now.items()):
        lines.append(f"  {table}: {entry['writes']} writes at risk"
                     + (f" ({entry['unlisted']} beyond the key cap, not listed)"
                        if entry["unlisted"] else ""))
        for w in entry["list"]:
            lines.append(f"    {key(w['key'])}  written {when(w['written_at'])}  missing in "
                         f"{', '.join(w['missing_in']) or '-'}"
                         + (f"  (reader behind: {', '.join(w['unconfirmed_in'])})"
                            if w["unconfirmed_in"] else ""))
    incidents = report.get("incidents") or []
    assert isinstance(incidents, list)
    for inc in incidents:
        back = f"returned {when(inc['returned_at'])}" if inc["returned_at"] else "still down"
        totals = ", ".join(f"{n} {o}" for o, n in sorted(inc["outcomes"].items())) or "none"
        lines.append(f"  incident {inc['table']}: down {when(inc['down_at'])}, {back}: "
                     f"{inc['writes']} writes; outcomes per missing region: {totals}")
        for w in inc["list"]:
            ends = ", ".join(f"{r} {o}" for r, o in sorted(w["outcomes"].items()))
            lines.append(f"    {key(w['key'])}  written {when(w['written_at'])}: {ends}")
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    from monitor.aws import AwsSetupError
    from monitor.service import Service, StartError
    from monitor.streams.checkpoints import CheckpointError

    config = _load(args)
    configure_logging(config.log.format, config.log.level)
    try:
        service = Service(config)
        asyncio.run(service.run_until_stopped())
    except (AwsSetupError, StartError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    from monitor.aws import AwsCallError, AwsClients, AwsSetupError
    from monitor.canary.table import ensure_canary_table

    config = _load(args)
    configure_logging(config.log.format, config.log.level)

    async def init() -> list[str]:
        clients = AwsClients(config.aws)
        await clients.start(config.regions)
        try:
            return await ensure_canary_table(
                clients, config.canary.table, config.regions, "gtmon_expires_at", args.timeout
            )
        finally:
            await clients.close()

    try:
        actions = asyncio.run(init())
    except (AwsCallError, AwsSetupError) as exc:
        raise UserError(f"init failed: {exc}") from None
    except TimeoutError as exc:
        raise UserError(f"init failed: {exc}") from None
    print(
        "\n".join(actions) or f"{config.canary.table} already exists in {', '.join(config.regions)}"
    )
    return 0


def _cmd_sandbox(args: argparse.Namespace) -> int:
    require_sandbox_extra("sandbox")
    from monitor.sandbox import SandboxOptions, run_sandbox
    from monitor.service import StartError

    options = SandboxOptions(
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        traffic=not args.no_traffic,
        ui=not args.no_ui and sys.stdout.isatty(),
        realistic_latency=not args.no_latency,
        state_dir=args.state_dir,
    )
    try:
        return asyncio.run(run_sandbox(options))
    except (OSError, StartError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UserError(
            f"cannot start the sandbox: {reason} (is another sandbox or emulator running? "
            "choose other ports with --port and --metrics-port)"
        ) from None


def _cmd_check(args: argparse.Namespace) -> int:
    from monitor.aws import AwsSetupError
    from monitor.canary.runner import CanaryTarget, canary_targets
    from monitor.check import UNKNOWN, run_check
    from monitor.config import parse_config

    try:
        if args.config:
            config = _load(args)
        elif args.table and args.regions:
            config = parse_config(
                {
                    "regions": args.regions,
                    "aws": {"endpoint_url": args.endpoint},
                    "instance_id": args.instance,
                },
                "command line",
            )
        else:
            raise UserError(
                "give --config FILE, or --table and --regions (and --endpoint for the emulator)"
            )
        configure_logging("console", "error")
        target = (
            CanaryTarget(args.table, tuple(config.regions), (("pk", "{instance}#{source}"),))
            if args.table
            else canary_targets(config)[0]
        )
        if args.timeout <= 0:
            raise UserError(f"--timeout must be positive, not {args.timeout:g}")
        result = asyncio.run(run_check(config, target, args.warning, args.critical, args.timeout))
    except (ConfigError, UserError, AwsSetupError) as exc:
        print(f"GTMON UNKNOWN - {' '.join(str(exc).split())}")
        return UNKNOWN
    print(result.render())
    return result.code


def _cost_reads(args: argparse.Namespace) -> tuple[float | None, str]:
    """The measured reads per canary to price, and where the figure came from."""
    from monitor.cost_inputs import fetch_measured_reads

    if args.reads_per_canary is not None and args.status_url:
        raise UserError("give --reads-per-canary or --status-url, not both")
    if args.reads_per_canary is not None:
        if args.reads_per_canary <= 0:
            raise UserError(f"--reads-per-canary must be positive, not {args.reads_per_canary:g}")
        return args.reads_per_canary, "--reads-per-canary"
    if not args.status_url:
        return None, "none given: --status-url of a running gtmon, or --reads-per-canary N"
    try:
        measured = fetch_measured_reads(args.status_url, args.timeout)
    except ValueError as exc:
        raise UserError(f"--status-url: {exc}") from None
    if measured is None:
        return None, f"{args.status_url} has measured no canary yet"
    return measured.per_canary, (
        f"average of {measured.pairs} pair(s), {measured.canaries} canaries, at {args.status_url}"
    )


def _cost_shards(
    args: argparse.Namespace, config: Config, watched: dict[str, list[str]]
) -> tuple[dict[str, int], str]:
    """Shard readers per watched table, and the assumption they rest on (printed)."""
    from monitor.cost_inputs import ShardsFound, discover_shards

    if not watched:
        return {}, "no table's streams are read (streams.enabled or tables[].conflicts.enabled)"
    if args.shards is not None:
        if args.shards < 1:
            raise UserError(f"--shards must be at least 1, not {args.shards}")
        return (
            {name: len(regions) * args.shards for name, regions in watched.items()},
            f"{args.shards} open shard(s) per replica, as given by --shards",
        )
    found = discover_shards(config, watched, args.timeout)
    if isinstance(found, ShardsFound):
        readers = {name: 0 for name in watched}
        for (name, _), count in found.open_shards.items():
            readers[name] += count
        detail = ", ".join(
            f"{name} {region} {count}" for (name, region), count in sorted(found.open_shards.items())
        )
        return readers, f"open shards from DescribeStream ({detail})"
    return (
        {name: len(regions) for name, regions in watched.items()},
        f"1 open shard per replica, ASSUMED: DescribeStream failed ({found.reason}); "
        "give --shards N (a busy table has many)",
    )


def _probe_cost_rows(
    config: Config,
    rows: list[tuple[str, str, float]],
    cost: CostBreakdown,
    prices: Prices,
) -> float:
    """Append the conflict probes' rows to `gtmon cost`; returns what they add in USD.

    The tables the daemon would probe (monitor.service decides which): every table with
    conflicts and probes on, and the canary table when it is probed.
    """
    from monitor.cost import probe_cost, stream_reads_usd
    from monitor.service import probed_canary_table

    watched = [t for t in config.tables if t.conflicts.enabled]
    if not (config.streams.enabled and config.conflicts.probes and watched):
        return 0.0  # no stream readers, no probes (the canary table's neither)
    probed = [t for t in watched if t.conflicts.probes]
    canary = probed_canary_table(config)
    regions = [len(config.table_regions(t)) for t in probed]
    # The canary table holds a few items per instance: one open shard per replica.
    canary_readers = len(config.regions) if canary is not None else 0
    if canary is not None:
        regions.append(len(config.regions))
    probes = probe_cost(
        regions, config.conflicts.probe_interval_seconds, canary_readers,
        config.streams.poll_interval_max_seconds, prices,
    )
    # The free tier of stream reads is shared: the canary readers pay what they add.
    streams_usd = (
        stream_reads_usd(cost.stream_requests_per_month + probes.canary_stream_requests_per_month,
                         prices)
        - cost.streams_usd
    )
    every = config.conflicts.probe_interval_seconds
    rows.append((
        f"probe writes ({len(regions)} tbl)",
        f"{probes.write_units_per_month / 1e6:.3f} M write units",
        probes.writes_usd + probes.transfer_usd,
    ))
    if canary is not None:
        rows.append((
            "probe stream reads",
            f"{probes.canary_stream_requests_per_month / 1e6:.2f} M requests",
            streams_usd,
        ))
    print(f"  conflict probes every {every:g} s on {len(regions)} table(s)"
          + (f", the canary table's stream read by {canary_readers} reader(s)" if canary else ""))
    return probes.writes_usd + probes.transfer_usd + streams_usd


def _cmd_cost(args: argparse.Namespace) -> int:
    from monitor.canary.runner import canary_targets
    from monitor.cost import (
        Prices,
        burst_fraction,
        burst_requests,
        canary_cost,
        mean_poll_seconds,
        stream_reads_usd,
        stream_requests,
    )

    config = load_config(args.config)
    if args.bursts_per_day < 0:
        raise UserError("--bursts-per-day must not be negative")
    if args.timeout <= 0:
        raise UserError(f"--timeout must be positive, not {args.timeout:g}")
    measured, measured_source = _cost_reads(args)
    prices = Prices(
        write_unit_per_million=args.price_write_million,
        read_unit_per_million=args.price_read_million,
        stream_reads_per_100k=args.price_stream_100k,
        transfer_per_gb=args.price_transfer_gb,
    )
    streams = config.streams
    regions = len(config.regions)
    watched = (
        {t.name: config.table_regions(t) for t in config.tables if t.conflicts.enabled}
        if streams.enabled
        else {}
    )
    table_readers, shard_source = _cost_shards(args, config, watched)
    readers = sum(table_readers.values())
    floor, ceiling = streams.poll_interval_min_seconds, streams.poll_interval_max_seconds
    busy = burst_fraction(streams.burst_seconds, args.bursts_per_day)
    poll = mean_poll_seconds(floor, ceiling, busy)
    targets = len(canary_targets(config)) if config.canary.enabled else 0
    budget = float(config.canary.max_reads_per_canary)

    def priced(reads_per_canary: float) -> CostBreakdown:
        return canary_cost(
            regions, targets, config.canary.interval_seconds, reads_per_canary, readers, poll, prices
        )

    cost = priced(budget)
    measured_cost = priced(measured) if measured is not None else None
    print(f"gtmon monthly AWS cost estimate for {args.config}")
    print(
        f"  {regions} regions, {targets} canary table(s), canary every {config.canary.interval_seconds:g} s"
    )
    print(
        f"  reads per canary and pair: {budget:g} at most (canary.max_reads_per_canary, the read "
        "planner's budget)"
    )
    shown = "-" if measured is None else f"{measured:.1f}"
    print(f"    measured: {shown} ({measured_source})")
    print(f"  {readers} stream shard reader(s), {len(watched)} table(s): {shard_source}")
    print(f"  {args.bursts_per_day:g} write burst(s) per table and day (--bursts-per-day)")
    rows = [
        ("canary writes", f"{cost.write_units_per_month / 1e6:.2f} M write units", cost.writes_usd),
        (
            f"canary reads, {budget:g}/canary",
            f"{cost.reads_per_month / 1e6:.2f} M read units",
            cost.reads_usd,
        ),
    ]
    if measured_cost is not None:
        rows.append(
            (
                f"  measured, {measured:.1f}/canary",
                f"{measured_cost.reads_per_month / 1e6:.2f} M read units",
                measured_cost.reads_usd,
            )
        )
    rows += [
        (
            "stream reads",
            f"{cost.stream_requests_per_month / 1e6:.2f} M requests",
            cost.streams_usd,
        ),
        ("replication transfer", f"{cost.transfer_gb_per_month:.3f} GB", cost.transfer_usd),
        ("storage", "canary items", cost.storage_usd),
    ]
    total = cost.total_usd + _probe_cost_rows(config, rows, cost, prices)
    for name, volume, usd in rows:
        print(f"  {name:<26}{volume:>26}   ${usd:8.2f}")
    print(f"  {'total, reads at budget':<26}{'':>26}   ${total:8.2f} per month")
    if measured_cost is not None:
        measured_total = measured_cost.total_usd + total - cost.total_usd
        print(f"  {'total, reads as measured':<26}{'':>26}   ${measured_total:8.2f} per month")
    if readers:
        idle = stream_requests(readers, ceiling)
        always = stream_requests(readers, floor)
        print("stream polling by traffic (the stream reads above lie between idle and busy):")
        print(
            f"  idle, every shard at the {ceiling:g} s ceiling: {idle / 1e6:.2f} M requests, "
            f"${stream_reads_usd(idle, prices):.2f} per month"
        )
        for name, count in table_readers.items():
            if streams.burst_seconds <= 0:
                print(f"  one write burst on {name}: none (streams.burst_seconds is 0)")
                continue
            per_burst = burst_requests(count, streams.burst_seconds, floor)
            print(
                f"  one write burst on {name}: at most {count} shard reader(s) x "
                f"{streams.burst_seconds:g} s / {floor:g} s = {per_burst:g} requests, "
                f"${per_burst / 1e5 * prices.stream_reads_per_100k:.6f} beyond the free tier"
            )
        print(
            f"  busy, every table written at least every {max(streams.burst_seconds, floor):g} s "
            f"(polls at the {floor:g} s floor all the time): {always / 1e6:.2f} M requests, "
            f"${stream_reads_usd(always, prices):.2f} per month"
        )
    print("prices assumed (us-east-1 on-demand, override with the --price-* options):")
    print(
        f"  ${prices.write_unit_per_million}/M write units (replicated writes the same), "
        f"${prices.read_unit_per_million}/M read units, ${prices.stream_reads_per_100k}/100k stream "
        f"reads after {prices.stream_reads_free_per_month / 1e6:g} M free, "
        f"${prices.transfer_per_gb}/GB cross-region transfer, ${prices.storage_per_gb_month}/GB-month"
    )
    return 0


def _cmd_emulator(args: argparse.Namespace) -> int:
    require_sandbox_extra("emulator")
    from monitor.emulator import DelaySpec, Emulator, EmulatorServer, EmulatorSettings
    from monitor.emulator.guard import loopback_name
    from monitor.emulator.process import start_heap_freezer

    latency = {}
    for entry in args.client_latency or []:
        region, _, ms = entry.partition("=")
        try:
            latency[region.strip()] = DelaySpec.of(float(ms), float(ms) * 0.1)
        except ValueError:
            raise UserError(
                f"--client-latency {entry!r}: use REGION=MILLISECONDS, e.g. eu-west-1=75"
            ) from None
        if region.strip() not in args.regions:
            raise UserError(f"--client-latency {entry!r}: {region} is not one of {args.regions}")
    settings = EmulatorSettings(
        regions=args.regions,
        default_delay=DelaySpec.of(args.delay_ms, args.jitter_ms),
        replica_activation_seconds=args.activation_seconds,
        client_latency=latency,
        strict_regions=args.strict_regions,
    )
    try:
        server = EmulatorServer(Emulator(settings), args.host, args.port)
    except OSError as exc:
        raise UserError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    others = "" if args.strict_regions else " (global tables), any other region standalone,"
    print(
        f"gtmon emulator serving DynamoDB and DynamoDB Streams for {', '.join(args.regions)}{others} "
        f"on {server.url} (control API under {server.url}/gtmon/). Ctrl-C stops it.",
        flush=True,
    )
    if not loopback_name(args.host):
        print(
            f"gtmon emulator: {args.host} is not a loopback address: anyone who reaches "
            f"{server.url} can read and write its tables, reset it (POST /moto-api/reset, "
            "/gtmon/reset) and inject faults; it has no authentication",
            file=sys.stderr,
            flush=True,
        )

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (docker stop, systemd, kill) stops it like Ctrl-C

    # Explicitly for SIGINT too: a shell that starts us in the background hands down SIGINT
    # ignored, and Ctrl-C / `kill -INT` should still stop the emulator.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    start_heap_freezer()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def fault_endpoint(flag: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """The emulator `gtmon fault` talks to, and where that came from: --endpoint, then
    GTMON_ENDPOINT (ignored when empty), then the default port."""
    if flag:
        return flag, "--endpoint"
    if environ.get(ENDPOINT_ENV, "").strip():
        return environ[ENDPOINT_ENV].strip(), ENDPOINT_ENV
    return DEFAULT_ENDPOINT, f"default; set {ENDPOINT_ENV} or --endpoint for another"


def _cmd_fault(args: argparse.Namespace) -> int:
    require_sandbox_extra("fault")
    from monitor.emulator.control import ControlClient, ControlError

    params = {
        k: getattr(args, k, None)
        for k in ("from", "to", "region", "mode", "fraction", "ms", "jitter_ms", "kind")
    }
    endpoint, source = fault_endpoint(args.endpoint, os.environ)
    # One line on stderr, so stdout stays the emulator's JSON answer.
    print(f"gtmon fault {args.action}: emulator {endpoint} ({source})", file=sys.stderr, flush=True)
    try:
        result = ControlClient(endpoint).fault(args.action, **params)
    except ControlError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtmon",
        description=(
            "Replication-lag and last-writer-wins conflict monitor for DynamoDB global tables. "
            "Start with `gtmon sandbox` to see it work locally with no AWS account."
        ),
    )
    parser.add_argument("--version", action="version", version=f"gtmon {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    sandbox = commands.add_parser(
        "sandbox",
        help="run the emulator, demo traffic and the monitor locally (start here)",
        description=(
            "Start a local three-region global-tables emulator (us-east-1, eu-west-1, "
            "ap-southeast-1) with realistic replication delays and client round trips, create the "
            "canary table and the Orders table, run demo traffic with occasional real conflicts, "
            "and run the monitor against it with a live view. While it runs, the AWS CLI "
            "(--endpoint-url http://127.0.0.1:8000) and `gtmon fault` work against it."
        ),
    )
    sandbox.add_argument(
        "--host", default="127.0.0.1", help="address for both servers (default %(default)s)"
    )
    sandbox.add_argument(
        "--port", type=int, default=8000, help="emulator port (default %(default)s)"
    )
    sandbox.add_argument(
        "--metrics-port", type=int, default=9108, help="/metrics port (default %(default)s)"
    )
    sandbox.add_argument("--no-traffic", action="store_true", help="no demo traffic on Orders")
    sandbox.add_argument("--no-ui", action="store_true", help="plain logs instead of the live view")
    sandbox.add_argument(
        "--no-latency",
        action="store_true",
        help="answer every region in ~1 ms instead of the round trips seen from us-east-1",
    )
    sandbox.add_argument(
        "--state-dir",
        metavar="DIR",
        help=(
            "where the sandbox keeps its log and stream checkpoints (default: a new temporary "
            "directory, printed when it stops); a checkpoint left there by an earlier run is "
            "deleted, since every sandbox starts a new emulator"
        ),
    )
    sandbox.set_defaults(func=_cmd_sandbox)

    run = commands.add_parser(
        "run",
        help="run the monitor daemon",
        description=(
            "Write canaries into every region, measure propagation to every other region, read "
            "the replicas' streams for last-writer-wins conflicts, and serve /metrics, "
            "/api/status and a status page. SIGTERM or Ctrl-C stops it cleanly."
        ),
    )
    run.add_argument("--config", required=True, help="YAML config file (see config/example.yaml)")
    run.add_argument(
        "--home-region",
        help="per-region mode: write canaries only here and read the others' from this replica",
    )
    run.add_argument("--endpoint", help="override aws.endpoint_url (e.g. the emulator)")
    run.set_defaults(func=_cmd_run)

    init = commands.add_parser(
        "init",
        help="create the canary table as a global table in every configured region",
        description="Create the dedicated canary table with replicas in every region (idempotent).",
    )
    init.add_argument(
        "--config", required=True, help="YAML config file (its canary.table, regions and aws settings)"
    )
    init.add_argument("--endpoint", help="override aws.endpoint_url (e.g. the emulator)")
    init.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for ACTIVE")
    init.set_defaults(func=_cmd_init)

    check = commands.add_parser(
        "check",
        help="one canary round; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
        description=(
            "Write one canary per region, wait for the others to see it, print the lag matrix and "
            "exit with a nagios-style code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). A canary not "
            "seen within --timeout is CRITICAL."
        ),
    )
    check.add_argument("--config", help="YAML config (uses its canary table)")
    check.add_argument("--endpoint", help="AWS endpoint override, e.g. the emulator")
    check.add_argument("--table", help="canary table (with --regions, instead of --config)")
    check.add_argument("--regions", type=_regions, help="comma-separated regions")
    check.add_argument("--instance", default="gtmon", help="instance id for the canary key")
    check.add_argument(
        "--warning",
        type=float,
        default=5.0,
        help="lag in seconds for WARNING (default %(default)s)",
    )
    check.add_argument(
        "--critical", type=float, default=30.0, help="lag for CRITICAL (default %(default)s)"
    )
    check.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait (default %(default)s)"
    )
    check.set_defaults(func=_cmd_check)

    cost = commands.add_parser(
        "cost",
        help="estimate the monthly AWS cost of a configuration",
        description=(
            "Monthly AWS cost of the configured canaries and stream readers, with the prices assumed."
        ),
    )
    cost.add_argument(
        "--config", required=True, help="YAML config file to price (canary, tables, streams settings)"
    )
    cost.add_argument(
        "--reads-per-canary",
        type=float,
        help=(
            "measured reads per canary and pair to price besides the read planner's budget "
            "(canary.max_reads_per_canary), e.g. reads_per_canary from a running gtmon's /api/status"
        ),
    )
    cost.add_argument(
        "--status-url",
        metavar="URL",
        help="a running gtmon (e.g. http://127.0.0.1:9108): its average reads per canary, measured",
    )
    cost.add_argument(
        "--bursts-per-day",
        type=float,
        default=0.0,
        help=(
            "write bursts per monitored table and day: writes closer together than "
            "streams.burst_seconds make one (default %(default)s: idle tables)"
        ),
    )
    cost.add_argument(
        "--shards",
        "--shards-per-replica",
        dest="shards",
        type=int,
        metavar="N",
        help=(
            "open stream shards per replica (grows with the table's partitions); default: count "
            "them with DescribeStream in every region, or assume 1 and say so if AWS cannot be reached"
        ),
    )
    cost.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        help="seconds to wait for the DescribeStream calls, and for --status-url (default %(default)s)",
    )
    for flag, default, what in (
        ("--price-write-million", 0.625, "USD per million write units"),
        ("--price-read-million", 0.125, "USD per million read units"),
        ("--price-stream-100k", 0.02, "USD per 100k stream reads"),
        ("--price-transfer-gb", 0.02, "USD per GB cross-region"),
    ):
        cost.add_argument(flag, type=float, default=default, help=f"{what} (default %(default)s)")
    cost.set_defaults(func=_cmd_cost)

    emulator = commands.add_parser(
        "emulator",
        help="serve a local multi-region DynamoDB global-tables emulator",
        description=(
            "Serve DynamoDB and DynamoDB Streams for several regions on one local endpoint, with "
            "global tables: replica updates, asynchronous replication, last-writer-wins, "
            "AWS-faithful streams and injectable faults. Point the AWS CLI at it with "
            "--endpoint-url."
        ),
    )
    emulator.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    emulator.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    emulator.add_argument(
        "--regions",
        type=_regions,
        default=["us-east-1", "eu-west-1", "ap-southeast-1"],
        help="comma-separated regions with global tables between them (default "
        "us-east-1,eu-west-1,ap-southeast-1); other regions are served standalone",
    )
    emulator.add_argument(
        "--strict-regions",
        action="store_true",
        help="refuse requests signed for a region not in --regions (UnrecognizedClientException)",
    )
    emulator.add_argument(
        "--delay-ms",
        type=float,
        default=100.0,
        help="replication delay per link (default %(default)s)",
    )
    emulator.add_argument(
        "--jitter-ms", type=float, default=0.0, help="uniform jitter added to the delay"
    )
    emulator.add_argument(
        "--activation-seconds",
        type=float,
        default=1.0,
        help="how long a new replica stays CREATING (default %(default)s)",
    )
    emulator.add_argument(
        "--client-latency",
        action="append",
        metavar="REGION=MS",
        help="client round trip to a region (10%% jitter), e.g. ap-southeast-1=220; repeatable",
    )
    emulator.set_defaults(func=_cmd_emulator)

    fault = commands.add_parser(
        "fault",
        help="inject faults into a running emulator or sandbox",
        description=(
            "Change link delays, pause links, take regions down, throttle them or make them answer "
            "garbage, at run time. "
            f"The emulator is --endpoint, else ${ENDPOINT_ENV}, else {DEFAULT_ENDPOINT}; the one "
            "used is printed on stderr."
        ),
    )
    fault_actions = fault.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = fault_actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--endpoint",
            help=f"emulator URL (default: ${ENDPOINT_ENV}, else {DEFAULT_ENDPOINT})",
        )
        sub.set_defaults(func=_cmd_fault)
        return sub

    def link_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--from", dest="from", metavar="REGION", help="source region (default: all)"
        )
        sub.add_argument("--to", metavar="REGION", help="target region (default: all)")

    delay = action("delay", "set the replication delay of links")
    link_args(delay)
    delay.add_argument("--ms", type=float, required=True, help="base delay in milliseconds")
    delay.add_argument("--jitter-ms", type=float, default=0.0, help="jitter in milliseconds")
    delay.add_argument(
        "--kind", choices=["fixed", "uniform", "lognormal"], help="jitter distribution"
    )
    link_args(action("pause", "stop replication on links (writes queue up, in order)"))
    link_args(action("resume", "resume paused links (queued writes are delivered in order)"))
    outage = action("outage", "make a region's endpoint fail")
    outage.add_argument("--region", required=True, help="the region whose endpoint fails")
    outage.add_argument(
        "--mode",
        choices=["error", "blackhole"],
        default="error",
        help="error: answer 500 InternalServerError; blackhole: never answer (default %(default)s)",
    )
    action("restore", "end a region's outage").add_argument(
        "--region", required=True, help="the region to bring back"
    )
    throttle = action("throttle", "throttle a fraction of a region's requests")
    throttle.add_argument("--region", required=True, help="the region to throttle")
    throttle.add_argument("--fraction", type=float, default=0.5, help="0..1 (default %(default)s)")
    garbage = action(
        "garbage",
        "answer a fraction of a region's requests with 200 and a body of the wrong shape "
        "(the request itself is applied); --fraction 0 ends it",
    )
    garbage.add_argument("--region", required=True, help="the region that answers garbage")
    garbage.add_argument("--fraction", type=float, default=0.5, help="0..1 (default %(default)s)")
    latency = action("latency", "set the client round-trip latency to a region")
    latency.add_argument("--region", required=True, help="the region the round trip goes to")
    latency.add_argument("--ms", type=float, required=True, help="round trip in milliseconds")
    latency.add_argument(
        "--jitter-ms", type=float, default=0.0, help="jitter in milliseconds (default %(default)s)"
    )
    action("clear", "remove every outage, throttle, garbage, pause and delay change")

    health = commands.add_parser(
        "health",
        help="check a running daemon's /healthz (exit 0 healthy, 1 not); for container probes",
        description=(
            "Ask a running gtmon whether it is up (/healthz, or /readyz with --ready), as Docker's "
            "HEALTHCHECK or a Kubernetes exec probe would. With --config the address, port and "
            "http or https come from the config and its web config; /healthz and /readyz need "
            "no credentials. Exit 0 when it answers 200, 1 otherwise, with one line saying why."
        ),
    )
    target = health.add_mutually_exclusive_group(required=True)
    target.add_argument("--config", help="the daemon's YAML config (metrics.host, port, web config)")
    target.add_argument("--url", help="base URL instead, e.g. http://127.0.0.1:9108")
    health.add_argument("--ready", action="store_true", help="check /readyz instead of /healthz")
    health.add_argument(
        "--timeout", type=float, default=4.0, help="seconds to wait (default %(default)s)"
    )
    health.add_argument("--cafile", help="verify the server certificate with this CA")
    health.add_argument(
        "--cert", help="client certificate, when the web config requires one (with --key)"
    )
    health.add_argument("--key", help="the client certificate's key")
    health.set_defaults(func=_cmd_health)

    at_risk = commands.add_parser(
        "at-risk",
        help="ask a running daemon which writes a region accepted that the others lack",
        description=(
            "Reads /api/at-risk from the daemon the config describes: per table, the writes "
            "REGION's stream showed as its own that another region's stream has not (as of the "
            "last successful read), and for each time REGION went down, how each listed write "
            "ended (delivered, superseded, missing). Basic auth from GTMON_WEB_USER and "
            "GTMON_WEB_PASSWORD."
        ),
    )
    at_risk.add_argument("--config", required=True, help="the daemon's YAML config")
    at_risk.add_argument("--region", required=True, help="the region that accepted the writes")
    at_risk.add_argument("--table", help="one table (default: every watched table)")
    at_risk.add_argument("--json", action="store_true", help="print the JSON answer as is")
    at_risk.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait (default %(default)s)"
    )
    at_risk.add_argument("--cafile", help="verify the server certificate with this CA")
    at_risk.set_defaults(func=_cmd_at_risk)

    config = commands.add_parser("config", help="work with configuration files")
    config_actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    validate = config_actions.add_parser(
        "validate",
        help="check a config file and report every problem",
        description="Check a config file; problems name the file, the field and what is allowed.",
    )
    validate.add_argument("--config", metavar="FILE", help="the YAML config file to check")
    validate.add_argument(
        "file", nargs="?", metavar="FILE", help="the same, as a positional argument (older form)"
    )
    validate.set_defaults(func=_cmd_config_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except (ConfigError, UserError) as exc:
        print(f"gtmon: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
