"""The stand-ins start from their registry packages and answer like the real services."""

from __future__ import annotations

import boto3


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
