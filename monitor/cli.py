"""The `gtmon` command line.

Subcommands mirror the README: `sandbox` (try everything locally), `run`
(the daemon), `init`, `check` (one-shot, nagios exit codes), `cost`,
`emulator`, `fault` and `config validate`. User errors print one clear
message and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence

from monitor import __version__
from monitor.config import Config, ConfigError, load_config
from monitor.logs import configure_logging

__all__ = ["main"]

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"


class UserError(Exception):
    """A mistake the user can fix; printed without a traceback."""


def _regions(value: str) -> list[str]:
    regions = [r.strip() for r in value.split(",") if r.strip()]
    if not regions:
        raise argparse.ArgumentTypeError("give at least one region, comma separated")
    return regions


def _cmd_config_validate(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    print(f"{args.file}: OK ({len(config.regions)} regions, {len(config.tables)} tables)")
    return 0


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    updates: dict[str, object] = {}
    if getattr(args, "home_region", None):
        if args.home_region not in config.regions:
            raise UserError(f"--home-region {args.home_region} is not one of {config.regions} in {args.config}")
        updates["home_region"] = args.home_region
    if getattr(args, "endpoint", None):
        updates["aws"] = config.aws.model_copy(update={"endpoint_url": args.endpoint})
    return config.model_copy(update=updates) if updates else config


def _cmd_run(args: argparse.Namespace) -> int:
    from monitor.service import Service

    config = _load(args)
    configure_logging(config.log.format, config.log.level)
    try:
        service = Service(config)
        asyncio.run(service.run_until_stopped())
    except OSError as exc:
        raise UserError(
            f"cannot serve metrics on {config.metrics.host}:{config.metrics.port}: {exc.strerror or exc}"
        ) from None
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    from monitor.aws import AwsCallError, AwsClients
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
    except AwsCallError as exc:
        raise UserError(f"init failed: {exc}") from None
    except TimeoutError as exc:
        raise UserError(f"init failed: {exc}") from None
    print("\n".join(actions) or f"{config.canary.table} already exists in {', '.join(config.regions)}")
    return 0


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from monitor.sandbox import SandboxOptions, run_sandbox

    options = SandboxOptions(
        host=args.host, port=args.port, metrics_port=args.metrics_port, traffic=not args.no_traffic,
        ui=not args.no_ui and sys.stdout.isatty(), realistic_latency=not args.no_latency,
    )
    try:
        return asyncio.run(run_sandbox(options))
    except OSError as exc:
        raise UserError(
            f"cannot start the sandbox: {exc.strerror or exc} (is another sandbox or emulator running? "
            "choose other ports with --port and --metrics-port)"
        ) from None


def _cmd_emulator(args: argparse.Namespace) -> int:
    from monitor.emulator import DelaySpec, Emulator, EmulatorServer, EmulatorSettings

    settings = EmulatorSettings(
        regions=args.regions,
        default_delay=DelaySpec.of(args.delay_ms, args.jitter_ms),
        replica_activation_seconds=args.activation_seconds,
    )
    try:
        server = EmulatorServer(Emulator(settings), args.host, args.port)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    print(
        f"gtmon emulator serving DynamoDB and DynamoDB Streams for {', '.join(args.regions)} "
        f"on {server.url} (control API under {server.url}/gtmon/). Ctrl-C stops it.",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_fault(args: argparse.Namespace) -> int:
    from monitor.emulator.control import ControlClient, ControlError

    params = {
        k: getattr(args, k, None)
        for k in ("from", "to", "region", "mode", "fraction", "ms", "jitter_ms", "kind")
    }
    try:
        result = ControlClient(args.endpoint).fault(args.action, **params)
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
        "sandbox", help="run the emulator, demo traffic and the monitor locally (start here)",
        description=(
            "Start a local three-region global-tables emulator (us-east-1, eu-west-1, "
            "ap-southeast-1) with realistic replication delays and client round trips, create the "
            "canary table and the Orders table, run demo traffic with occasional real conflicts, "
            "and run the monitor against it with a live view. While it runs, the AWS CLI "
            "(--endpoint-url http://127.0.0.1:8000) and `gtmon fault` work against it."
        ),
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address for both servers (default %(default)s)")
    sandbox.add_argument("--port", type=int, default=8000, help="emulator port (default %(default)s)")
    sandbox.add_argument("--metrics-port", type=int, default=9108, help="/metrics port (default %(default)s)")
    sandbox.add_argument("--no-traffic", action="store_true", help="no demo traffic on Orders")
    sandbox.add_argument("--no-ui", action="store_true", help="plain logs instead of the live view")
    sandbox.add_argument(
        "--no-latency", action="store_true",
        help="answer every region in ~1 ms instead of the round trips seen from us-east-1",
    )
    sandbox.set_defaults(func=_cmd_sandbox)

    run = commands.add_parser(
        "run", help="run the monitor daemon",
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
        "init", help="create the canary table as a global table in every configured region",
        description="Create the dedicated canary table with replicas in every region (idempotent).",
    )
    init.add_argument("--config", required=True)
    init.add_argument("--endpoint", help="override aws.endpoint_url (e.g. the emulator)")
    init.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for ACTIVE")
    init.set_defaults(func=_cmd_init)

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
    emulator.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    emulator.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    emulator.add_argument(
        "--regions", type=_regions, default=["us-east-1", "eu-west-1", "ap-southeast-1"],
        help="comma-separated regions to serve (default us-east-1,eu-west-1,ap-southeast-1)",
    )
    emulator.add_argument("--delay-ms", type=float, default=100.0, help="replication delay per link (default %(default)s)")
    emulator.add_argument("--jitter-ms", type=float, default=0.0, help="uniform jitter added to the delay")
    emulator.add_argument(
        "--activation-seconds", type=float, default=1.0,
        help="how long a new replica stays CREATING (default %(default)s)",
    )
    emulator.set_defaults(func=_cmd_emulator)

    fault = commands.add_parser(
        "fault", help="inject faults into a running emulator or sandbox",
        description="Change link delays, pause links, take regions down or throttle them, at run time.",
    )
    fault_actions = fault.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = fault_actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="emulator URL (default %(default)s)")
        sub.set_defaults(func=_cmd_fault)
        return sub

    def link_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--from", dest="from", metavar="REGION", help="source region (default: all)")
        sub.add_argument("--to", metavar="REGION", help="target region (default: all)")

    delay = action("delay", "set the replication delay of links")
    link_args(delay)
    delay.add_argument("--ms", type=float, required=True, help="base delay in milliseconds")
    delay.add_argument("--jitter-ms", type=float, default=0.0, help="jitter in milliseconds")
    delay.add_argument("--kind", choices=["fixed", "uniform", "lognormal"], help="jitter distribution")
    link_args(action("pause", "stop replication on links (writes queue up, in order)"))
    link_args(action("resume", "resume paused links (queued writes are delivered in order)"))
    outage = action("outage", "make a region's endpoint fail")
    outage.add_argument("--region", required=True)
    outage.add_argument(
        "--mode", choices=["error", "blackhole"], default="error",
        help="error: answer 500 InternalServerError; blackhole: never answer (default %(default)s)",
    )
    action("restore", "end a region's outage").add_argument("--region", required=True)
    throttle = action("throttle", "throttle a fraction of a region's requests")
    throttle.add_argument("--region", required=True)
    throttle.add_argument("--fraction", type=float, default=0.5, help="0..1 (default %(default)s)")
    latency = action("latency", "set the client round-trip latency to a region")
    latency.add_argument("--region", required=True)
    latency.add_argument("--ms", type=float, required=True, help="round trip in milliseconds")
    latency.add_argument("--jitter-ms", type=float, default=0.0)
    action("clear", "remove every outage, throttle, pause and delay change")

    config = commands.add_parser("config", help="work with configuration files")
    config_actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    validate = config_actions.add_parser(
        "validate", help="check a config file and report every problem",
        description="Check a config file; problems name the file, the field and what is allowed.",
    )
    validate.add_argument("file")
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
