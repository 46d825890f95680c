"""gtmon: replication-lag and last-writer-wins conflict monitor for DynamoDB global tables."""

__version__ = "0.1.0"
__all__ = ["__version__"]
