"""S3 objects the study puts: written to the state file before the put, confirmed after.

A put is idempotent (the same key and body make the same object), so an entry left intended by
a run killed between the intent and the answer is simply put again: nothing is made twice."""

from __future__ import annotations

import hashlib

from localnova.aws.clients import AwsClients, call_with_backoff
from localnova.aws.state import CREATED, BedrockState, Resource


def put_object_once(state: BedrockState, clients: AwsClients, region: str, bucket: str, key: str, body: bytes) -> None:
    """Put one object unless the state lists it with the same content. A new upload over a key
    is the same resource with new content, so its entry is reused, never duplicated."""
    digest = hashlib.sha256(body).hexdigest()
    uri = f"s3://{bucket}/{key}"
    known = state.find("s3_object", key=uri)
    if known is not None and known.status == CREATED and known.details.get("sha") == digest:
        return
    entry = known or state.intend(
        Resource("s3_object", uri, region, id=key, name=key, client_token=uri, details={"bucket": bucket, "key": key})
    )
    call_with_backoff(clients.s3.put_object, Bucket=bucket, Key=key, Body=body)
    state.confirm(entry, details={**entry.details, "sha": digest, "bytes": len(body)})
