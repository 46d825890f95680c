"""The one validated configuration model for gtmon.

Every setting the daemon reads lives here, so that `gtmon config validate` can
check a file completely before any AWS call is made (configure before start),
and so that an operator's typo is reported with the file, the field path and
what is allowed instead of surfacing later as a traceback.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

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
    "StreamSettings",
    "TableConfig",
    "load_config",
    "parse_config",
]

_REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")


class ConfigError(Exception):
    """A configuration file that cannot be used; the message is meant for a person."""


class _Model(BaseModel):
    # Unknown keys are errors: a misspelt option silently ignored is worse than a refusal.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_region(value: str) -> str:
    if not _REGION_RE.match(value):
        raise ValueError(f"{value!r} is not an AWS region name (like us-east-1)")
    return value


Region = Annotated[str, AfterValidator(_check_region)]


class AwsSettings(_Model):
    """How gtmon talks to AWS: finite timeouts on every call, bounded retries."""

    endpoint_url: str | None = Field(
        default=None,
        description="Override the AWS endpoint (the emulator, e.g. http://127.0.0.1:8000).",
    )
    connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    read_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    max_attempts: int = Field(default=3, ge=1, le=10)
    profile: str | None = None


class CanarySettings(_Model):
    """The heartbeat writer and prober (the lag measurement)."""

    enabled: bool = True
    table: str = Field(default="gtmon-canary", min_length=3, max_length=255)
    interval_seconds: float = Field(default=5.0, ge=0.2, le=3600)
    ttl_seconds: int = Field(default=86400, ge=60)
    timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Stop polling a canary that has not arrived after this long.",
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
    warning_seconds: float = Field(default=5.0, gt=0, description="Lag that turns a pair WARNING.")
    critical_seconds: float = Field(
        default=30.0, gt=0, description="Lag that turns a pair CRITICAL."
    )
    stall_seconds: float = Field(
        default=30.0, gt=0, description="Age of the oldest unseen canary that means STALLED."
    )

    @model_validator(mode="after")
    def _ordered(self) -> CanarySettings:
        if self.warning_seconds > self.critical_seconds:
            raise ValueError("warning_seconds must not exceed critical_seconds")
        return self


class ConflictSettings(_Model):
    """Per-table last-writer-wins detection settings."""

    enabled: bool = True
    version_attribute: str | None = Field(
        default=None, description="Counter attribute the writers increment (exact mode)."
    )
    writer_attribute: str | None = Field(
        default=None, description="Attribute holding the writing region or writer id."
    )


class TableConfig(_Model):
    """A monitored global table."""

    name: str = Field(min_length=3, max_length=255)
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
            if not value:
                raise ValueError("needs at least the partition key attribute")
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
    poll_interval_max_seconds: float = Field(default=2.0, ge=0.05, le=300)
    checkpoint_path: str = Field(default="gtmon-checkpoints.json", min_length=1)
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

    @model_validator(mode="after")
    def _min_below_max(self) -> StreamSettings:
        if self.poll_interval_min_seconds > self.poll_interval_max_seconds:
            raise ValueError("poll_interval_min_seconds must not exceed poll_interval_max_seconds")
        return self


class MetricsSettings(_Model):
    """Where /metrics, /api/status and the status page are served."""

    host: str = "0.0.0.0"
    port: int = Field(default=9108, ge=0, le=65535)
    web_config_file: str | None = Field(
        default=None,
        description="TLS and basic auth, in the Prometheus exporter web config format.",
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


def _describe(error: Any) -> str:
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if error["type"] == "extra_forbidden":
        return "unknown field (check the spelling; see config/example.yaml)"
    if error["type"] == "missing":
        return "required field is missing"
    ctx = error.get("ctx") or {}
    if error["type"] == "literal_error" and "expected" in ctx:
        return f"must be one of {ctx['expected']}"
    value = error.get("input")
    if value is not None and not isinstance(value, dict | list):
        return f"{message} (got {value!r})"
    return message


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate already-loaded YAML data; errors name `source`, each field and what is allowed."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the file must hold a mapping (key: value), not {type(data).__name__}"
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {len(exc.errors())} problem(s) in the configuration:"]
        for error in exc.errors():
            lines.append(f"  {_location(tuple(error['loc']))}: {_describe(error)}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_config(data, str(path))
