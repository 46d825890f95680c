"""The emulator: one local endpoint that behaves like DynamoDB global tables.

It is a WSGI application in front of moto. moto parses and answers the DynamoDB
API per region (the region comes from the request signature); this layer adds
what moto lacks: replica management, asynchronous replication with LWW,
AWS-faithful streams, client-facing faults, a control API under ``/gtmon/``
and the ground truth. It also answers moto's management API (``/moto-api/``) where
a moto server's users rely on it: ``POST /moto-api/reset`` resets the whole
emulator, as ``/gtmon/reset`` does. One re-entrant lock serialises everything that touches
moto's tables, so a replicated write never interleaves with a client's.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from monitor.emulator import moto_hooks
from monitor.emulator.delays import DelaySpec
from monitor.emulator.errors import AwsError
from monitor.emulator.faults import RegionFaults, garble
from monitor.emulator.globaltables import GLOBAL_TABLE_VERSION, GlobalTables
from monitor.emulator.guard import (
    MAX_AWS_BODY,
    MAX_CONTROL_BODY,
    MAX_JSON_DEPTH,
    RequestRefused,
    content_length,
    is_json,
    json_depth,
    local_host,
    local_origin,
    number,
)
from monitor.emulator.streams import StreamSettings, StreamStore
from monitor.emulator.truth import GroundTruth

__all__ = ["DEFAULT_REGIONS", "Emulator", "EmulatorSettings"]

DEFAULT_REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
_CREDENTIAL_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/")
# Fault values: a link delay of an hour already means "stalled"; a client round trip of a
# minute is past every SDK's timeout. Beyond these, time.sleep and the delivery
# schedule overflow (1e300 ms made every request to the region answer 500).
MAX_LINK_DELAY_MS = 3_600_000.0
MAX_CLIENT_LATENCY_MS = 60_000.0
# Control endpoints: method and path (a handler per POST path lives in Emulator._control).
_CONTROL_GET = ("health", "state", "truth")
# moto's management API: `reset` is the emulator's own reset; these paths go to moto's handler
# (its dashboard, model data and id seed concern only moto's state); any other is a 404.
_MOTO_API_FORWARDED = ("", "data.json", "lib.js", "seed")
_log = logging.getLogger("gtmon.emulator")

StartResponse = Callable[..., Any]


@dataclass
class EmulatorSettings:
    regions: list[str] = field(default_factory=lambda: list(DEFAULT_REGIONS))
    default_delay: DelaySpec = field(default_factory=lambda: DelaySpec(ms=100.0))
    link_delays: dict[tuple[str, str], DelaySpec] = field(default_factory=dict)
    client_latency: dict[str, DelaySpec] = field(default_factory=dict)
    replica_activation_seconds: float = 1.0
    streams: StreamSettings = field(default_factory=StreamSettings)
    blackhole_max_seconds: float = 300.0
    truth_max_writes: int = 200_000
    seed: int | None = None
    # Regions outside `regions` are served as standalone regions (no replicas, no links)
    # unless this is set; then they are refused, as before.
    strict_regions: bool = False


def _json_response(
    start_response: StartResponse,
    status: int,
    payload: Any,
    headers: tuple[tuple[str, str], ...] = (),
) -> list[bytes]:
    body = json.dumps(payload, default=str).encode()
    start_response(
        f"{status} {'OK' if status == 200 else 'Error'}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers],
    )
    return [body]


def _aws_response(
    start_response: StartResponse, status: int, body: bytes, close: bool = False
) -> list[bytes]:
    start_response(
        f"{status} {'OK' if status == 200 else 'Error'}",
        [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", f"gtmon-{time.monotonic_ns()}"),
            ("x-amz-crc32", str(zlib.crc32(body) & 0xFFFFFFFF)),
            # A body left unread (a refused Content-Length) must not be read as the next request.
            *((("Connection", "close"),) if close else ()),
        ],
    )
    return [body]


class Emulator:
    """Global tables for every configured region, served as one WSGI app."""

    def __init__(
        self, settings: EmulatorSettings | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings or EmulatorSettings()
        self.clock = clock
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self.streams = StreamStore(clock, self.settings.streams)
        self.truth = GroundTruth(self.settings.truth_max_writes)
        self.faults = RegionFaults(self.settings.seed)
        self.tables = GlobalTables(
            self.settings.regions,
            clock,
            self.streams,
            self.truth,
            self.settings.default_delay,
            self.settings.replica_activation_seconds,
            self.settings.seed,
        )
        for (source, target), spec in self.settings.link_delays.items():
            self.tables.set_delay(source, target, spec)
        for region, spec in self.settings.client_latency.items():
            self.faults.set_latency(region, spec)
        moto_hooks.install(self._capture, self._stream_opened)
        moto_hooks.reset_moto()
        self._moto = moto_hooks.create_backend_app()
        self._moto_api = moto_hooks.create_backend_app("moto_api")
        self._running = False
        self._thread: threading.Thread | None = None
        self._control: dict[str, Callable[[dict[str, Any]], Any]] = {
            "fault/delay": self._fault_delay,
            "fault/pause": lambda b: self._fault_pause(b, True),
            "fault/resume": lambda b: self._fault_pause(b, False),
            "fault/outage": self._fault_outage,
            "fault/restore": self._fault_restore,
            "fault/throttle": self._fault_throttle,
            "fault/garbage": self._fault_garbage,
            "fault/latency": self._fault_latency,
            "fault/clear": self._fault_clear,
            "reset": lambda b: self.reset(),
        }

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start delivering replicated writes."""
        with self.lock:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._deliver_loop, name="gtmon-replication", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._running = False
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def reset(self) -> dict[str, Any]:
        """Forget every table, write and fault (link delays return to the settings)."""
        with self.lock:
            moto_hooks.reset_moto()
            self.tables.reset()
            self.streams.reset()
            self.truth.clear()
            self.faults.clear()
            self._restore_latency()
            for (source, target), link in self.tables.links():
                link.delay = self.settings.link_delays.get((source, target), self.settings.default_delay)
            return {"reset": True}

    def _deliver_loop(self) -> None:
        with self._wake:
            while self._running:
                try:
                    self.tables.deliver_due()
                except Exception:  # keep replicating whatever one bad write did
                    _log.exception("replication delivery failed")
                due = self.tables.next_due()
                timeout = 0.5 if due is None else min(0.5, max(0.0, due - self.clock()))
                self._wake.wait(timeout)

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is in flight on unpaused links (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.tables.next_due() is None:
                    return True
            time.sleep(0.01)
        return False

    # ---- moto hooks -----------------------------------------------------------------------

    def _capture(
        self, region: str, table: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        self.tables.capture(region, table, old, new)

    def _stream_opened(
        self,
        region: str,
        table: str,
        arn: str,
        label: str,
        key_schema: list[dict[str, str]],
        view_type: str,
    ) -> None:
        self.streams.open_stream(region, table, arn, label, key_schema, view_type)

    # ---- WSGI -----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        origin = environ.get("HTTP_ORIGIN")
        if path.startswith("/gtmon/"):
            return self._control_api(path[len("/gtmon/") :], environ, start_response)
        if path == "/moto-api" or path.startswith("/moto-api/"):
            return self._moto_api_call(path[len("/moto-api/") :], environ, start_response)
        try:
            if origin is not None and not local_origin(origin):
                # A web page in the user's browser; the SDKs never send an Origin.
                raise AwsError("AccessDeniedException", f"requests from origin {origin[:100]!r} are refused")
            try:
                length = content_length(environ, MAX_AWS_BODY)
            except RequestRefused as refused:
                raise AwsError("SerializationException", refused.message, refused.status) from None
            body = environ["wsgi.input"].read(length) if length else b""
            if json_depth(body) > MAX_JSON_DEPTH:
                raise AwsError("ValidationException", "Nesting Levels have exceeded supported limits")
        except AwsError as error:
            return _aws_response(start_response, error.status, error.body(), close=True)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        match = _CREDENTIAL_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = match.group(1) if match else None
        try:
            if region is None:
                raise AwsError("MissingAuthenticationTokenException", "Request is missing a SigV4 signature")
            if self.settings.strict_regions and region not in self.settings.regions:
                raise AwsError(
                    "UnrecognizedClientException",
                    f"Region {region} is not served by this emulator (serving "
                    f"{', '.join(self.settings.regions)}: --regions; --strict-regions refuses others)",
                )
            with self.lock:
                latency = self.faults.latency_seconds(region)
            time.sleep(latency / 2)
            self._apply_faults(region)
            status, payload = self._dispatch(region, target, body, environ)
            if status == 200:
                with self.lock:
                    shape = self.faults.garbage_shape(region)
                if shape is not None:
                    payload = garble(payload, shape)  # applied, but the answer is lost
            time.sleep(latency / 2)
        except AwsError as error:
            status, payload = error.status, error.body()
        except RecursionError:  # the depth check above should have stopped it; never a 500
            nested = AwsError("ValidationException", "Nesting Levels have exceeded supported limits")
            status, payload = nested.status, nested.body()
        return _aws_response(start_response, status, payload)

    def _apply_faults(self, region: str) -> None:
        with self.lock:
            mode = self.faults.outage(region)
            throttled = mode is None and self.faults.should_throttle(region)
        if mode == "blackhole":
            deadline = time.monotonic() + self.settings.blackhole_max_seconds
            while time.monotonic() < deadline:
                time.sleep(0.05)
                with self.lock:
                    if self.faults.outage(region) != "blackhole":
                        break
            # A black hole loses the request: it is never applied, not even late when the
            # region is restored (its client has long timed out and may have retried).
            raise AwsError("InternalServerError", "black hole: the request was lost", status=504)
        if mode == "error":
            raise AwsError("InternalServerError", f"Region {region} is unavailable (injected outage)", 500)
        if throttled:
            raise AwsError(
                "ThrottlingException", "Rate of requests exceeds the allowed throughput (injected)"
            )

    def _dispatch(self, region: str, target: str, body: bytes, environ: dict[str, Any]) -> tuple[int, bytes]:
        service, _, operation = target.partition(".")
        if service == "DynamoDBStreams_20120810":
            request = self._parse(body)
            with self.lock:
                return 200, json.dumps(self.streams.dispatch(operation, region, request)).encode()
        if service != "DynamoDB_20120810":
            raise AwsError("UnknownOperationException", f"Unknown operation {target!r}")
        if operation == "UpdateTable":
            request = self._parse(body)
            if "ReplicaUpdates" in request:
                return self._update_replicas(region, request, environ)
        with self.lock:
            self.tables.begin_request()
            status, payload = self._call_moto(environ, body)
            if status == 200:
                self.tables.commit_request()
                self._wake.notify_all()
            else:
                self.tables.abort_request()
            if status == 200 and operation in ("DescribeTable", "CreateTable", "UpdateTable", "DeleteTable"):
                payload = self._decorate(region, operation, payload)
        return status, payload

    @staticmethod
    def _parse(body: bytes) -> dict[str, Any]:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            raise AwsError("SerializationException", "Request body is not valid JSON") from None
        if not isinstance(request, dict):
            raise AwsError("SerializationException", "Request body must be a JSON object")
        return request

    def _call_moto(self, environ: dict[str, Any], body: bytes) -> tuple[int, bytes]:
        forwarded = dict(environ)
        forwarded["wsgi.input"] = io.BytesIO(body)
        forwarded["CONTENT_LENGTH"] = str(len(body))
        status: list[int] = []

        def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            status.append(int(line.split(" ", 1)[0]))

        result = self._moto(forwarded, start_response)
        try:
            payload = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return status[0], payload

    def _update_replicas(
        self, region: str, request: dict[str, Any], environ: dict[str, Any]
    ) -> tuple[int, bytes]:
        name = request.get("TableName")
        if not isinstance(name, str):
            raise AwsError("ValidationException", "TableName is required")
        with self.lock:
            self.tables.update_replicas(region, name, request.pop("ReplicaUpdates"))
            if set(request) - {"TableName"}:
                # Other changes in the same call go to moto as usual.
                status, payload = self._call_moto(environ, json.dumps(request).encode())
                if status != 200:
                    return status, payload
            table = moto_hooks.find_table(region, name)
            assert table is not None
            payload = json.dumps(table.describe(base_key="TableDescription"), default=str).encode()
            return 200, self._decorate(region, "UpdateTable", payload)

    def _decorate(self, region: str, operation: str, payload: bytes) -> bytes:
        """Add what moto leaves out of table descriptions: the replicas."""
        data = json.loads(payload)
        section = data.get("Table") or data.get("TableDescription")
        if not isinstance(section, dict):
            return payload
        name = section.get("TableName")
        if not isinstance(name, str):
            return payload
        if operation == "DeleteTable":
            self.tables.forget_replica(name, region)
            self.streams.close_table(region, name)
            return payload
        spec = section.get("StreamSpecification") or {}
        if operation == "UpdateTable" and not spec.get("StreamEnabled"):
            # Switched off in this replica (AWS refuses that on a global table; an operator's
            # mistake on a replica is what conflict probes catch): no more records.
            self.streams.close_table(region, name)
        if region in self.tables.replicas(name):
            section["Replicas"] = self.tables.describe_replicas(name, region)
            section["GlobalTableVersion"] = GLOBAL_TABLE_VERSION
        return json.dumps(data).encode()

    # ---- control API ----------------------------------------------------------------------

    @staticmethod
    def _foreign(environ: Mapping[str, Any]) -> str | None:
        """Why a control request looks like a web page's (see monitor.emulator.guard), or None."""
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and not local_origin(origin):
            return f"requests from origin {origin[:100]!r} are refused"
        if not local_host(environ.get("HTTP_HOST")):
            return "the control API answers to an IP address or localhost, not a DNS name"
        return None

    def _moto_api_call(
        self, path: str, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """moto's management API, for tools written for a moto server: `POST reset` resets the
        emulator (tables, replication queues, faults, ground truth) and needs no signature,
        as in moto; the read-only paths and the id seed are moto's own; the rest is a 404.
        The same origin and host checks as the control API keep web pages out."""
        foreign = self._foreign(environ)
        if foreign is not None:
            return _json_response(start_response, 403, {"error": foreign})
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "reset":
            if method != "POST":  # moto's own answer
                return _json_response(start_response, 400, {"Error": "Need to POST to reset Moto"})
            try:
                length = content_length(environ, MAX_CONTROL_BODY)
                if length and not is_json(environ.get("CONTENT_TYPE")):
                    # moto's clients send no body; a form or text/plain one is a web page's.
                    raise RequestRefused(415, "the control API takes application/json bodies only")
            except RequestRefused as refused:
                return _json_response(
                    start_response, refused.status, {"error": refused.message}, (("Connection", "close"),)
                )
            environ["wsgi.input"].read(length)  # moto ignores the body; so does the emulator
            with self._wake:
                self.reset()
                self._wake.notify_all()
            return _json_response(start_response, 200, {"status": "ok"})
        if path in _MOTO_API_FORWARDED:
            with self.lock:
                return list(self._moto_api(environ, start_response))
        return _json_response(
            start_response,
            404,
            {
                "error": f"/moto-api/{path} is not served by the gtmon emulator: it serves POST "
                "/moto-api/reset (resets the whole emulator), /moto-api/seed, /moto-api/data.json "
                "and the dashboard /moto-api/; faults and ground truth are under /gtmon/"
            },
        )

    def _control_api(self, path: str, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """The control API: GET health, state, truth; POST fault/* and reset, JSON only, from
        this machine only (see monitor.emulator.guard)."""
        method = environ.get("REQUEST_METHOD", "GET")
        foreign = self._foreign(environ)
        if foreign is not None:
            return _json_response(start_response, 403, {"error": foreign})
        allowed = "GET" if path in _CONTROL_GET else "POST" if path in self._control else None
        if allowed is None:
            return _json_response(start_response, 404, {"error": f"no control endpoint /gtmon/{path}"})
        if method != allowed:
            return _json_response(
                start_response,
                405,
                {"error": f"/gtmon/{path} takes {allowed}, not {method}"},
                (("Allow", allowed), ("Connection", "close")),
            )
        try:
            if path == "health":
                return _json_response(start_response, 200, {"ok": True})
            if path == "state":
                return _json_response(start_response, 200, self.state())
            if path == "truth":
                query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
                return _json_response(start_response, 200, self.truth_json(query.get("table")))
            request = self._control_body(environ)
        except RequestRefused as refused:
            return _json_response(
                start_response, refused.status, {"error": refused.message}, (("Connection", "close"),)
            )
        try:
            with self._wake:
                result = self._control[path](request)
                self._wake.notify_all()
            return _json_response(start_response, 200, result if result is not None else {"ok": True})
        except (ValueError, KeyError, TypeError) as exc:
            message = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            return _json_response(start_response, 400, {"error": message})

    @staticmethod
    def _control_body(environ: dict[str, Any]) -> dict[str, Any]:
        length = content_length(environ, MAX_CONTROL_BODY)
        if length and not is_json(environ.get("CONTENT_TYPE")):
            raise RequestRefused(415, "the control API takes application/json bodies only")
        raw = environ["wsgi.input"].read(length) if length else b"{}"
        if json_depth(raw, 8) > 8:
            raise RequestRefused(400, "the body nests deeper than a control request can")
        try:
            request = json.loads(raw or b"{}")
        except ValueError as exc:
            raise RequestRefused(400, f"the body is not JSON: {exc}") from None
        if not isinstance(request, dict):
            raise RequestRefused(400, "the body must be a JSON object")
        return request

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "regions": self.settings.regions,
                "global_tables": self.tables.to_json(),
                "faults": self.faults.to_json(),
                "streams": self.streams.stats(),
                "in_flight": self.tables.pending(),
                "writes_recorded": len(self.truth.writes()),
            }

    def truth_json(self, table: str | None = None) -> dict[str, Any]:
        with self.lock:
            return {
                "writes": [w.to_json() for w in self.truth.writes(table)],
                "lost": [
                    {"write_id": lost.write_id, "lost_to": winner.write_id}
                    for lost, winner in self.truth.lost_writes(table)
                ],
            }

    def _region(self, value: Any) -> str:
        if value not in self.settings.regions:
            raise ValueError(f"unknown region {value!r}; regions: {', '.join(self.settings.regions)}")
        return str(value)

    def _pairs(self, body: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Links selected by from/to; either may be omitted to mean every region."""
        sources = [self._region(body["from"])] if body.get("from") else self.settings.regions
        targets = [self._region(body["to"])] if body.get("to") else self.settings.regions
        return [(a, b) for a in sources for b in targets if a != b]

    @staticmethod
    def _delay_spec(body: Mapping[str, Any], maximum: float) -> DelaySpec:
        ms = number(body, "ms", None, 0.0, maximum)
        jitter = number(body, "jitter_ms", 0.0, 0.0, maximum)
        kind = body.get("kind")
        if kind is not None and kind not in ("fixed", "uniform", "lognormal"):
            raise ValueError(f"kind must be fixed, uniform or lognormal, not {kind!r}")
        return DelaySpec.of(ms, jitter, kind)

    def _fault_delay(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = self._delay_spec(body, MAX_LINK_DELAY_MS)
        pairs = self._pairs(body)
        for source, target in pairs:
            self.tables.set_delay(source, target, spec)
        return {"links": [f"{a}->{b}" for a, b in pairs], "delay": spec.to_json()}

    def _fault_pause(self, body: dict[str, Any], paused: bool) -> dict[str, Any]:
        pairs = self._pairs(body)
        for source, target in pairs:
            self.tables.set_paused(source, target, paused)
        return {"links": [f"{a}->{b}" for a, b in pairs], "paused": paused}

    def _fault_outage(self, body: dict[str, Any]) -> dict[str, Any]:
        region = self._region(body.get("region"))
        mode = body.get("mode", "error")
        self.faults.set_outage(region, mode)
        return {"region": region, "outage": mode}

    def _fault_restore(self, body: dict[str, Any]) -> dict[str, Any]:
        region = self._region(body.get("region"))
        self.faults.restore(region)
        return {"region": region, "outage": None}

    def _fault_throttle(self, body: dict[str, Any]) -> dict[str, Any]:
        region = self._region(body.get("region"))
        fraction = number(body, "fraction", 1.0, 0.0, 1.0, what="throttle fraction")
        self.faults.set_throttle(region, fraction)
        return {"region": region, "throttle_fraction": fraction}

    def _fault_garbage(self, body: dict[str, Any]) -> dict[str, Any]:
        region = self._region(body.get("region"))
        fraction = float(body.get("fraction", 1.0))
        self.faults.set_garbage(region, fraction)
        return {"region": region, "garbage_fraction": fraction}

    def _fault_latency(self, body: dict[str, Any]) -> dict[str, Any]:
        region = self._region(body.get("region"))
        spec = self._delay_spec(body, MAX_CLIENT_LATENCY_MS)
        self.faults.set_latency(region, spec if spec.ms or spec.jitter_ms else None)
        return {"region": region, "latency": spec.to_json()}

    def _restore_latency(self) -> None:
        """Client round trips back to the settings (the sandbox's distances, or none)."""
        for region in self.settings.regions:
            self.faults.set_latency(region, self.settings.client_latency.get(region))

    def _fault_clear(self, body: dict[str, Any]) -> dict[str, Any]:
        self.faults.clear()
        self._restore_latency()
        for source, target in self._pairs({}):
            self.tables.set_paused(source, target, False)
            self.tables.set_delay(
                source, target, self.settings.link_delays.get((source, target), self.settings.default_delay)
            )
        return {"cleared": True}
