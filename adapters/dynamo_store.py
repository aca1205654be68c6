"""The first-attempt table in DynamoDB: one item per (exam, student), behind ``StatusStore``.

Item: ``pk`` = exam, ``sk`` = student, plus every ``StudentView`` field (``None`` fields are
left out). Writes are conditional, mirroring ``domain.first_attempt.supersedes`` in the
condition expression, so a replay, a duplicate or a later attempt is refused by DynamoDB
itself (``ConditionalCheckFailed``: the normal no-op answer, reported as ``refused``).

boto3 blocks, so every call runs in this store's own small thread pool, at most ``workers``
at a time, each bounded by ``asyncio.timeout``; the event loop never waits on a socket.
``InMemoryStatusStore`` is the fake with the same semantics (contract-tested against the
real one in tests/adapters/test_dynamo_store.py).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from adapters.settings import DynamoSettings
from domain.first_attempt import item_key, supersedes
from schemas.views import StudentView

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

Item = Mapping[str, "AttributeValueTypeDef"]
_T = TypeVar("_T")

_CONDITION = (
    "attribute_not_exists(pk) OR (#attempt = :attempt AND #seq < :seq) OR #attempt_no > :attempt_no"
)
_CONDITION_NAMES = {"#attempt": "attempt", "#seq": "seq", "#attempt_no": "attempt_no"}
# Client errors about the item itself. Anything else (throttling, auth, a missing table,
# server errors) is the store's condition, not the item's: retried, readiness false.
_ITEM_ERRORS = frozenset({"ValidationException", "SerializationException"})
# DynamoDB numbers: magnitude up to 9.9999999999999999999999999999999999999E+125.
_MAX_NUMBER = 1e126


class StatusStoreUnavailable(Exception):
    """The table could not be read, created or written (network, throttling, timeout)."""


@dataclass(frozen=True, slots=True)
class PutOutcome:
    """What became of one conditional write.

    ``written``: the item now holds ``view``. ``refused``: the condition failed (replay,
    duplicate or later attempt); ``holder`` is the item as it is, when the store said.
    ``failed``: nothing is known; retry it (network, throttling, timeout, server error).
    ``rejected``: DynamoDB refuses this item as such (``ValidationException``, e.g. a number
    out of its range, or an item it cannot encode): retrying can never help, the caller
    puts it aside. Each write is its own PutItem, so one rejected item never sinks its
    neighbours in a flush.
    """

    view: StudentView
    result: Literal["written", "refused", "failed", "rejected"]
    holder: StudentView | None = None
    error: str | None = None


class StatusStore(Protocol):
    async def put_first_attempt(self, views: Sequence[StudentView]) -> list[PutOutcome]: ...

    async def get(self, exam: str, student: str) -> StudentView | None: ...

    async def scan_exam(self, exam: str) -> list[StudentView]: ...


# -- item codec ---------------------------------------------------------------------------


def to_item(view: StudentView) -> dict[str, AttributeValueTypeDef]:
    item: dict[str, AttributeValueTypeDef] = {"pk": {"S": view.exam}, "sk": {"S": view.student}}
    for name, value in view.model_dump(exclude_none=True).items():
        item[name] = _attribute(value)
    return item


def _attribute(value: object) -> AttributeValueTypeDef:
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    raise TypeError(f"no DynamoDB attribute for {type(value).__name__}")


def from_item(item: Mapping[str, Any]) -> StudentView:
    fields: dict[str, object] = {}
    for name, attribute in item.items():
        if name in ("pk", "sk"):
            continue
        if "N" in attribute:
            fields[name] = _number(attribute["N"])
        elif "BOOL" in attribute:
            fields[name] = attribute["BOOL"]
        elif "S" in attribute:
            fields[name] = attribute["S"]
    return StudentView.model_validate(fields)


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


# -- DynamoDB -----------------------------------------------------------------------------


class DynamoStatusStore:
    """The real store: ``open`` creates the client and the table if missing; ``close`` frees it."""

    def __init__(
        self, settings: DynamoSettings, *, workers: int = 8, timeout_s: float = 5.0
    ) -> None:
        self._settings = settings
        self._table = settings.table
        self._timeout = timeout_s
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dynamo")
        self._slots = asyncio.Semaphore(workers)
        self._client: DynamoDBClient | None = None

    @property
    def table(self) -> str:
        return self._table

    async def open(self, *, create_table: bool = True) -> None:
        if self._client is None:
            self._client = await self._call(self._make_client)
        if create_table:
            await self.ensure_table()

    async def close(self) -> None:
        client, self._client = self._client, None
        # Waiting for running calls is bounded by botocore's own read timeout.
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)
        if client is not None:
            client.close()

    def _make_client(self) -> DynamoDBClient:
        local = self._settings.endpoint is not None
        config = Config(
            max_pool_connections=self._workers,
            connect_timeout=min(self._timeout, 2.0),
            read_timeout=self._timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            # Items are built here from validated views. botocore re-checking them against
            # the API model cost ~7 % of a PutItem's client CPU (690 vs 720 us measured).
            parameter_validation=False,
        )
        session = boto3.session.Session()
        return session.client(
            "dynamodb",
            endpoint_url=self._settings.endpoint,
            region_name=self._settings.region,
            # Static keys only for a local endpoint; AWS uses the normal credential chain.
            aws_access_key_id=self._settings.access_key_id if local else None,
            aws_secret_access_key=self._settings.secret_access_key if local else None,
            config=config,
        )

    @property
    def _dynamo(self) -> DynamoDBClient:
        if self._client is None:
            raise StatusStoreUnavailable("store not open")
        return self._client

    async def _call(self, fn: Callable[[], _T]) -> _T:
        async with self._slots:
            async with asyncio.timeout(self._timeout):
                return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def ensure_table(self) -> bool:
        """Create the table (on-demand billing) if it is missing; True if this call created it."""
        try:
            return await self._call(self._ensure_table)
        except (BotoCoreError, ClientError, TimeoutError) as exc:
            raise StatusStoreUnavailable(f"table {self._table}: {exc}") from exc

    def _ensure_table(self) -> bool:
        dynamo = self._dynamo
        created = False
        try:
            status = dynamo.describe_table(TableName=self._table)["Table"].get("TableStatus")
        except dynamo.exceptions.ResourceNotFoundException:
            try:
                dynamo.create_table(
                    TableName=self._table,
                    BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[
                        {"AttributeName": "pk", "AttributeType": "S"},
                        {"AttributeName": "sk", "AttributeType": "S"},
                    ],
                    KeySchema=[
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                )
                created = True
            except dynamo.exceptions.ResourceInUseException:
                pass  # another instance created it first
            status = "CREATING"
        deadline = time.monotonic() + self._timeout
        while status != "ACTIVE" and time.monotonic() < deadline:
            time.sleep(0.05)
            status = dynamo.describe_table(TableName=self._table)["Table"].get("TableStatus")
        if status != "ACTIVE":
            raise StatusStoreUnavailable(f"table {self._table} is {status}")
        return created

    async def put_first_attempt(self, views: Sequence[StudentView]) -> list[PutOutcome]:
        """One conditional write per view, ``workers`` in flight at a time; never raises."""
        return list(await asyncio.gather(*(self._put(view) for view in views)))

    async def _put(self, view: StudentView) -> PutOutcome:
        try:
            return await self._call(lambda: self._put_blocking(view))
        except ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
            code = exc.response.get("Error", {}).get("Code")
            return PutOutcome(view, "rejected" if code in _ITEM_ERRORS else "failed", error=error)
        except (TypeError, ValueError) as exc:  # no DynamoDB encoding for a field
            return PutOutcome(view, "rejected", error=f"{type(exc).__name__}: {exc}")
        except (BotoCoreError, TimeoutError, StatusStoreUnavailable) as exc:
            return PutOutcome(view, "failed", error=f"{type(exc).__name__}: {exc}")

    def _put_blocking(self, view: StudentView) -> PutOutcome:
        try:
            self._dynamo.put_item(
                TableName=self._table,
                Item=to_item(view),
                ConditionExpression=_CONDITION,
                ExpressionAttributeNames=_CONDITION_NAMES,
                ExpressionAttributeValues={
                    ":attempt": {"S": view.attempt},
                    ":seq": {"N": str(view.seq)},
                    ":attempt_no": {"N": str(view.attempt_no)},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            holder = from_item(old) if isinstance(old, Mapping) and old else None
            return PutOutcome(view, "refused", holder=holder)
        return PutOutcome(view, "written", holder=view)

    async def get(self, exam: str, student: str) -> StudentView | None:
        try:
            response = await self._call(
                lambda: self._dynamo.get_item(
                    TableName=self._table,
                    Key={"pk": {"S": exam}, "sk": {"S": student}},
                    ConsistentRead=True,
                )
            )
        except (BotoCoreError, ClientError, TimeoutError) as exc:
            raise StatusStoreUnavailable(f"get {exam}/{student}: {exc}") from exc
        item = response.get("Item")
        return None if item is None else from_item(item)

    async def scan_exam(self, exam: str) -> list[StudentView]:
        """Every item of one exam (a Query on the partition key, all pages), by student."""
        return [from_item(item) for item in await self.raw_exam_items(exam)]

    async def raw_exam_items(self, exam: str) -> list[dict[str, Any]]:
        """The exam's items exactly as DynamoDB stores them (audits, replay checks)."""
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            page_start = start
            try:
                page = await self._call(functools.partial(self._query_page, exam, page_start))
            except (BotoCoreError, ClientError, TimeoutError) as exc:
                raise StatusStoreUnavailable(f"query {exam}: {exc}") from exc
            items.extend(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    def _query_page(self, exam: str, start: dict[str, Any] | None) -> Mapping[str, Any]:
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :exam",
            "ExpressionAttributeValues": {":exam": {"S": exam}},
            "ConsistentRead": True,
        }
        if start:
            query["ExclusiveStartKey"] = start
        return self._dynamo.query(**query)

    async def delete_table(self) -> None:
        """Drop the table (tests and teardown of throwaway environments only)."""
        try:
            await self._call(lambda: self._dynamo.delete_table(TableName=self._table))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise


# -- fake ---------------------------------------------------------------------------------


class InMemoryStatusStore:
    """The port's fake: same condition, items kept in their DynamoDB encoding."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, AttributeValueTypeDef]] = {}
        self.unavailable = False

    async def put_first_attempt(self, views: Sequence[StudentView]) -> list[PutOutcome]:
        outcomes: list[PutOutcome] = []
        for view in views:
            if self.unavailable:
                outcomes.append(PutOutcome(view, "failed", error="unavailable"))
                continue
            if _out_of_range(view):
                outcomes.append(
                    PutOutcome(view, "rejected", error="ValidationException: Number overflow")
                )
                continue
            key = item_key(view)
            stored = self.items.get(key)
            holder = None if stored is None else from_item(stored)
            if supersedes(view, holder):
                self.items[key] = to_item(view)
                outcomes.append(PutOutcome(view, "written", holder=view))
            else:
                outcomes.append(PutOutcome(view, "refused", holder=holder))
        return outcomes

    async def get(self, exam: str, student: str) -> StudentView | None:
        self._check()
        stored = self.items.get((exam, student))
        return None if stored is None else from_item(stored)

    async def scan_exam(self, exam: str) -> list[StudentView]:
        self._check()
        return [from_item(item) for (e, _), item in sorted(self.items.items()) if e == exam]

    def _check(self) -> None:
        if self.unavailable:
            raise StatusStoreUnavailable("unavailable")


def _out_of_range(view: StudentView) -> bool:
    """What DynamoDB's own ValidationException says of numbers, for the fake."""
    return any(
        isinstance(v, float) and not (abs(v) < _MAX_NUMBER) for v in view.model_dump().values()
    )
