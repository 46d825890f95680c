"""Last-writer-wins conflict detector: stream records in, verdicts out.

A pure core (no I/O, no clock, standard library only) so that it can be tested
against a simulator's ground truth and benchmarked on its own. The stream
reader turns each boto3 record into an :class:`Observation` with
:func:`from_stream_record`, feeds the :class:`Detector`, advances per-region
watermarks and polls :class:`Verdict` objects. How it decides, and what the
streams cannot tell, is written down in ``docs/conflicts.md``.
"""

from monitor.conflicts._detector import Detector, judge
from monitor.conflicts._floors import LinkFloorTracker
from monitor.conflicts._history import Analysis, LinkFloors
from monitor.conflicts._images import (
    Image,
    ImageError,
    canonical_image,
    canonical_key,
    format_image,
    image_from_json,
    image_to_dynamodb_json,
    image_to_json,
)
from monitor.conflicts._model import (
    UNKNOWN,
    DetectorSettings,
    EventName,
    KnownBy,
    Mode,
    Observation,
    Verdict,
    from_stream_record,
)

__all__ = [
    "UNKNOWN",
    "Analysis",
    "Detector",
    "DetectorSettings",
    "EventName",
    "Image",
    "ImageError",
    "KnownBy",
    "LinkFloorTracker",
    "LinkFloors",
    "Mode",
    "Observation",
    "Verdict",
    "canonical_image",
    "canonical_key",
    "format_image",
    "from_stream_record",
    "image_from_json",
    "image_to_dynamodb_json",
    "image_to_json",
    "judge",
]
