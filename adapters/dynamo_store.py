"""The first-attempt table in DynamoDB: one item per (exam, student), behind ``StatusStore``.

Item: ``pk`` = exam, ``sk`` = student, plus every ``StudentView`` field (``None`` fields are
left out). Writes are conditional, mirroring ``domain.first_attempt.supersedes`` in the
condition expression, so a replay, a duplicate or a later attempt is refused by DynamoDB
itself (``ConditionalCheckFailed``: the normal no-op answer, reported as ``refused``).

Requests go through aiodynamo on the service's event loop: a signed JSON POST per call, at
most ``workers`` in flight, each bounded by ``asyncio.timeout``. boto3 cost ~1.1 ms of CPU
per PutItem in its thread pool (botocore's serialiser, event hooks and parser, plus the
threads' GIL hand-offs) against ~0.3 ms here (docs/benchmarks.md). Items are built here
already in DynamoDB's attribute encoding, so aiodynamo's own item conversion is not used;
its retry loop is limited to a single attempt because the callers (the status service's
write backoff, the audit's repair) decide about retries themselves.

Batches: ``put_first_attempt`` sends up to ``transact_items`` conditional Puts (default 25,
at most 100) as one ``TransactWriteItems``, each with exactly the PutItem's condition and
``ReturnValuesOnConditionCheckFailure: ALL_OLD``. One request per batch instead of one per
item: 2,000 views through ``put_first_attempt`` against DynamoDB Local, 8 requests in flight,
cost its JVM 0.35-0.57 ms of CPU per item in batches of 25 (0.28-0.50 in batches of 100)
against 1.1-1.6 ms as PutItems, and this process 0.05-0.08 ms against 0.36-0.63 ms (six
rounds on a busy 2-core box). BatchWriteItem would be cheaper still but takes no conditions.
The price on AWS: a transactional write costs 2 write units per item (up to 1 KB) instead of
1, so ``transact_items=1`` (one PutItem per item) stays available. IAM is unchanged: a
transaction's Puts are authorised as ``dynamodb:PutItem``. A transaction never touches one
item twice (DynamoDB refuses that), and the order of writes to one item
matters, so the views of one call go in rounds: each (exam, student) key's first view in
the first round, its second in the next, and so on; the batches of one round run at once,
a round only after the previous one is done (``transact_items=1`` keeps the same rounds).

A transaction is all or nothing, and its outcome maps onto each view's ``PutOutcome``:

- success: every view ``written``.
- ``TransactionCanceledException``: ``CancellationReasons`` has one reason per Put, in order.
  ``ConditionalCheckFailed``: ``refused``, with the item as it is from the reason's ``Item``
  (AWS and DynamoDB Local 2.6 both return it under ALL_OLD). ``ValidationError`` (AWS's code
  for an item it cannot take, e.g. a number out of range): ``rejected``. ``None``: this Put
  was fine but was not applied; these are sent again as a new transaction without the
  decided ones (at most ``_TRANSACT_ATTEMPTS`` transactions per batch). Any other reason
  (``TransactionConflict``, ``ThrottlingError``, ``ProvisionedThroughputExceeded``, ...), a
  reason list that does not match the Puts, or still undecided views after those rounds: the
  views left go as one PutItem each, which decides every item on its own.
- a whole-request ``ValidationException`` or ``SerializationException``: one bad item spoils
  the whole request without saying which (DynamoDB Local answers a number overflow this way,
  never with a per-item ``ValidationError``), so the batch goes as one PutItem per view and
  only the bad one is ``rejected``.
- anything else on the whole request (network, timeout, throttling, server errors, a missing
  table): every view of the batch ``failed``; nothing is known, the caller retries.
- a view that has no DynamoDB encoding: ``rejected`` before any request; the others go on.

A batch left with a single view sends it as a PutItem (1 write unit instead of 2).
``InMemoryStatusStore`` is the fake with the same semantics (contract-tested against the
real one, with either kind of write, in tests/adapters/test_dynamo_store.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import aiohttp
from aiodynamo.client import Client
from aiodynamo.credentials import Credentials, Key, StaticCredentials
from aiodynamo.errors import (
    AIODynamoError,
    ConditionalCheckFailed,
    ResourceInUse,
    SerializationException,
    TableNotFound,
    TransactionCanceled,
    UnknownError,
    ValidationException,
)
from aiodynamo.http.aiohttp import AIOHTTP
from aiodynamo.http.types import HttpImplementation
from aiodynamo.models import StaticDelayRetry
from yarl import URL

from adapters.settings import DynamoSettings
from domain.first_attempt import ItemKey, item_key, supersedes
from schemas.views import StudentView

if TYPE_CHECKING:
    from botocore.credentials import Credentials as BotocoreSource
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

Item = Mapping[str, "AttributeValueTypeDef"]

_CONDITION = (
    "attribute_not_exists(pk) OR (#attempt = :attempt AND #seq < :seq) OR #attempt_no > :attempt_no"
)
_CONDITION_NAMES = {"#attempt": "attempt", "#seq": "seq", "#attempt_no": "attempt_no"}
# Errors about the item itself. Anything else (throttling, auth, a missing table, server
# errors, the network) is the store's condition, not the item's: retried, readiness false.
_ITEM_ERRORS = (ValidationException, SerializationException)
# DynamoDB numbers: magnitude up to 9.9999999999999999999999999999999999999E+125.
_MAX_NUMBER = 1e126
# One attempt per call: aiodynamo retries until this many seconds have passed.
_NO_RETRIES = StaticDelayRetry(delay=0, time_limit_secs=0)
# Transactions per batch (the first and its retries after cancellations) before what is
# still undecided goes as one PutItem each.
_TRANSACT_ATTEMPTS = 3
# DynamoDB's limit on the actions of one TransactWriteItems.
MAX_TRANSACT_ITEMS = 100
# Whole-request failures that say nothing about any item: every view of the request failed.
_UNAVAILABLE = (AIODynamoError, aiohttp.ClientError, OSError, TimeoutError)


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
    puts it aside. A rejected item never sinks its neighbours in a flush: a transaction it
    spoils is redone as one PutItem per item.
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


@dataclass(frozen=True, slots=True)
class _Write:
    """One view on its way: its place in the call and its Put (PutItem's or a transaction's)."""

    index: int
    view: StudentView
    put: dict[str, Any]


class DynamoStatusStore:
    """The real store: ``open`` creates the client and the table if missing; ``close`` frees it.

    ``transact_items``: views per ``TransactWriteItems`` (1 to 100); 1 sends one PutItem per
    view instead.
    """

    def __init__(
        self,
        settings: DynamoSettings,
        *,
        workers: int = 8,
        timeout_s: float = 5.0,
        transact_items: int = 25,
    ) -> None:
        if not 1 <= transact_items <= MAX_TRANSACT_ITEMS:
            raise ValueError(f"transact_items must be 1 to {MAX_TRANSACT_ITEMS}: {transact_items}")
        self._transact_items = transact_items
        self._settings = settings
        self._table = settings.table
        self._timeout = timeout_s
        self._workers = workers
        self._slots = asyncio.Semaphore(workers)
        self._http: aiohttp.ClientSession | None = None
        self._client: Client | None = None

    @property
    def table(self) -> str:
        return self._table

    async def open(self, *, create_table: bool = True) -> None:
        if self._client is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._workers),
                timeout=aiohttp.ClientTimeout(total=self._timeout, connect=min(self._timeout, 2.0)),
            )
            settings = self._settings
            credentials: Credentials
            if settings.endpoint is not None:
                # Static keys only for a local endpoint; AWS uses the normal credential chain.
                credentials = StaticCredentials(
                    Key(settings.access_key_id, settings.secret_access_key)
                )
            else:
                credentials = await AwsCredentialChain.resolve()
            self._client = Client(
                AIOHTTP(self._http),
                credentials,
                settings.region,
                endpoint=None if settings.endpoint is None else URL(settings.endpoint),
                throttle_config=_NO_RETRIES,
            )
        if create_table:
            await self.ensure_table()

    async def close(self) -> None:
        self._client = None
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def _request(self, action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        client = self._client
        if client is None:
            raise StatusStoreUnavailable("store not open")
        async with self._slots:
            async with asyncio.timeout(self._timeout):
                return await client.send_request(action=action, payload=payload)

    async def ensure_table(self) -> bool:
        """Create the table (on-demand billing) if it is missing; True if this call created it."""
        try:
            return await self._ensure_table()
        except (AIODynamoError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise StatusStoreUnavailable(f"table {self._table}: {exc!r}") from exc

    async def _ensure_table(self) -> bool:
        created = False
        try:
            status = await self._table_status()
        except TableNotFound:
            try:
                await self._request(
                    "CreateTable",
                    {
                        "TableName": self._table,
                        "BillingMode": "PAY_PER_REQUEST",
                        "AttributeDefinitions": [
                            {"AttributeName": "pk", "AttributeType": "S"},
                            {"AttributeName": "sk", "AttributeType": "S"},
                        ],
                        "KeySchema": [
                            {"AttributeName": "pk", "KeyType": "HASH"},
                            {"AttributeName": "sk", "KeyType": "RANGE"},
                        ],
                    },
                )
                created = True
            except ResourceInUse:
                pass  # another instance created it first
            status = "CREATING"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while status != "ACTIVE" and loop.time() < deadline:
            await asyncio.sleep(0.05)
            status = await self._table_status()
        if status != "ACTIVE":
            raise StatusStoreUnavailable(f"table {self._table} is {status}")
        return created

    async def _table_status(self) -> str | None:
        described = await self._request("DescribeTable", {"TableName": self._table})
        status = described["Table"].get("TableStatus")
        return None if status is None else str(status)

    async def put_first_attempt(self, views: Sequence[StudentView]) -> list[PutOutcome]:
        """One conditional write per view, in transactions of up to ``transact_items`` (or
        PutItems), ``workers`` requests in flight; one outcome per view, in order; never raises.
        """
        outcomes: list[PutOutcome | None] = [None] * len(views)
        writes: list[_Write] = []
        for index, view in enumerate(views):
            try:
                put = self._put_request(view)
            except (TypeError, ValueError) as exc:  # no DynamoDB encoding for a field
                outcomes[index] = PutOutcome(view, "rejected", error=f"{type(exc).__name__}: {exc}")
            else:
                writes.append(_Write(index, view, put))
        size = self._transact_items
        for round_ in _rounds(writes):
            if size == 1:
                done = await asyncio.gather(*(self._put(write) for write in round_))
            else:
                batches = [round_[i : i + size] for i in range(0, len(round_), size)]
                done = [
                    outcome
                    for batch in await asyncio.gather(*(self._transact(b) for b in batches))
                    for outcome in batch
                ]
            for write, outcome in zip(round_, done, strict=True):
                outcomes[write.index] = outcome
        decided = [outcome for outcome in outcomes if outcome is not None]
        assert len(decided) == len(views), "every view is rejected up front or written in a round"
        return decided

    def _put_request(self, view: StudentView) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "Item": to_item(view),
            "ConditionExpression": _CONDITION,
            "ExpressionAttributeNames": _CONDITION_NAMES,
            "ExpressionAttributeValues": {
                ":attempt": {"S": view.attempt},
                ":seq": {"N": str(view.seq)},
                ":attempt_no": {"N": str(view.attempt_no)},
            },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    async def _put(self, write: _Write) -> PutOutcome:
        view = write.view
        try:
            await self._request("PutItem", write.put)
        except ConditionalCheckFailed as exc:
            return PutOutcome(view, "refused", holder=_holder(_error_body(exc).get("Item")))
        except _ITEM_ERRORS as exc:
            return PutOutcome(view, "rejected", error=_describe(exc))
        except (*_UNAVAILABLE, StatusStoreUnavailable) as exc:
            return PutOutcome(view, "failed", error=_describe(exc))
        return PutOutcome(view, "written", holder=view)

    async def _transact(self, batch: list[_Write]) -> list[PutOutcome]:
        """One batch (distinct keys) as TransactWriteItems; outcomes in the batch's order."""
        decided: dict[int, PutOutcome] = {}
        left = batch
        for _ in range(_TRANSACT_ATTEMPTS):
            if len(left) < 2:
                break  # a single view: a PutItem does the same for half the write units
            try:
                await self._request(
                    "TransactWriteItems", {"TransactItems": [{"Put": w.put} for w in left]}
                )
            except _ITEM_ERRORS:
                break  # one bad item spoils the request, unnamed: each goes on its own below
            except (*_UNAVAILABLE, StatusStoreUnavailable) as exc:
                reasons = _cancellation_reasons(exc)
                if reasons is None:
                    error = _describe(exc)
                    return [
                        decided.get(w.index) or PutOutcome(w.view, "failed", error=error)
                        for w in batch
                    ]
                left, understood = _decide(left, reasons, decided)
                if not understood:
                    break
            else:
                decided.update(
                    (w.index, PutOutcome(w.view, "written", holder=w.view)) for w in left
                )
                left = []
                break
        if left:
            alone = await asyncio.gather(*(self._put(w) for w in left))
            decided.update((w.index, outcome) for w, outcome in zip(left, alone, strict=True))
        return [decided[w.index] for w in batch]

    async def get(self, exam: str, student: str) -> StudentView | None:
        try:
            response = await self._request(
                "GetItem",
                {
                    "TableName": self._table,
                    "Key": {"pk": {"S": exam}, "sk": {"S": student}},
                    "ConsistentRead": True,
                },
            )
        except (AIODynamoError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise StatusStoreUnavailable(f"get {exam}/{student}: {exc!r}") from exc
        item = response.get("Item")
        return None if item is None else from_item(item)

    async def scan_exam(self, exam: str) -> list[StudentView]:
        """Every item of one exam (a Query on the partition key, all pages), by student."""
        return [from_item(item) for item in await self.raw_exam_items(exam)]

    async def raw_exam_items(self, exam: str) -> list[dict[str, Any]]:
        """The exam's items exactly as DynamoDB stores them (audits, replay checks)."""
        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :exam",
            "ExpressionAttributeValues": {":exam": {"S": exam}},
            "ConsistentRead": True,
        }
        while True:
            try:
                page = await self._request("Query", query)
            except (AIODynamoError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise StatusStoreUnavailable(f"query {exam}: {exc!r}") from exc
            items.extend(page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                return items
            query = {**query, "ExclusiveStartKey": start}

    async def delete_table(self) -> None:
        """Drop the table (tests and teardown of throwaway environments only)."""
        try:
            await self._request("DeleteTable", {"TableName": self._table})
        except TableNotFound:
            pass
        except (AIODynamoError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise StatusStoreUnavailable(f"delete {self._table}: {exc!r}") from exc


def _rounds(writes: list[_Write]) -> list[list[_Write]]:
    """Each key's first write in round 0, its second in round 1, ...: no round has a key twice,
    and the writes to one key land in the order they were given."""
    rounds: list[list[_Write]] = []
    seen: dict[ItemKey, int] = {}
    for write in writes:
        key = item_key(write.view)
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(write)
    return rounds


def _cancellation_reasons(exc: BaseException) -> list[Mapping[str, Any]] | None:
    """A cancelled transaction's reasons, one per action; None if ``exc`` is something else.

    aiodynamo raises ``TransactionCanceled`` with the parsed body, or ``UnknownError`` with the
    raw one when its own parsing of the reasons fails (it wants a ``Message`` in each)."""
    body: object = None
    if isinstance(exc, TransactionCanceled):
        body = exc.body
    elif isinstance(exc, UnknownError):
        try:
            body = json.loads(exc.body)
        except ValueError:
            return None
        kind = body.get("__type") if isinstance(body, Mapping) else None
        if not isinstance(kind, str) or not kind.endswith("TransactionCanceledException"):
            return None
    if not isinstance(body, Mapping):
        return None
    reasons = body.get("CancellationReasons")
    if not isinstance(reasons, list):
        return None
    return [reason if isinstance(reason, Mapping) else {} for reason in reasons]


def _decide(
    left: list[_Write], reasons: list[Mapping[str, Any]], decided: dict[int, PutOutcome]
) -> tuple[list[_Write], bool]:
    """Record what a cancelled transaction's reasons decide; return the views still open and
    whether every reason was understood (if not, those views go as PutItems)."""
    if len(reasons) != len(left):
        return left, False
    still: list[_Write] = []
    understood = True
    for write, reason in zip(left, reasons, strict=True):
        code = reason.get("Code")
        if code == "ConditionalCheckFailed":
            decided[write.index] = PutOutcome(
                write.view, "refused", holder=_holder(reason.get("Item"))
            )
        elif code == "ValidationError":
            message = reason.get("Message") or "rejected in a transaction"
            decided[write.index] = PutOutcome(
                write.view, "rejected", error=f"ValidationException: {message}"
            )
        else:
            # "None" (or no code): fine but not applied, the transaction being all or nothing.
            understood = understood and code in (None, "None")
            still.append(write)
    return still, understood


def _holder(item: object) -> StudentView | None:
    """The item a refusal returned (ALL_OLD), if any and readable."""
    if not isinstance(item, Mapping) or not item:
        return None
    try:
        return from_item(item)
    except (TypeError, ValueError):  # pydantic's ValidationError is a ValueError
        return None


def _error_body(exc: BaseException) -> Mapping[str, Any]:
    """The parsed error response aiodynamo keeps as the exception's argument."""
    body = exc.args[0] if exc.args else None
    return body if isinstance(body, Mapping) else {}


def _describe(exc: BaseException) -> str:
    body = _error_body(exc)
    message = body.get("message") or body.get("Message")
    if isinstance(exc, AIODynamoError) and message:
        return f"{type(exc).__name__}: {message}"
    return f"{type(exc).__name__}: {exc}"


class AwsCredentialChain(Credentials):
    """AWS's whole credential chain for aiodynamo, from botocore's resolver.

    aiodynamo's own chain knows environment variables, the credentials file and the ECS and
    EC2 metadata services; production also runs on EKS (web identity), with SSO profiles or
    assumed roles, which botocore resolves. Refreshing may call STS, so it runs in a thread,
    and only when botocore says the key is about to expire; every other request reuses it.
    """

    def __init__(self, source: BotocoreSource | None) -> None:
        self._source = source
        self._key: Key | None = None

    @classmethod
    async def resolve(cls) -> AwsCredentialChain:
        # Resolving may read files and query metadata services: not on the event loop.
        return cls(await asyncio.to_thread(_botocore_credentials))

    async def get_key(self, http: HttpImplementation) -> Key | None:
        source = self._source
        if source is None:
            return None
        refresh_needed = getattr(source, "refresh_needed", None)
        if self._key is None or (refresh_needed is not None and refresh_needed()):
            frozen = await asyncio.to_thread(source.get_frozen_credentials)
            if frozen.access_key is None or frozen.secret_key is None:
                return None
            self._key = Key(frozen.access_key, frozen.secret_key, frozen.token)
        return self._key

    def invalidate(self) -> bool:
        self._key = None
        return self._source is not None

    def is_disabled(self) -> bool:
        return self._source is None


def _botocore_credentials() -> BotocoreSource | None:
    import botocore.session

    return botocore.session.get_session().get_credentials()


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
            try:
                item = to_item(view)
            except (TypeError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                outcomes.append(PutOutcome(view, "rejected", error=error))
                continue
            key = item_key(view)
            stored = self.items.get(key)
            holder = None if stored is None else from_item(stored)
            if supersedes(view, holder):
                self.items[key] = item
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
