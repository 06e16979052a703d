"""A posted replay result, validated into a submission to store and the response its poster gets.

The SDK posts the summary of one replay to ``/api/v1/replay/{run_id}/results``
without a run id, timestamp, deployment or id in the body. The receiver takes
the run id from the path, the deployment from the API key, and assigns the id
and ``submitted_at`` (its own clock, UTC). A body that carries a timestamp of
its own (``submitted_at``, ``created_at`` or ``timestamp``) keeps it, under the
same rule as files: a zone-less one is taken as UTC and flagged. A body that
names a deployment or an id is rejected rather than silently overridden.

With an ``Idempotency-Key`` header the id derives from (deployment, key), so a
retried post maps onto the first one and is stored once.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from ledger.batch_writer import SubmissionPost
from ledger.models import EPOCH, MISSING_HINTS, NO_TIMESTAMP_FLAG, FieldError, Submission, parse_run_id, shorten
from ledger.normalize import (
    Context,
    NormalizedSubmission,
    RecordRejected,
    fast_normalize,
    fold_keys,
    json_dumps,
    model_normalize,
    parse_exact,
)
from ledger.queries.history import StoredDivergenceRow, submission_document, timestamp_text

MAX_DIVERGENCES = 1_000
MAX_DIVERGENCE_BYTES = 64 * 1024
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# The keys the SDK's body has; a body with only these takes the fast path.
_SDK_KEYS = frozenset({"status", "actions_replayed", "actions_total", "divergences_detected", "divergences",
                       "cost_savings"})
# Namespace of the ids derived from (deployment, Idempotency-Key).
_IDEMPOTENT_IDS = uuid.UUID("6f1d3c52-5b7e-4b8e-9a55-2f0c1d7e4a10")


class PostRejected(Exception):
    """A posted body or its headers failed validation; carries (field, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))
        self.errors = errors


@dataclass(frozen=True)
class PostLimits:
    """Caps on one posted result beyond its size in bytes."""

    max_divergences: int = MAX_DIVERGENCES
    max_divergence_bytes: int = MAX_DIVERGENCE_BYTES


def check_idempotency_key(key: str | None) -> str | None:
    """Return the key when it is 1-255 printable ASCII characters; raise PostRejected otherwise."""
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH or not all(32 <= ord(ch) < 127 for ch in key):
        raise PostRejected([(
            "Idempotency-Key",
            f"must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters, got {shorten(key, 40)!r}",
        )])
    return key


def submission_id_for(deployment: str, idempotency_key: str | None) -> str:
    """Return a new random id, or the id an Idempotency-Key of this deployment always maps to."""
    if idempotency_key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_IDEMPOTENT_IDS, f"{deployment}\x00{idempotency_key}"))


def build_post(
    run_id_text: str,
    body: bytes,
    *,
    deployment: str,
    idempotency_key: str | None,
    request_id: str,
    received_at_us: int,
    limits: PostLimits,
    submission_id: str | None = None,
) -> SubmissionPost:
    """Validate a posted body; return the job for the writer. Raises PostRejected listing what failed.

    `submission_id` replays a journaled post under the id it was first given.
    """
    try:
        run_id = parse_run_id("run_id", run_id_text)
    except FieldError as error:
        raise PostRejected([("run_id", f"(in the path) {error.reason}")]) from None
    idempotency_key = check_idempotency_key(idempotency_key)
    submission_id = submission_id or submission_id_for(deployment, idempotency_key)
    context = Context(location=f"POST /api/v1/replay/{run_id}/results (request {request_id})", anchor=request_id,
                      run_id_hint=run_id, deployment=deployment, ingest_time_us=received_at_us)
    submission = _fast_path(body, submission_id, context, limits)
    if submission is None:
        submission = _model_path(body, run_id, submission_id, context, limits)
    response = orjson.dumps(submission_document(
        submission_id=submission_id, run_id=submission.run_id, deployment=submission.deployment,
        submitted_at=submission.submitted_at, status=submission.status,
        actions_replayed=submission.actions_replayed, actions_total=submission.actions_total,
        divergences_detected=submission.divergences_detected, cost_savings=submission.cost_savings,
        extra_json=submission.extra_json,
        divergences=[StoredDivergenceRow(item.type, item.expected_json, item.actual_json, item.detail_json)
                     for item in submission.divergences],
    ))
    request_hash = None
    if idempotency_key is not None:
        # The bytes as sent: a retry sends the same bytes, and a different body under the
        # same key is a conflict even where it would store the same values.
        request_hash = hashlib.sha256(run_id.encode() + b"\x00" + body).hexdigest()
    return SubmissionPost(submission, response, request_id, idempotency_key, request_hash)


