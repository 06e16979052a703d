"""Pydantic models of what the ledger stores, and the field rules they enforce.

The rules are the single definition of a valid record. `ledger.normalize` has a
faster path for clean records that must accept and reject exactly what these
models do (a test feeds the same cases through both).

Rules that are decisions rather than facts of JSON:

- Counts are JSON integers; a string such as ``"9"`` is rejected, not coerced.
- ``divergences_detected`` that disagrees with the listed divergences is
  rejected, because neither number can be trusted over the other. When the list
  is absent the count is kept; when the count is absent the list's length is used.
- ``cost_savings`` is read as the IEEE double its JSON number denotes (as the
  SDK produced it), written in its shortest decimal form and rounded half away
  from zero to micro-dollars (6 decimals), so the SDK's ``0.09000000000000001``
  is stored as ``0.090000``. DuckDB's cast from text to DECIMAL rounds the same
  way, so the SQL validation path stores the same amount.
- Run ids are text of 1 to 256 characters after trimming surrounding white
  space. A JSON number becomes its exact decimal text.
- Timestamps: see `parse_timestamp`.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

STATUSES = ("success", "partial", "failed")
RUN_ID_MAX_LENGTH = 256
DEPLOYMENT_MAX_LENGTH = 128
MONEY_PLACES = Decimal("0.000001")
MONEY_LIMIT = Decimal("1000000000")  # per submission; DECIMAL(18,6) holds up to 10**12
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Epoch numbers below this are seconds, from it up to EPOCH_MS_LIMIT milliseconds.
# 1e11 seconds is the year 5138 and 1e11 milliseconds is March 1973, so both
# sides of the boundary are far outside the accepted range of 2000-2100.
EPOCH_SECONDS_LIMIT = 100_000_000_000
EPOCH_MS_LIMIT = 100_000_000_000_000

ZONELESS_FLAG = "submitted_at had no time zone and was taken as UTC"
NO_TIMESTAMP_FLAG = "record had no timestamp, so the ingest time was used"


class FieldError(ValueError):
    """A field of a record failed a rule; carries the field name and the value."""

    def __init__(self, field: str, value: Any, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


def shorten(value: Any, limit: int = 80) -> str:
    """Return the value as text for a message, cut to `limit` characters."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, float) and not math.isfinite(value):
        text = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    elif isinstance(value, Decimal):
        text = str(value)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


MISSING_HINTS = {
    "run_id": "give it in the record, or in the file name as in results_run-demo-1.json",
    "status": "every replay result needs one of success, partial, failed",
}


def first_field_error(error: ValidationError, prefix: str = "") -> FieldError:
    """Return the first failure of a pydantic validation as a FieldError with its full field path."""
    detail = error.errors(include_url=False)[0]
    cause = (detail.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return FieldError(prefix + cause.field, cause.value, cause.reason)
    where = prefix + ".".join(str(part) for part in detail["loc"])
    if detail["type"] == "missing":
        hint = MISSING_HINTS.get(where, "every replay result needs it")
        return FieldError(where, None, f"is missing; {hint}")
    return FieldError(where, detail.get("input"), detail["msg"])


def is_json_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_json_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def parse_count(field: str, value: Any) -> int:
    """Return a non-negative JSON integer count, or raise FieldError."""
    if not is_json_integer(value):
        if isinstance(value, str):
            reason = f"must be a JSON integer, got the string {shorten(value)!r}; write it without quotes"
        else:
            reason = f"must be a non-negative JSON integer, got {shorten(value)}"
        raise FieldError(field, value, reason)
    if value < 0:
        raise FieldError(field, value, f"must not be negative, got {value}")
    if value > 2**62:
        raise FieldError(field, value, f"is too large to be a count: {shorten(value)}")
    return value


def is_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Decimal):
        return value.is_finite()
    return is_json_integer(value)


def parse_money(field: str, value: Any) -> Decimal:
    """Return a USD amount rounded half away from zero to micro-dollars, or raise FieldError."""
    if isinstance(value, str) or not is_json_number(value):
        value_text = repr(shorten(value)) if isinstance(value, str) else shorten(value)
        raise FieldError(field, value, f"must be a JSON number of US dollars, got {value_text}")
    # A JSON number is read as the IEEE double it denotes, as the SDK produced it, so the
    # same text gives the same amount whichever parser read it.
    double = float(value) if not is_json_integer(value) else value
    if not is_finite(double):
        raise FieldError(field, value, f"must be a finite number, got {shorten(value)}")
    amount = Decimal(repr(double)) if isinstance(double, float) else Decimal(double)
    if amount < 0:
        raise FieldError(field, value, f"must not be negative, got {shorten(value)}")
    if amount >= MONEY_LIMIT:
        raise FieldError(field, value, f"is implausibly large for one replay: {shorten(value)} USD")
    return amount.quantize(MONEY_PLACES, rounding=ROUND_HALF_UP)


