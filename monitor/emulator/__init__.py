"""A local, multi-region DynamoDB global-tables emulator built on moto.

A product of its own (`gtmon emulator`) and the ground on which the monitor is
tested and measured. It never imports the monitor's runtime.
"""

from monitor.emulator.delays import DelaySpec
from monitor.emulator.emulator import DEFAULT_REGIONS, Emulator, EmulatorSettings
from monitor.emulator.server import EmulatorServer
from monitor.emulator.streams import StreamSettings

__all__ = [
    "DEFAULT_REGIONS",
    "DelaySpec",
    "Emulator",
    "EmulatorServer",
    "EmulatorSettings",
    "StreamSettings",
]
