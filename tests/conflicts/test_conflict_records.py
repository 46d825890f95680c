"""Canonical images and the boto3 record adapter: the detector's only contact with AWS shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from monitor.conflicts import (
    ImageError,
    canonical_image,
    canonical_key,
    format_image,
    from_stream_record,
    image_to_dynamodb_json,
)

# A record as boto3's low-level dynamodbstreams.get_records returns it.
RECORD = {
    "eventID": "1",
    "eventName": "MODIFY",
    "eventVersion": "1.1",
    "eventSource": "aws:dynamodb",
    "awsRegion": "us-east-1",
    "dynamodb": {
        "ApproximateCreationDateTime": datetime(2026, 1, 1, 10, 1, 0, 900000, tzinfo=UTC),
        "Keys": {"OrderID": {"S": "1"}},
        "NewImage": {"OrderID": {"S": "1"}, "OrderStatus": {"S": "Shipped"}, "N": {"N": "3.0"}},
        "OldImage": {"OrderID": {"S": "1"}, "OrderStatus": {"S": "Pending"}, "N": {"N": "3"}},
        "SequenceNumber": "111",
        "SizeBytes": 60,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    },
}


def test_attribute_order_and_number_spelling_do_not_matter() -> None:
    a = canonical_image({"b": {"N": "3.0"}, "a": {"S": "x"}})
    b = canonical_image({"a": {"S": "x"}, "b": {"N": "3"}})
    assert a == b
    assert hash(a) == hash(b)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"N": "300"}, {"N": "3E+2"}),
        ({"N": "-0.50"}, {"N": "-.5"}),
        ({"N": "0.0"}, {"N": "-0"}),
        ({"SS": ["b", "a"]}, {"SS": ["a", "b"]}),
        ({"NS": ["1", "2.0"]}, {"NS": ["2", "1"]}),
        (
            {"M": {"y": {"N": "1"}, "x": {"NULL": True}}},
            {"M": {"x": {"NULL": True}, "y": {"N": "1.0"}}},
        ),
        ({"B": b"\x00\x01"}, {"B": bytearray(b"\x00\x01")}),
    ],
)
def test_equal_values_canonicalise_equal(left: dict, right: dict) -> None:
    assert canonical_image({"v": left}) == canonical_image({"v": right})


def test_lists_keep_order_and_types_stay_distinct() -> None:
    assert canonical_image({"v": {"L": [{"N": "1"}, {"N": "2"}]}}) != canonical_image(
        {"v": {"L": [{"N": "2"}, {"N": "1"}]}}
    )
    assert canonical_image({"v": {"S": "1"}}) != canonical_image({"v": {"N": "1"}})


@pytest.mark.parametrize("bad", [{"X": "1"}, {"N": "one"}, {"S": "a", "N": "1"}])
def test_malformed_values_raise(bad: dict) -> None:
    with pytest.raises(ImageError):
        canonical_image({"v": bad})


def test_round_trip_to_dynamodb_json() -> None:
    doc = {"a": {"SS": ["x", "y"]}, "m": {"M": {"l": {"L": [{"BOOL": True}]}}}, "n": {"N": "3"}}
    assert image_to_dynamodb_json(canonical_image(doc)) == doc


def test_from_stream_record_boto3_shape() -> None:
    ob = from_stream_record("Orders", "us-east-1", RECORD, observed_at=1767261661.2)
    assert ob.table == "Orders" and ob.region == "us-east-1"
    assert ob.key == canonical_key({"OrderID": {"S": "1"}})
    assert ob.event == "MODIFY"
    assert ob.old_image == canonical_image(RECORD["dynamodb"]["OldImage"])  # type: ignore[arg-type]
    assert ob.new_image == canonical_image(RECORD["dynamodb"]["NewImage"])  # type: ignore[arg-type]
    # rounded DOWN to the second, as AWS does
    assert ob.created_at == datetime(2026, 1, 1, 10, 1, 0, tzinfo=UTC).timestamp()
    assert ob.sequence_number == "111"
    assert ob.observed_at == 1767261661.2


def test_from_stream_record_epoch_seconds_and_remove() -> None:
    rec = {
        "eventName": "REMOVE",
        "dynamodb": {
            "ApproximateCreationDateTime": Decimal("1767261661.7"),
            "Keys": {"OrderID": {"S": "1"}},
            "OldImage": {"OrderID": {"S": "1"}},
            "SequenceNumber": "5",
        },
    }
    ob = from_stream_record("Orders", "eu-west-1", rec, None)
    assert ob.event == "REMOVE" and ob.new_image is None and ob.created_at == 1767261661.0
    assert ob.old_image is not None


def test_from_stream_record_rejects_unknown_event() -> None:
    with pytest.raises(ValueError, match="eventName"):
        from_stream_record("T", "r", {"eventName": "TTL", "dynamodb": {}}, None)


def test_format_image_is_short_and_readable() -> None:
    img = canonical_image({"OrderStatus": {"S": "Shipped"}, "n": {"N": "2"}})
    assert format_image(img) == "{OrderStatus='Shipped', n=2}"
    assert format_image(None) == "<deleted>"
    assert format_image(canonical_image({"s": {"S": "x" * 500}}), limit=50).endswith("...")