def parse_run_id(field: str, value: Any) -> str:
    """Return a run id as text: strings trimmed, JSON numbers as their exact decimal text."""
    if is_json_integer(value):
        text = str(value)
    elif isinstance(value, Decimal) and value.is_finite():
        text = str(value)
    elif isinstance(value, float) and math.isfinite(value):
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise FieldError(field, value, f"must be text or a number, got {shorten(value)}")
    if not text:
        raise FieldError(field, value, "must not be empty; give each replay's run id")
    if len(text) > RUN_ID_MAX_LENGTH:
        raise FieldError(field, value, f"is {len(text)} characters long, at most {RUN_ID_MAX_LENGTH} are allowed")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise FieldError(field, value, "must not contain control characters")
    return text


def parse_deployment(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FieldError(field, value, f"must be non-empty text, got {shorten(value)!r}")
    text = value.strip()
    if len(text) > DEPLOYMENT_MAX_LENGTH:
        raise FieldError(field, value, f"is longer than {DEPLOYMENT_MAX_LENGTH} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise FieldError(field, value, "must not contain control characters")
    return text


_ISO_SPACE = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d)")


_NUMBER_TEXT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def number_from_text(value: Any) -> Any:
    """Return text that is a plain decimal number as that number (int or Decimal), and any other value unchanged.

    For times typed as text, in command options and CSV cells, so that epoch
    seconds work there. A record's JSON string of digits is still rejected,
    because records do not go through this.
    """
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        text = value.strip()
        return Decimal(text) if "." in text else int(text)
    return value


def parse_timestamp(field: str, value: Any) -> tuple[datetime, bool]:
    """Return (instant in UTC, was_zoneless) for a timestamp, or raise FieldError.

    Accepted: ISO-8601 text with ``Z`` or an offset; ISO-8601 text with no zone,
    taken as UTC and reported as zone-less (the same rule for files and HTTP
    posts); a JSON number of epoch seconds (below 1e11) or epoch milliseconds
    (1e11 up to 1e14). The unit is decided by that magnitude rule alone, and the
    result must fall between 2000-01-01 and 2100-01-01.
    """
    zoneless = False
    if isinstance(value, str):
        text = _ISO_SPACE.sub(r"\1T\2", value.strip())
        try:
            instant = datetime.fromisoformat(text)
        except ValueError:
            raise FieldError(
                field, value, f"is not an ISO-8601 timestamp: {shorten(value)!r}; use e.g. 2026-03-01T10:00:00Z"
            ) from None
        if instant.tzinfo is None:
            zoneless = True
            instant = instant.replace(tzinfo=timezone.utc)
        try:
            instant = instant.astimezone(timezone.utc)
        except OverflowError:  # an offset pushes year 1 or 9999 past the calendar
            raise FieldError(field, value, f"is {_OUT_OF_RANGE}") from None
    elif is_json_number(value):
        if not is_finite(value):
            raise FieldError(field, value, f"must be a finite epoch number, got {shorten(value)}")
        exact = Decimal(value) if is_json_integer(value) else Decimal(repr(float(value)))
        magnitude = abs(value)
        if magnitude < EPOCH_SECONDS_LIMIT:
            micros = exact * 1_000_000
        elif magnitude < EPOCH_MS_LIMIT:
            micros = exact * 1_000
        else:
            raise FieldError(
                field, value, f"is too large for epoch seconds or milliseconds: {shorten(value)}"
            )
        try:
            instant = EPOCH + timedelta(microseconds=int(micros.to_integral_value(ROUND_HALF_EVEN)))
        except OverflowError:  # a large negative number lands before year 1
            raise FieldError(field, value, f"is {_OUT_OF_RANGE}") from None
    else:
        raise FieldError(field, value, f"must be ISO-8601 text or an epoch number, got {shorten(value)!r}")
    if not EARLIEST <= instant < LATEST:
        raise FieldError(field, value, f"is {instant.isoformat()}, {_OUT_OF_RANGE}")
    return instant, zoneless


_OUT_OF_RANGE = "outside the accepted range 2000-01-01 to 2100-01-01"


class Divergence(BaseModel):
    """One divergence as the SDK reports it. Unknown keys are kept."""

    model_config = ConfigDict(extra="allow")

    type: str
    index: int | None = None
    action: str | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _type_is_text(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise FieldError("type", value, f"must be non-empty text, got {shorten(value)!r}")
        return value

    @field_validator("index", mode="before")
    @classmethod
    def _index_is_count(cls, value: Any) -> int | None:
        return None if value is None else parse_count("index", value)

    @field_validator("action", mode="before")
    @classmethod
    def _action_is_text(cls, value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        raise FieldError("action", value, f"must be text, got {shorten(value)!r}")


class InputMismatch(Divergence):
    """A replayed action was called with other inputs than recorded."""

    type: Literal["input_mismatch"]
    expected_inputs: Any = None
    actual_inputs: Any = None


class ActionMismatch(Divergence):
    """The replay called another action than the recording had at this index."""

    type: Literal["action_mismatch"]
    expected: Any = None
    actual: Any = None


def divergence_model(raw: dict) -> type[Divergence]:
    kind = raw.get("type")
    if kind == "input_mismatch":
        return InputMismatch
    if kind == "action_mismatch":
        return ActionMismatch
    return Divergence


class ReplayResult(BaseModel):
    """The replay summary the SDK posts to ``/api/v1/replay/{run_id}/results``."""

    model_config = ConfigDict(extra="allow")

    status: Literal["success", "partial", "failed"]
    actions_replayed: int
    actions_total: int
    divergences_detected: int | None = None
    divergences: list[Divergence] | None = None
    cost_savings: Decimal

    @field_validator("status", mode="before")
    @classmethod
    def _status_known(cls, value: Any) -> str:
        if value not in STATUSES:
            raise FieldError("status", value, f"must be one of success, partial, failed; got {shorten(value)!r}")
        return value

    @field_validator("actions_replayed", "actions_total", "divergences_detected", mode="before")
    @classmethod
    def _counts(cls, value: Any, info) -> int | None:
        if value is None and info.field_name == "divergences_detected":
            return None
        return parse_count(info.field_name, value)

    @field_validator("cost_savings", mode="before")
    @classmethod
    def _money(cls, value: Any) -> Decimal:
        return parse_money("cost_savings", value)

    @field_validator("divergences", mode="before")
    @classmethod
    def _divergence_kinds(cls, value: Any) -> list[Divergence] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise FieldError("divergences", value, f"must be a list, got {shorten(value)!r}")
        parsed = []
        for position, item in enumerate(value):
            if not isinstance(item, dict):
                raise FieldError(f"divergences[{position}]", item, "must be an object")
            try:
                parsed.append(divergence_model(item).model_validate(item))
            except ValidationError as error:
                raise first_field_error(error, f"divergences[{position}].") from None
        return parsed

    @model_validator(mode="after")
    def _consistent(self) -> "ReplayResult":
        if self.actions_replayed > self.actions_total:
            raise FieldError(
                "actions_replayed",
                self.actions_replayed,
                f"is {self.actions_replayed}, more than actions_total {self.actions_total}",
            )
        listed = None if self.divergences is None else len(self.divergences)
        if self.divergences_detected is not None and listed is not None and self.divergences_detected != listed:
            raise FieldError(
                "divergences_detected",
                self.divergences_detected,
                f"is {self.divergences_detected} but {listed} divergences are listed; fix either so they agree",
            )
        return self

    @property
    def divergence_count(self) -> int:
        if self.divergences is not None:
            return len(self.divergences)
        return self.divergences_detected or 0


class Submission(ReplayResult):
    """A stored replay submission: the SDK's summary plus run, deployment and time.

    Platform listings name fields differently; `ledger.normalize.fold_keys` maps
    those aliases onto these names before validation.
    """

    id: str | None = Field(default=None, description="the platform's submission id, when the source has one")
    run_id: str
    deployment: str | None = None
    submitted_at: datetime | None = None
    zoneless: bool = False

    @field_validator("id", mode="before")
    @classmethod
    def _platform_id(cls, value: Any) -> str | None:
        return None if value is None else parse_run_id("id", value)

    @field_validator("run_id", mode="before")
    @classmethod
    def _run_id(cls, value: Any) -> str:
        return parse_run_id("run_id", value)

    @field_validator("deployment", mode="before")
    @classmethod
    def _deployment(cls, value: Any) -> str | None:
        return None if value is None else parse_deployment("deployment", value)

    @model_validator(mode="before")
    @classmethod
    def _timestamp(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("submitted_at") is not None:
            instant, zoneless = parse_timestamp("submitted_at", data["submitted_at"])
            data = {**data, "submitted_at": instant, "zoneless": zoneless}
        return data


class DeployMarker(BaseModel):
    """A deploy of one deployment: the line analysts compare divergence rates around."""

    deployment: str
    version: str
    deployed_at: datetime
    note: str = ""

    @field_validator("deployment", mode="before")
    @classmethod
    def _deployment(cls, value: Any) -> str:
        return parse_deployment("deployment", value)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str:
        if is_json_number(value):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise FieldError("version", value, f"must be non-empty text, got {shorten(value)!r}")
        return value.strip()

    @field_validator("deployed_at", mode="before")
    @classmethod
    def _deployed_at(cls, value: Any) -> datetime:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return parse_timestamp("deployed_at", value)[0]

    @field_validator("note", mode="before")
    @classmethod
    def _note(cls, value: Any) -> str:
        return "" if value is None else str(value)
