"""moto's management API on the emulator: what a moto server's users (moto's own server
mode among them) call between tests, with the control API's guards against web pages."""

from __future__ import annotations

from typing import Any

import requests
from emu_helpers import make_global, order_item

from monitor.emulator import EmulatorServer
from monitor.emulator.control import ControlClient


def _tables(client: Any) -> dict[str, list[str]]:
    return {r: client(r).list_tables()["TableNames"] for r in ("us-east-1", "eu-west-1", "us-west-2")}


def test_an_unsigned_post_to_moto_api_reset_resets_the_whole_emulator(
    emu: EmulatorServer, client: Any
) -> None:
    ddb = make_global(client, regions=["us-east-1", "eu-west-1"])
    client("us-west-2").create_table(
        TableName="Solo",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    control = ControlClient(emu.url)
    control.fault("pause", **{"from": "us-east-1", "to": "eu-west-1"})
    control.fault("outage", region="ap-southeast-1")
    ddb["us-east-1"].put_item(TableName="Orders", Item=order_item("O-1"))
    before = control.state()
    assert before["in_flight"] == 1 and before["writes_recorded"] == 1
    assert before["faults"]["ap-southeast-1"]["outage"] == "error"

    # What moto's ServerModeMockAWS sends: requests.post(endpoint + "/moto-api/reset").
    answer = requests.post(f"{emu.url}/moto-api/reset", timeout=5)

    assert answer.status_code == 200 and answer.json() == {"status": "ok"}
    after = control.state()
    assert after["in_flight"] == 0 and after["writes_recorded"] == 0
    assert after["global_tables"]["tables"] == {}
    assert not any(link["paused"] for link in after["global_tables"]["links"].values())
    assert all(fault["outage"] is None for fault in after["faults"].values())
    assert control.truth()["writes"] == []
    assert _tables(client) == {"us-east-1": [], "eu-west-1": [], "us-west-2": []}


def test_moto_api_reset_takes_post_only_as_in_moto(emu: EmulatorServer, client: Any) -> None:
    make_global(client, regions=["us-east-1"])
    answer = requests.get(f"{emu.url}/moto-api/reset", timeout=5)
    assert answer.status_code == 400 and answer.json() == {"Error": "Need to POST to reset Moto"}
    assert client("us-east-1").list_tables()["TableNames"] == ["Orders"]


def test_a_web_page_cannot_reset_the_emulator(emu: EmulatorServer, client: Any) -> None:
    make_global(client, regions=["us-east-1"])
    url = f"{emu.url}/moto-api/reset"
    # A cross-site fetch carries its Origin; a DNS-rebound page arrives with its own name as Host.
    assert requests.post(url, headers={"Origin": "https://evil.example"}, timeout=5).status_code == 403
    assert requests.post(url, headers={"Host": "evil.example:8000"}, timeout=5).status_code == 403
    # A cross-site form needs no preflight; moto's clients send no body at all.
    form = requests.post(url, data="x", headers={"Content-Type": "text/plain"}, timeout=5)
    assert form.status_code == 415
    assert client("us-east-1").list_tables()["TableNames"] == ["Orders"]
    assert requests.post(url, headers={"Origin": "http://localhost:3000"}, timeout=5).status_code == 200


def test_moto_api_read_paths_are_motos_and_unknown_paths_a_clear_404(
    emu: EmulatorServer, client: Any
) -> None:
    make_global(client, regions=["us-east-1"])
    data = requests.get(f"{emu.url}/moto-api/data.json", timeout=5)
    assert data.status_code == 200
    assert [t["name"] for t in data.json()["dynamodb"]["Table"]] == ["Orders"]
    assert requests.post(f"{emu.url}/moto-api/seed?a=42", timeout=5).status_code == 200
    missing = requests.post(f"{emu.url}/moto-api/reset-auth", data="4", timeout=5)
    assert missing.status_code == 404
    assert "/moto-api/reset-auth is not served by the gtmon emulator" in missing.json()["error"]
