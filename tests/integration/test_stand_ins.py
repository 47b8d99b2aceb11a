"""The stand-ins start from their registry packages and answer like the real services."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest

from modelport.local.processes import ServerProcess
from modelport.local.streams import StreamPoller, StreamSourceConfig


def test_dynamodb_local_creates_a_table_with_a_stream(dynamodb_local) -> None:
    client = boto3.client("dynamodb", endpoint_url=dynamodb_local.url)
    client.create_table(
        TableName="probe",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    table = client.describe_table(TableName="probe")["Table"]
    assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert table["LatestStreamArn"]


@pytest.fixture(params=["moto_server", "dynamodb_local"])
def table_server(request: pytest.FixtureRequest) -> ServerProcess:
    server: ServerProcess = request.getfixturevalue(request.param)
    return server


def make_table(url: str, name: str) -> Any:
    client = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1")
    client.create_table(
        TableName=name, KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return client


@pytest.mark.parametrize("starting_position", ["TRIM_HORIZON", "LATEST"])
def test_the_stream_poller_hears_every_write_after_a_cancelled_transaction(table_server, starting_position):
    """A 409 (a cancelled transaction) must not make the deployer deaf: moto rebuilds the table from
    a copy after a cancelled transaction, and an iterator opened before it reads a dead shard."""
    name = f"deaf-{uuid.uuid4().hex[:8]}"
    client = make_table(table_server.url, name)
    client.put_item(TableName=name, Item={"PK": {"S": "before-start"}})
    seen: list[tuple[str, str]] = []

    def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        seen.extend((r["eventName"], r["dynamodb"]["Keys"]["PK"]["S"]) for r in event["Records"])
        return {"batchItemFailures": []}

    poller = StreamPoller(table_name=name, handler=handler, endpoint_url=table_server.url,
                          config=StreamSourceConfig(starting_position=starting_position))
    poller.run_once()
    client.put_item(TableName=name, Item={"PK": {"S": "first"}})
    assert poller.run_once() == 1
    for attempt in range(3):  # each cancelled: the second item's condition fails
        with pytest.raises(client.exceptions.TransactionCanceledException):
            client.transact_write_items(TransactItems=[
                {"Put": {"TableName": name, "Item": {"PK": {"S": f"cancelled-{attempt}"}}}},
                {"Put": {"TableName": name, "Item": {"PK": {"S": "first"}},
                         "ConditionExpression": "attribute_not_exists(PK)"}},
            ])
        poller.run_once()  # whatever the stand-in shows of the cancelled write
        client.put_item(TableName=name, Item={"PK": {"S": f"after-{attempt}"}})
        poller.run_once()
    client.update_item(TableName=name, Key={"PK": {"S": "after-2"}}, UpdateExpression="SET n = :n",
                       ExpressionAttributeValues={":n": {"N": "1"}})
    poller.run_once()
    real = [event for event in seen if not event[1].startswith("cancelled-")]
    expected = [("INSERT", "first"), ("INSERT", "after-0"), ("INSERT", "after-1"), ("INSERT", "after-2"),
                ("MODIFY", "after-2")]
    if starting_position == "TRIM_HORIZON":
        expected.insert(0, ("INSERT", "before-start"))
    assert real == expected
    # and a record read once is delivered once, however often the poller looks again
    assert poller.run_once() == 0
