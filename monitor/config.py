"""The one validated configuration model for gtmon.

Every setting the daemon reads lives here, so that `gtmon config validate` can
check a file completely before any AWS call is made (configure before start),
and so that an operator's typo is reported with the file, the field path and
what is allowed instead of surfacing later as a traceback.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
import socket
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "AwsSettings",
    "CanarySettings",
    "Config",
    "ConfigError",
    "ConflictSettings",
    "LogSettings",
    "MetricsSettings",
    "ProbeSettings",
    "StreamSettings",
    "TableConfig",
    "load_config",
    "parse_config",
    "read_yaml",
    "validation_problems",
]

_REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
# DynamoDB's naming rules: table names 3-255 characters of a-z, A-Z, 0-9, '_', '-', '.';
# attribute names 1-255 bytes (key attributes; the limit gtmon keeps for all it names).
_TABLE_RE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_HOST_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# A number DynamoDB stores keeps at most 38 significant digits; canary TTLs are epoch
# seconds, and a heartbeat older than a year is of no use to anyone.
MAX_TTL_SECONDS = 366 * 86400
# Durations: nothing in gtmon waits longer than a day.
DAY = 86400
# A configuration file is small; /dev/zero or a log file by mistake is not.
MAX_FILE_BYTES = 1024 * 1024


class ConfigError(Exception):
    """A configuration file that cannot be used; the message is meant for a person."""


class _Model(BaseModel):
    # Unknown keys are errors: a misspelt option silently ignored is worse than a refusal.
    # Durations are finite: `.inf` or `1e400` would pass `gt=0` and then wait forever.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_region(value: str) -> str:
    if not _REGION_RE.match(value):
        raise ValueError(f"{value!r} is not an AWS region name (like us-east-1)")
    return value


Region = Annotated[str, AfterValidator(_check_region)]


_TABLE_RULE = "DynamoDB's naming rules: 3 to 255 characters, only letters, digits, '_', '-' and '.'."


def _check_table_name(value: str) -> str:
    if not _TABLE_RE.match(value):
        raise ValueError("not a DynamoDB table name: " + _TABLE_RULE.split(": ", 1)[1].rstrip("."))
    return value


def _check_attribute_name(value: str) -> str:
    if not value or len(value.encode("utf-8")) > 255:
        raise ValueError("a DynamoDB attribute name takes 1 to 255 bytes (UTF-8)")
    if any(ord(c) < 32 for c in value):
        raise ValueError("holds control characters")
    return value


def _check_path(value: str) -> str:
    if "\0" in value:
        raise ValueError("a file path cannot hold a NUL character")
    return value


TableName = Annotated[str, AfterValidator(_check_table_name)]
AttributeName = Annotated[str, AfterValidator(_check_attribute_name)]
FilePath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_check_path)]


def _check_host(host: str) -> str:
    """An IP address or a DNS name (what a socket can bind or connect to)."""
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(candidate)
        return host
    except ValueError:
        pass
    name = candidate.removesuffix(".")
    if not name or len(name) > 253 or not all(_HOST_LABEL_RE.match(p) for p in name.split(".")):
        raise ValueError(f"{host!r} is neither an IP address nor a host name")
    return host


def _check_endpoint_url(value: str) -> str:
    """What botocore will accept as an endpoint, checked here instead of at the first call."""
    if value != value.strip() or any(ord(c) < 33 or ord(c) == 127 for c in value):
        raise ValueError("holds spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials do not belong in the URL (they would show in logs)")
    if parts.query or parts.fragment:
        raise ValueError("an endpoint takes no query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    _check_host(parts.hostname)
    return value


class AwsSettings(_Model):
    """How gtmon talks to AWS: finite timeouts on every call, bounded retries."""

    endpoint_url: Annotated[str, AfterValidator(_check_endpoint_url)] | None = Field(
        default=None,
        max_length=2048,
        description="Override the AWS endpoint (the emulator, e.g. http://127.0.0.1:8000).",
    )
    connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    read_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    max_attempts: int = Field(default=3, ge=1, le=10)
    profile: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")
    canary_http: Literal["lean", "botocore"] = Field(
        default="lean",
        description=(
            "How the canary's GetItem and PutItem are sent: `lean` (a prepared request signed "
            "with botocore's SigV4 on the client's own HTTP session, botocore's retries and error "
            "parsing; less CPU per call, docs/performance.md) or `botocore` "
            "(the full client, as every other call)."
        ),
    )


class CanarySettings(_Model):
    """The heartbeat writer and prober (the lag measurement)."""

    enabled: bool = True
    table: TableName = Field(
        default="gtmon-canary",
        description=(
            "Dedicated canary table (a global table in every region; `gtmon init` creates it). "
            + _TABLE_RULE
        ),
    )
    interval_seconds: float = Field(default=5.0, ge=0.2, le=3600)
    ttl_seconds: int = Field(default=86400, ge=60, le=MAX_TTL_SECONDS)
    timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        le=DAY,
        description=(
            "A canary not seen at a target after this long is given up: no longer polled, its "
            "lag never measured, counted in gtmon_canary_lost_total (the oldest-pending gauge "
            "keeps counting from it until a read shows it)."
        ),
    )
    max_reads_per_canary: int = Field(default=20, ge=2, le=1000)
    min_poll_interval_seconds: float = Field(default=0.02, gt=0, le=10)
    fleet: str = Field(
        default="gtmon",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Per-region mode: the name all daemons of one deployment share in canary keys.",
    )
    warning_seconds: float = Field(
        default=5.0, gt=0, le=DAY, description="Lag that turns a pair WARNING."
    )
    critical_seconds: float = Field(
        default=30.0, gt=0, le=DAY, description="Lag that turns a pair CRITICAL."
    )
    stall_seconds: float = Field(
        default=30.0, gt=0, le=DAY, description="Age of the oldest unseen canary that means STALLED."
    )

    @model_validator(mode="after")
    def _ordered(self) -> CanarySettings:
        if self.warning_seconds > self.critical_seconds:
            raise ValueError("warning_seconds must not exceed critical_seconds")
        return self


@functools.lru_cache(maxsize=128)
def key_template_pattern(template: str, wildcards: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    """A key template (canary or probe key) as a pattern matching every key it produces:
    each placeholder in `wildcards` replaced by its regular expression, the rest literal."""
    pattern = re.escape(template)
    for placeholder, wildcard in wildcards:
        pattern = pattern.replace(re.escape(placeholder), wildcard)
    return re.compile(pattern)


def _check_key_template(value: dict[str, str], placeholders: tuple[str, ...]) -> None:
    """A key template (attribute -> value with placeholders): one or two attributes, bounded
    length, and each placeholder in some value so keys of different owners never collide."""
    if not value:
        raise ValueError("needs at least the partition key attribute")
    if len(value) > 2:
        raise ValueError("a DynamoDB key has a partition key and at most a sort key")
    for name, template in value.items():
        _check_attribute_name(name)
        # DynamoDB: partition key values up to 2048 bytes, sort keys 1024; the
        # substituted values add at most ~80.
        if len(template.encode("utf-8")) > 900:
            raise ValueError(f"the template of {name!r} is longer than 900 bytes")
    for placeholder in placeholders:
        if not any(placeholder in v for v in value.values()):
            raise ValueError(f"one key value must contain {placeholder}")


class ConflictSettings(_Model):
    """Per-table last-writer-wins detection settings."""

    enabled: bool = True
    version_attribute: AttributeName | None = Field(
        default=None, description="Counter attribute the writers increment (exact mode)."
    )
    writer_attribute: AttributeName | None = Field(
        default=None, description="Attribute holding the writing region or writer id."
    )
    # ---- conflict probes (issue 13) ----
    probes: bool = Field(
        default=True,
        description="Write conflict probes into this table (`conflicts.probes` switches all off).",
    )
    probe_key: dict[str, str] | None = Field(
        default=None,
        description=(
            "Key template of this table's probe items; {instance} and {probe} are substituted. "
            "Default: every key attribute (strings only) gets 'gtmon-probe#{instance}#{probe}'."
        ),
    )

    @field_validator("probe_key")
    @classmethod
    def _probe_template(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            _check_key_template(value, ("{instance}", "{probe}"))
        return value


class ProbeSettings(_Model):
    """Conflict probes: a deliberate two-region write race, to prove detection works."""

    probes: bool = Field(
        default=True,
        description=(
            "Write a probe item in two regions at once, every probe_interval_seconds, into each "
            "table with conflicts on (unless its conflicts.probes is false) and the canary "
            "table, and check that the detector reports the lost write (docs/conflicts.md)."
        ),
    )
    probe_interval_seconds: float = Field(default=300.0, ge=1, le=DAY)
    probe_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=DAY,
        description=(
            "How long a probe may wait for its verdict before it counts as missed. Default: "
            "streams.settle_seconds + 3 x streams.poll_interval_max_seconds + the slowest "
            "link's lag (the largest upper bound of its last 64 canaries)."
        ),
    )


class TableConfig(_Model):
    """A monitored global table."""

    name: TableName = Field(description="Table name. " + _TABLE_RULE)
    regions: list[Region] | None = Field(
        default=None, description="Replica regions to watch; default: all configured regions."
    )
    canary_key: dict[str, str] | None = Field(
        default=None,
        description=(
            "Write the canary into this table instead of the dedicated canary table, with this "
            "key template; {instance} and {source} are substituted."
        ),
    )
    conflicts: ConflictSettings = ConflictSettings()

    @field_validator("canary_key")
    @classmethod
    def _template_names_source(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            _check_key_template(value, ())
            if not any("{source}" in v for v in value.values()):
                raise ValueError(
                    "one key value must contain {source} so each region's canary differs"
                )
            if not any("{instance}" in v for v in value.values()):
                raise ValueError(
                    "one key value must contain {instance} so two monitors never collide"
                )
        return value


class StreamSettings(_Model):
    """The stream readers behind conflict detection."""

    enabled: bool = True
    canary_floor_factor: float = Field(
        default=0.5,
        ge=0,
        lt=1,
        description=(
            "The detector may assume no replication link delivers faster than this share of "
            "the smallest lower bound of its recent canaries, which rules out origins that "
            "could not have delivered a write in time (needs the canary; assumes the canary "
            "table and the monitored tables share the links). 0 turns it off."
        ),
    )
    poll_interval_min_seconds: float = Field(default=0.2, ge=0.05, le=60)
    poll_interval_max_seconds: float = Field(
        default=1.0,
        ge=0.05,
        le=300,
        description=(
            "An idle reader's polling interval. The first write after a quiet spell is "
            "timed only this precisely in the region that took it, which decides whether a "
            "conflict on an idle table can be attributed (docs/conflicts.md: at 2 s, recall "
            "on idle tables with 0.5 s links fell to 0.58). Cost: see `gtmon cost`."
        ),
    )
    checkpoint_path: FilePath = "gtmon-checkpoints.json"
    settle_seconds: float = Field(default=10.0, ge=0, le=3600)
    log_item_images: bool = False
    burst_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description=(
            "After a record of a table shows in any region's stream, every region's readers of "
            "that table poll at `poll_interval_min_seconds` for this long (each further record "
            "extends it), so arrival times are sharp while a conflict can happen; then they go "
            "back to the adaptive interval. 0 turns bursts off. Cost: see `gtmon cost`."
        ),
    )
    detector_memory_mb: float = Field(
        default=256.0,
        ge=1,
        le=65536,
        description=(
            "Per table: the estimated memory of the stream records the conflict detector holds "
            "while it waits for every region (items of up to 400 KB, a paused link). Past it "
            "the items whose last write is oldest are judged on what has been read "
            "(gtmon_detector_degraded_total{reason=\"buffer_full\"})."
        ),
    )
    pending_keys_per_link: int = Field(
        default=1000,
        ge=0,
        le=1_000_000,
        description=(
            "Pending writes per replication link listed with their item key (oldest first) in "
            "/api/at-risk and write_at_risk events. Beyond it a pending write is tracked by "
            "digests without its key (bench/pending.py: about 1.6 KB each either way, plus the "
            "key while it is listed): still counted exactly, and "
            "gtmon_replication_pending_truncated_total says how many were not listed."
        ),
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> StreamSettings:
        if self.poll_interval_min_seconds > self.poll_interval_max_seconds:
            raise ValueError("poll_interval_min_seconds must not exceed poll_interval_max_seconds")
        return self


class MetricsSettings(_Model):
    """Where /metrics, /api/status and the status page are served."""

    host: Annotated[str, AfterValidator(_check_host)] = "0.0.0.0"
    port: int = Field(default=9108, ge=0, le=65535)
    web_config_file: FilePath | None = Field(
        default=None,
        description=(
            "TLS and basic auth, in the Prometheus exporter web config format; checked with the "
            "certificates and keys it names by `gtmon config validate` and before `gtmon run` "
            "starts. A relative path is taken from the working directory."
        ),
    )
    max_connections: int = Field(
        default=64,
        ge=1,
        le=10000,
        description=(
            "Open connections the endpoints accept at once (TLS handshakes included); further "
            "ones are closed at once and counted in gtmon_web_connections_refused_total."
        ),
    )
    max_connections_per_client: int = Field(
        default=16,
        ge=1,
        le=10000,
        description=(
            "Open connections one client address (an IPv6 /64) may hold, so that one client "
            "cannot take every connection from Prometheus."
        ),
    )


class LogSettings(_Model):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Model):
    """The whole gtmon configuration."""

    instance_id: str = Field(
        default_factory=lambda: socket.gethostname().split(".")[0] or "gtmon",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
    )
    regions: list[Region] = Field(min_length=1)
    home_region: str | None = Field(
        default=None,
        description="Per-region mode: write canaries only here and read the others' locally.",
    )
    clock_error_seconds: float = Field(default=0.005, ge=0, le=10)
    aws: AwsSettings = AwsSettings()
    canary: CanarySettings = CanarySettings()
    streams: StreamSettings = StreamSettings()
    tables: list[TableConfig] = Field(default_factory=list)
    conflicts: ProbeSettings = ProbeSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()

    @field_validator("regions")
    @classmethod
    def _regions_unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("regions must not repeat")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.home_region is not None and self.home_region not in self.regions:
            raise ValueError(
                f"home_region {self.home_region!r} is not one of regions {self.regions}"
            )
        names = [t.name for t in self.tables]
        if len(set(names)) != len(names):
            raise ValueError("tables: each table may be listed once")
        for table in self.tables:
            for region in table.regions or []:
                if region not in self.regions:
                    raise ValueError(
                        f"table {table.name!r} lists region {region!r}, "
                        f"which is not one of regions {self.regions}"
                    )
        _check_checkpoint_store(self.streams.checkpoint_path, self.regions)
        return self

    def table_regions(self, table: TableConfig) -> list[str]:
        """The regions a table is watched in (its own list, or all regions)."""
        return list(table.regions or self.regions)


def _check_checkpoint_store(path: str, regions: list[str]) -> None:
    """A ``dynamodb://TABLE?region=REGION`` store names a table and one of `regions`.

    The daemon opens clients for the configured regions only: a store elsewhere
    would fail on every load and save, so it is refused here, before any AWS call.
    """
    if not path.startswith("dynamodb://"):
        return
    table, _, query = path.removeprefix("dynamodb://").partition("?")
    params = dict(part.partition("=")[::2] for part in query.split("&") if part)
    region = params.get("region", "")
    if not table or not region:
        raise ValueError(
            f"streams.checkpoint_path {path!r}: use dynamodb://TABLE?region=REGION"
        )
    if region not in regions:
        raise ValueError(
            f"streams.checkpoint_path {path!r}: region {region!r} is not one of regions "
            f"{regions}; keep the checkpoint table in a monitored region"
        )


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path or "(top level)"


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside a field's type: `X`, `X | None`, `list[X]`, `dict[str, X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, dict, typing.Annotated):
        for argument in typing.get_args(annotation):
            found = _nested_model(argument)
            if found is not None:
                return found
    return None


def _known_fields(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> list[str]:
    """The fields the model at `loc` (a problem's location without its last part) accepts."""
    for part in loc:
        if model is None:
            return []
        if isinstance(part, str):
            field = model.model_fields.get(part)
            model = _nested_model(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def _describe(error: Any, example: str = "config/example.yaml", model: type[BaseModel] | None = None) -> str:
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if error["type"] == "extra_forbidden":
        loc = tuple(error["loc"])
        close = difflib.get_close_matches(str(loc[-1]), _known_fields(model, loc[:-1]), n=1, cutoff=0.6)
        if close:
            return f"unknown field; did you mean {close[0]!r}? (see {example})"
        return f"unknown field (check the spelling; see {example})"
    if error["type"] == "missing":
        return "required field is missing"
    ctx = error.get("ctx") or {}
    if error["type"] == "literal_error" and "expected" in ctx:
        return f"must be one of {ctx['expected']}"
    value = error.get("input")
    if value is not None and not isinstance(value, dict | list):
        return f"{message} (got {value!r})"
    return message


def validation_problems(
    exc: ValidationError, example: str = "config/example.yaml", model: type[BaseModel] | None = None
) -> list[str]:
    """One `field.path: what is wrong` line per problem pydantic found; `example` is the
    file an unknown field's message points to, and `model` (the one validated) lets it
    suggest the closest known field ("did you mean"), as a misspelt key is the usual cause."""
    return [
        f"{_location(tuple(error['loc']))}: {_describe(error, example, model)}" for error in exc.errors()
    ]


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate already-loaded YAML data; errors name `source`, each field and what is allowed."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the file must hold a mapping (key: value), not {type(data).__name__}"
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, model=Config)
        lines = [f"{source}: {len(problems)} problem(s) in the configuration:"]
        lines.extend(f"  {problem}" for problem in problems)
        raise ConfigError("\n".join(lines)) from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def read_yaml(path: Path, what: str = "the file") -> Any:
    """A YAML file's data; any way it cannot be read is one ConfigError line naming the file.

    A binary or non-UTF-8 file, a NUL byte, a directory or broken YAML all end here, never
    as a traceback.
    """
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: {what} is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: {what} is not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x}); "
            "is it a binary file?"
        ) from None
    if "\0" in text:
        raise ConfigError(f"{path}: {what} holds a NUL byte at {text.index(chr(0))}; is it a binary file?")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {_one_line(problem)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    return parse_config(read_yaml(path), str(path))
