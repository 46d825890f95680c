"""DynamoDB Streams readers feeding the conflict detector.

`StreamReader` reads one replica's stream (shard lineage, adaptive polling,
iterator expiry, trimming, throttling and outages handled); `ConflictWatcher`
runs a reader per monitored table and region, feeds the detector and
publishes its verdicts; `checkpoints` keeps positions and reported-conflict
fingerprints across restarts.
"""

from monitor.streams.checkpoints import (
    CheckpointError,
    CheckpointState,
    CheckpointStore,
    DynamoDBCheckpointStore,
    JsonFileCheckpointStore,
    ReportedConflicts,
    ShardPosition,
    open_checkpoint_store,
)
from monitor.streams.lineage import order_shards
from monitor.streams.pacing import AdaptiveInterval, Backoff, TokenBucket
from monitor.streams.reader import ReaderSettings, StreamReader, StreamRecord
from monitor.streams.watcher import ConflictWatcher, verdict_fingerprint

__all__ = [
    "AdaptiveInterval",
    "Backoff",
    "CheckpointError",
    "CheckpointState",
    "CheckpointStore",
    "ConflictWatcher",
    "DynamoDBCheckpointStore",
    "JsonFileCheckpointStore",
    "ReaderSettings",
    "ReportedConflicts",
    "ShardPosition",
    "StreamReader",
    "StreamRecord",
    "TokenBucket",
    "open_checkpoint_store",
    "order_shards",
    "verdict_fingerprint",
]
