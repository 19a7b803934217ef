"""The state file: every AWS resource this tool creates, written down before it is created.

`runs/<study>/bedrock_state.json` lists each resource with its type, name, client request
token, hourly price and region, written *before* the create call ("intended"); the call's
answer then adds its id and ARN ("created"). A create whose answer is lost (a timeout, a reset
connection, Ctrl-C between send and receive) still leaves its entry, so the next start finds
the resource by its name (bedrock/reconcile.py) and adopts it, or marks the entry "absent"
when the account never made it. Entries are only ever appended: recording a resource whose
token is already listed returns the listed entry, and nothing replaces a live one, so a second
throughput for the same model (after the units changed) sits beside the first and cleanup
deletes both. An entry leaves the live list when it is marked deleted or absent, and stays in
the file with the time, so hours billed are counted from intent to deletion.

Paid calls whose cost the results store does not hold are listed too, with what they cost:
retrieve calls (their query embeddings), and calls whose answer never came (a converse call
cut off by Ctrl-C), which AWS may have billed. A rerun's spend guard counts them.

Writes go to a temporary file that is renamed over the old one (fsynced), so a kill mid-write
leaves the previous state whole. No credential is ever written here: only identifiers.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localnova.errors import UserError
from localnova.files import write_text_atomic

STATE_FILE_NAME = "bedrock_state.json"
STATE_VERSION = 2

# Resource types, in the order cleanup deletes them: what bills by the hour goes first.
DELETE_ORDER = (
    "provisioned_throughput",
    "custom_model_deployment",
    "customization_job",  # only stopped, if still running; a finished job is not a resource to delete
    "custom_model",
    "data_source",
    "knowledge_base",
    "s3_object",
    "s3_prefix",  # everything under a prefix, e.g. a customization job's training output
)
# Resources a custom model cannot be deleted under: they must be gone first.
HOSTING_TYPES = ("provisioned_throughput", "custom_model_deployment")

INTENDED, CREATED, DELETED, ABSENT = "intended", "created", "deleted", "absent"
LIVE_STATUSES = (INTENDED, CREATED)


def now() -> datetime:
    """The clock of every timestamp here and of the hours counted from them; tests replace it."""
    return datetime.now(UTC)


def utc_now() -> str:
    return now().isoformat(timespec="seconds")


@dataclass
class Resource:
    type: str  # one of DELETE_ORDER
    key: str  # what the study calls it, e.g. "custom_model:nova-micro"
    region: str
    id: str = ""  # the API's id or name
    arn: str = ""
    client_token: str = ""
    created_at: str = field(default_factory=utc_now)  # when it was intended: hours bill from here
    status: str = CREATED  # intended | created | deleted | absent
    details: dict[str, Any] = field(default_factory=dict)  # bucket/key, knowledge base id, ...
    deleted_at: str = ""  # when cleanup (or the study) saw it gone
    name: str = ""  # the name it is created under, which finds it again after a lost answer
    hourly_usd: float = 0.0  # what it bills per hour while it lives (provisioned throughput)

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES

    def label(self) -> str:
        """How a message names it: type, ARN (or id, or name) and price per hour."""
        what = self.arn or self.id or self.name or self.key
        price = f", ${self.hourly_usd:,.2f}/h" if self.hourly_usd else ""
        return f"{self.type.replace('_', ' ')} {what} ({self.region}{price})"


class BedrockState:
    """Load, query and update one study's state file (thread-safe within one process)."""

    def __init__(self, path: Path, resources: list[Resource] | None = None, paid_calls: list[dict[str, Any]] | None = None):
        self.path = Path(path)
        self.resources: list[Resource] = resources or []
        self.paid_calls: list[dict[str, Any]] = paid_calls or []
        self._lock = threading.RLock()

    @property
    def study_dir(self) -> Path:
        return self.path.parent

    @classmethod
    def load(cls, study_dir: str | Path) -> "BedrockState":
        path = Path(study_dir) / STATE_FILE_NAME
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            resources = [Resource(**row) for row in data.get("resources", [])]
            paid_calls = list(data.get("paid_calls", []))
        except (json.JSONDecodeError, TypeError) as error:
            raise UserError(f"{path}: unreadable Bedrock state file ({error}); it lists AWS resources, fix it by hand") from None
        return cls(path, resources, paid_calls)

    def save(self) -> None:
        with self._lock:
            payload = {
                "version": STATE_VERSION,
                "updated_at": utc_now(),
                "resources": [asdict(r) for r in self.resources],
                "paid_calls": self.paid_calls,
            }
            # fsync: the file is the only record of what bills by the hour; a power cut must not lose it
            write_text_atomic(self.path, json.dumps(payload, indent=2, sort_keys=True), fsync=True)

    def record(self, resource: Resource) -> Resource:
        """Append a resource and write the file at once. A live resource of the same type and
        client token already listed is the same resource (AWS makes one per token): the listed
        entry is returned and nothing is added. Nothing listed is ever replaced or dropped."""
        with self._lock:
            if resource.client_token:
                for known in self.resources:
                    if known.type == resource.type and known.client_token == resource.client_token and known.live:
                        return known
            self.resources.append(resource)
            self.save()
        return resource

    def intend(self, resource: Resource) -> Resource:
        """Write a resource down before its create call (status intended), or return the live
        entry already listed under its token (a rerun after a lost answer)."""
        resource.status = INTENDED
        return self.record(resource)

    def confirm(self, resource: Resource, **changes: Any) -> Resource:
        """The create call answered (or the account lists it): it exists."""
        return self.update(resource, status=CREATED, **changes)

    def mark_absent(self, resource: Resource) -> Resource:
        """The account never made it (its create was refused, or nothing with its name exists)."""
        return self.update(resource, status=ABSENT, deleted_at=utc_now())

    def mark_deleted(self, resource: Resource) -> Resource:
        return self.update(resource, status=DELETED, deleted_at=utc_now())

    def update(self, resource: Resource, **changes: Any) -> Resource:
        with self._lock:
            for name, value in changes.items():
                setattr(resource, name, value)
            self.save()
        return resource

    def record_paid_call(self, what: str, cost_usd: float) -> None:
        """A call paid (or maybe paid: its answer never came) whose cost the store does not hold."""
        with self._lock:
            self.paid_calls.append({"what": what, "cost_usd": cost_usd, "at": utc_now()})
            self.save()

    def find(self, type_: str, key: str | None = None, client_token: str | None = None, include_deleted: bool = False) -> Resource | None:
        """The latest entry of this type (and key, and token) that is still live."""
        for resource in reversed(self.resources):
            if resource.type != type_ or (not resource.live and not include_deleted):
                continue
            if key is not None and resource.key != key:
                continue
            if client_token is not None and resource.client_token != client_token:
                continue
            return resource
        return None

    def live(self) -> list[Resource]:
        """Resources intended or created and not yet deleted, in cleanup order."""
        rank = {type_: index for index, type_ in enumerate(DELETE_ORDER)}
        alive = [r for r in self.resources if r.live]
        return sorted(alive, key=lambda r: rank.get(r.type, len(rank)))

    def live_hosting(self, model_arn: str | None = None) -> list[Resource]:
        """Live deployments and throughputs (of one custom model, if given)."""
        return [r for r in self.live() if r.type in HOSTING_TYPES and (model_arn is None or r.details.get("model_arn") == model_arn)]

    def all_of(self, type_: str, key: str | None = None) -> list[Resource]:
        """Every entry of this type (and key), deleted ones included, oldest first."""
        return [r for r in self.resources if r.type == type_ and (key is None or r.key == key)]
