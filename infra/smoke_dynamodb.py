"""Smoke test: boto3 against the DynamoDB Local started by ``infra/stack up``.

create_table / put_item / get_item (strongly consistent) / delete_table on a
fresh table. Exits non-zero on any failure.

    .venv/bin/python infra/smoke_dynamodb.py [--endpoint http://127.0.0.1:18000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import boto3


def run(endpoint: str) -> None:
    t0 = time.monotonic()
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    table = f"smoke_{uuid.uuid4().hex[:12]}"
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    print(f"created table {table}")
    try:
        item = {"pk": {"S": "session#1"}, "sk": {"N": "42"}, "status": {"S": "ok"}}
        ddb.put_item(
            TableName=table,
            Item=item,
            ConditionExpression="attribute_not_exists(pk)",
        )
        got = ddb.get_item(
            TableName=table,
            Key={"pk": {"S": "session#1"}, "sk": {"N": "42"}},
            ConsistentRead=True,
        )
        if got.get("Item") != item:
            raise RuntimeError(f"get_item returned {got.get('Item')!r}, expected {item!r}")
        print("put_item/get_item round trip OK")
    finally:
        ddb.delete_table(TableName=table)
        print(f"deleted table {table}")
    print(f"dynamodb smoke OK in {time.monotonic() - t0:.1f}s")


def main() -> int:
    port = os.environ.get("PROCTOR_DYNAMODB_PORT", "18000")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", default=f"http://127.0.0.1:{port}")
    args = ap.parse_args()
    try:
        run(args.endpoint)
    except Exception as exc:  # noqa: BLE001 - smoke test reports any failure
        print(f"dynamodb smoke FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
