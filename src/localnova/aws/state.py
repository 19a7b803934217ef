"""The state file: every AWS resource this tool creates, written the moment it exists.

`runs/<study>/bedrock_state.json` lists each resource with its type, id, ARN, region, the time
it was created (and deleted) and the client request token that created it. Entries are only
ever appended: recording a resource whose token is already listed returns the listed entry, and
nothing replaces a live entry, so a second throughput or custom model for the same study model
(after the data, hyperparameters or units changed) sits beside the first and cleanup deletes
both. An entry leaves the live list only when it is marked deleted, and stays in the file with
the time it was deleted, so hours billed can be counted from creation to deletion.

A rerun looks a resource up here (by its token) before creating anything, so an interrupted
run resumes without making a second copy; `localnova bedrock cleanup` deletes what it lists.
Writes go to a temporary file that is renamed over the old one, so a kill mid-write leaves the
previous state whole. No credential is ever written here: only identifiers that AWS returns.
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
STATE_VERSION = 1

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
# Resources that bill for every started hour while they exist.
HOURLY_TYPES = ("provisioned_throughput",)
# Resources a custom model cannot be deleted under: they must be gone first.
HOSTING_TYPES = ("provisioned_throughput", "custom_model_deployment")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Resource:
    type: str  # one of DELETE_ORDER
    key: str  # what the study calls it, e.g. "custom_model:nova-micro"
    region: str
    id: str = ""  # the API's id or name
    arn: str = ""
    client_token: str = ""
    created_at: str = field(default_factory=utc_now)
    status: str = "created"  # created | deleted
    details: dict[str, Any] = field(default_factory=dict)  # bucket/key, knowledge base id, ...
    deleted_at: str = ""  # when cleanup (or the study) saw it gone

    @property
    def live(self) -> bool:
        return self.status != "deleted"


class BedrockState:
    """Load, query and update one study's state file (thread-safe within one process)."""

    def __init__(self, path: Path, resources: list[Resource] | None = None):
        self.path = Path(path)
        self.resources: list[Resource] = resources or []
        self._lock = threading.Lock()

    @classmethod
    def load(cls, study_dir: str | Path) -> "BedrockState":
        path = Path(study_dir) / STATE_FILE_NAME
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            resources = [Resource(**row) for row in data.get("resources", [])]
        except (json.JSONDecodeError, TypeError) as error:
            raise UserError(f"{path}: unreadable Bedrock state file ({error}); it lists AWS resources, fix it by hand") from None
        return cls(path, resources)

    def save(self) -> None:
        payload = {"version": STATE_VERSION, "updated_at": utc_now(), "resources": [asdict(r) for r in self.resources]}
        # fsync: the file is the only record of what bills by the hour; a power cut must not lose it
        write_text_atomic(self.path, json.dumps(payload, indent=2, sort_keys=True), fsync=True)

    def record(self, resource: Resource) -> Resource:
        """Append a resource and write the file at once. A resource of the same type and client
        token already listed is the same resource (AWS made it once for that token): the listed
        entry is returned and nothing is added. Nothing listed is ever replaced or dropped."""
        with self._lock:
            if resource.client_token:
                for known in self.resources:
                    if known.type == resource.type and known.client_token == resource.client_token and known.live:
                        return known
            self.resources.append(resource)
            self.save()
        return resource

    def mark_deleted(self, resource: Resource) -> Resource:
        return self.update(resource, status="deleted", deleted_at=utc_now())

    def update(self, resource: Resource, **changes: Any) -> Resource:
        with self._lock:
            for name, value in changes.items():
                setattr(resource, name, value)
            self.save()
        return resource

    def find(self, type_: str, key: str | None = None, client_token: str | None = None, include_deleted: bool = False) -> Resource | None:
        """The latest entry of this type (and key, and token) that is still live."""
        for resource in reversed(self.resources):
            if resource.type != type_ or (resource.status == "deleted" and not include_deleted):
                continue
            if key is not None and resource.key != key:
                continue
            if client_token is not None and resource.client_token != client_token:
                continue
            return resource
        return None

    def live(self) -> list[Resource]:
        """Resources not yet deleted, in cleanup order."""
        rank = {type_: index for index, type_ in enumerate(DELETE_ORDER)}
        alive = [r for r in self.resources if r.live]
        return sorted(alive, key=lambda r: rank.get(r.type, len(rank)))

    def all_of(self, type_: str, key: str | None = None) -> list[Resource]:
        """Every entry of this type (and key), deleted ones included, oldest first."""
        return [r for r in self.resources if r.type == type_ and (key is None or r.key == key)]