def _fast_path(body: bytes, submission_id: str, context: Context, limits: PostLimits) -> NormalizedSubmission | None:
    """Validate the SDK's usual body with `fast_normalize`; None defers anything else to `_model_path`."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(value) is not dict or not value.keys() <= _SDK_KEYS:
        return None
    divergences = value.get("divergences")
    if isinstance(divergences, list) and (
        len(divergences) > limits.max_divergences or len(body) > limits.max_divergence_bytes
    ):
        return None
    submission = fast_normalize(body, context)
    if submission is None or NO_TIMESTAMP_FLAG not in submission.flags:
        return None
    # The body had no time: the arrival time is its submission time, an assignment and
    # not a gap to flag, and the id (not the file name) is its identity.
    submission.flags.remove(NO_TIMESTAMP_FLAG)
    submission.anchor = None
    submission.platform_id = submission_id
    return submission


def _model_path(body: bytes, run_id: str, submission_id: str, context: Context, limits: PostLimits) -> NormalizedSubmission:
    """Validate any body exactly through the models; raise PostRejected listing what failed."""
    try:
        value = parse_exact(body, "request body")
    except RecordRejected as error:
        raise PostRejected([("body", error.reason)]) from None
    if not isinstance(value, dict):
        raise PostRejected([("body", f"must be a JSON object (a replay result), got {type(value).__name__}")])
    try:
        fields, _ = fold_keys(value)
    except RecordRejected as error:
        raise PostRejected([(error.field, error.reason)]) from None
    _check_receiver_fields(fields, run_id)
    _check_divergence_caps(fields.get("divergences"), limits)

    record = dict(value)
    record["id"] = submission_id
    if "run_id" not in fields:
        record["run_id"] = run_id
    if "submitted_at" not in fields:
        record["submitted_at"] = timestamp_text(EPOCH + timedelta(microseconds=context.ingest_time_us))
    try:
        return model_normalize(record, context)
    except RecordRejected:
        raise PostRejected(_all_errors(record)) from None


def _check_receiver_fields(fields: dict[str, Any], run_id: str) -> None:
    errors = []
    if "deployment" in fields:
        errors.append(("deployment", "is set by the API key the post is made with; remove it from the body"))
    if "id" in fields:
        errors.append(("id", "is assigned by the receiver; to make a retried post count once, "
                             "send an Idempotency-Key header instead"))
    if "run_id" in fields:
        try:
            body_run = parse_run_id("run_id", fields["run_id"])
        except FieldError as error:
            errors.append(("run_id", error.reason))
        else:
            if body_run != run_id:
                errors.append(("run_id", f"is {shorten(body_run)!r} in the body but the path names {shorten(run_id)!r}"))
    if errors:
        raise PostRejected(errors)


def _check_divergence_caps(divergences: Any, limits: PostLimits) -> None:
    if not isinstance(divergences, list):
        return
    if len(divergences) > limits.max_divergences:
        raise PostRejected([(
            "divergences",
            f"lists {len(divergences):,} divergences, at most {limits.max_divergences:,} are allowed in one post",
        )])
    for position, item in enumerate(divergences):
        size = len(json_dumps(item).encode())
        if size > limits.max_divergence_bytes:
            raise PostRejected([(
                f"divergences[{position}]",
                f"is {size:,} bytes of JSON, at most {limits.max_divergence_bytes:,} are allowed for one divergence",
            )])


def _all_errors(record: dict) -> list[tuple[str, str]]:
    """Return every failure of a record, not only the first, as (field, message) pairs."""
    try:
        fields, _ = fold_keys(record)
        Submission.model_validate(fields)
    except RecordRejected as error:
        return [(error.field, error.reason)]
    except FieldError as error:
        return [(error.field, error.reason)]
    except ValidationError as error:
        found = []
        for detail in error.errors(include_url=False):
            cause = (detail.get("ctx") or {}).get("error")
            where = ".".join(str(part) for part in detail["loc"])
            if isinstance(cause, FieldError):
                found.append((cause.field, cause.reason))
            elif detail["type"] == "missing":
                found.append((where, f"is missing; {MISSING_HINTS.get(where, 'every replay result needs it')}"))
            else:
                found.append((where, detail["msg"]))
        return found
    # The models accept it, so the failure was one of the normalizer's own checks.
    try:
        model_normalize(record, Context(location="request body", anchor=""))
    except RecordRejected as error:
        return [(error.field, error.reason)]
    return [("body", "was rejected")]
