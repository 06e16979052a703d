"""Tests for ledger.models: every field rule, with the message that names the field and the value."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from ledger.models import (
    ActionMismatch,
    DeployMarker,
    Divergence,
    FieldError,
    InputMismatch,
    ReplayResult,
    Submission,
    first_field_error,
    number_from_text,
    parse_count,
    parse_money,
    parse_run_id,
    parse_timestamp,
)

TEN_UTC = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


def submission(**fields) -> dict:
    """Return a valid submission as a dict, with `fields` replacing or adding keys."""
    record = {
        "run_id": "run-1",
        "status": "success",
        "actions_replayed": 3,
        "actions_total": 3,
        "divergences_detected": 0,
        "divergences": [],
        "cost_savings": 0.25,
        "submitted_at": "2026-03-01T10:00:00Z",
    }
    record.update(fields)
    return record


def without(name: str) -> dict:
    record = submission()
    del record[name]
    return record


def failure(record: dict) -> FieldError:
    """Validate a record that must fail and return its first failure as a FieldError."""
    with pytest.raises(ValidationError) as caught:
        Submission.model_validate(record)
    return first_field_error(caught.value)


# --- status -------------------------------------------------------------------


@pytest.mark.parametrize("status", ["success", "partial", "failed"])
def test_status_known_accepted(status):
    assert Submission.model_validate(submission(status=status)).status == status


@pytest.mark.parametrize("status", ["done", "Success", "", None, 1])
def test_status_unknown_rejected(status):
    error = failure(submission(status=status))
    assert error.field == "status"
    assert error.value == status


def test_status_message_names_value():
    error = failure(submission(status="done"))
    assert str(error) == "status: must be one of success, partial, failed; got 'done'"


def test_status_missing_rejected():
    error = failure(without("status"))
    assert str(error) == "status: is missing; every replay result needs one of success, partial, failed"


# --- counts ---------------------------------------------------------------------


def test_count_string_rejected():
    error = failure(submission(actions_total="9"))
    assert error.field == "actions_total"
    assert error.value == "9"
    assert str(error) == "actions_total: must be a JSON integer, got the string '9'; write it without quotes"


@pytest.mark.parametrize("value", [3.0, Decimal("3.0")], ids=["float", "exact-decimal"])
def test_count_fractional_form_rejected(value):
    error = failure(submission(actions_total=value))
    assert error.field == "actions_total"
    assert error.value == value
    assert str(error) == "actions_total: must be a non-negative JSON integer, got 3.0"


def test_count_boolean_rejected():
    error = failure(submission(actions_replayed=True))
    assert error.field == "actions_replayed"
    assert error.value is True
    assert str(error) == "actions_replayed: must be a non-negative JSON integer, got True"


@pytest.mark.parametrize("name", ["actions_replayed", "actions_total", "divergences_detected"])
def test_count_negative_rejected(name):
    record = submission(**{name: -1})
    if name == "divergences_detected":
        del record["divergences"]
    error = failure(record)
    assert error.field == name
    assert error.value == -1
    assert str(error) == f"{name}: must not be negative, got -1"


def test_count_beyond_range_rejected():
    with pytest.raises(FieldError) as caught:
        parse_count("actions_total", 2**62 + 1)
    assert caught.value.field == "actions_total"
    assert "too large" in caught.value.reason


def test_count_zero_accepted():
    model = Submission.model_validate(submission(actions_replayed=0, actions_total=0))
    assert (model.actions_replayed, model.actions_total) == (0, 0)


def test_replayed_above_total_rejected():
    error = failure(submission(actions_replayed=5, actions_total=3))
    assert error.field == "actions_replayed"
    assert error.value == 5
    assert str(error) == "actions_replayed: is 5, more than actions_total 3"


def test_replayed_equal_total_accepted():
    model = Submission.model_validate(submission(actions_replayed=4, actions_total=4))
    assert model.actions_replayed == model.actions_total == 4


# --- divergences_detected against the list --------------------------------------------


def test_divergence_count_disagreeing_rejected():
    error = failure(submission(divergences_detected=2, divergences=[]))
    assert error.field == "divergences_detected"
    assert error.value == 2
    assert str(error) == "divergences_detected: is 2 but 0 divergences are listed; fix either so they agree"


def test_divergence_count_kept_without_list():
    record = submission(status="partial", divergences_detected=4)
    del record["divergences"]
    model = Submission.model_validate(record)
    assert model.divergences is None
    assert model.divergence_count == 4


def test_divergence_count_from_list_length():
    listed = [{"type": "action_mismatch", "expected": "a", "actual": "b", "index": 0}] * 3
    record = submission(status="partial", divergences=listed)
    del record["divergences_detected"]
    model = Submission.model_validate(record)
    assert model.divergences_detected is None
    assert model.divergence_count == 3


def test_divergence_count_agreeing_accepted():
    listed = [{"type": "action_mismatch", "expected": "a", "actual": "b", "index": 0}]
    model = Submission.model_validate(submission(status="partial", divergences_detected=1, divergences=listed))
    assert model.divergence_count == 1


# --- divergence kinds -----------------------------------------------------------------


def test_divergence_kinds_by_type():
    listed = [
        {"type": "input_mismatch", "action": "fetch", "index": 0, "expected_inputs": {"a": 1}, "actual_inputs": {"a": 2}},
        {"type": "action_mismatch", "expected": "summarize", "actual": "fetch", "index": 1},
        {"type": "timeout", "index": 2, "waited_ms": 1500},
    ]
    model = Submission.model_validate(submission(status="partial", divergences=listed, divergences_detected=3))
    kinds = [type(item) for item in model.divergences]
    assert kinds == [InputMismatch, ActionMismatch, Divergence]
    assert model.divergences[0].actual_inputs == {"a": 2}
    assert model.divergences[1].expected == "summarize"
    assert model.divergences[2].type == "timeout"
    assert model.divergences[2].model_extra == {"waited_ms": 1500}


def test_divergence_index_string_rejected():
    listed = [{"type": "action_mismatch", "expected": "a", "actual": "b", "index": "3"}]
    error = failure(submission(status="partial", divergences=listed, divergences_detected=1))
    assert error.field == "divergences[0].index"
    assert error.value == "3"


def test_divergence_without_type_rejected():
    error = failure(submission(status="partial", divergences=[{"index": 1}], divergences_detected=1))
    assert error.field == "divergences[0].type"
    assert str(error) == "divergences[0].type: is missing; every replay result needs it"


def test_divergence_not_object_rejected():
    error = failure(submission(status="partial", divergences=["oops"], divergences_detected=1))
    assert error.field == "divergences[0]"
    assert error.value == "oops"


# --- money ----------------------------------------------------------------------------


def test_money_sdk_float_exact():
    model = Submission.model_validate(submission(cost_savings=0.09000000000000001))
    assert model.cost_savings == Decimal("0.090000")
    assert str(model.cost_savings) == "0.090000"


def test_money_exact_decimal_input_same_as_float():
    assert parse_money("cost_savings", Decimal("0.09000000000000001")) == Decimal("0.090000")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0000005, "0.000001"), (0.0000025, "0.000003"), (0.0000014999, "0.000001"), (0.004, "0.004000"), (7, "7.000000")],
)
def test_money_rounds_half_up_to_micros(value, expected):
    assert str(parse_money("cost_savings", value)) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "cost_savings: must be a finite number, got NaN"),
        (float("inf"), "cost_savings: must be a finite number, got Infinity"),
        (Decimal("1E+999"), "cost_savings: must be a finite number, got 1E+999"),
        (-0.5, "cost_savings: must not be negative, got -0.5"),
        ("0.5", "cost_savings: must be a JSON number of US dollars, got '0.5'"),
        ("Infinity", "cost_savings: must be a JSON number of US dollars, got 'Infinity'"),
        (1e9, "cost_savings: is implausibly large for one replay: 1000000000.0 USD"),
    ],
    ids=["nan", "infinity", "overflow", "negative", "string", "string-infinity", "too-large"],
)
def test_money_invalid_rejected(value, message):
    error = failure(submission(cost_savings=value))
    assert error.field == "cost_savings"
    assert str(error) == message


def test_money_boolean_rejected():
    error = failure(submission(cost_savings=True))
    assert error.field == "cost_savings"
    assert error.value is True
    assert str(error) == "cost_savings: must be a JSON number of US dollars, got True"


def test_money_missing_rejected():
    error = failure(without("cost_savings"))
    assert error.field == "cost_savings"
    assert error.reason.startswith("is missing")


# --- run ids --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("run-1", "run-1"),
        ("  run-2\t", "run-2"),
        (Decimal("1.50"), "1.50"),
        (12345678901234567890123, "12345678901234567890123"),
        (42, "42"),
        ("r" * 256, "r" * 256),
    ],
    ids=["text", "trimmed", "decimal-number", "big-integer", "integer", "max-length"],
)
def test_run_id_accepted_as_text(value, expected):
    assert Submission.model_validate(submission(run_id=value)).run_id == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "run_id: must not be empty; give each replay's run id"),
        ("   ", "run_id: must not be empty; give each replay's run id"),
        ("r" * 257, "run_id: is 257 characters long, at most 256 are allowed"),
        ("run\n1", "run_id: must not contain control characters"),
        (None, "run_id: must be text or a number, got None"),
        (True, "run_id: must be text or a number, got True"),
        (["run-1"], "run_id: must be text or a number, got ['run-1']"),
    ],
    ids=["empty", "blank", "too-long", "control", "null", "boolean", "list"],
)
def test_run_id_invalid_rejected(value, message):
    error = failure(submission(run_id=value))
    assert error.field == "run_id"
    assert error.value == value
    assert str(error) == message


def test_run_id_missing_names_file_name_hint():
    error = failure(without("run_id"))
    assert str(error) == (
        "run_id: is missing; give it in the record, or in the file name as in results_run-demo-1.json"
    )


def test_platform_id_number_kept_exact():
    assert Submission.model_validate(submission(id=Decimal("7.10"))).id == "7.10"
    assert parse_run_id("id", 98765432109876543210) == "98765432109876543210"


# --- timestamps -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "zoneless"),
    [
        ("2026-03-01T10:00:00Z", False),
        ("2026-03-01T12:00:00+02:00", False),
        ("2026-03-01T05:00:00-05:00", False),
        ("2026-03-01 10:00:00+00:00", False),
        ("2026-03-01T10:00:00", True),
        (1772359200, False),
        (1772359200000, False),
        (Decimal("1772359200.0"), False),
    ],
    ids=["z", "plus-offset", "minus-offset", "space", "zoneless", "epoch-s", "epoch-ms", "epoch-s-decimal"],
)
def test_timestamp_forms_same_instant(value, zoneless):
    instant, was_zoneless = parse_timestamp("submitted_at", value)
    assert instant == TEN_UTC
    assert instant.tzinfo is not None
    assert was_zoneless is zoneless


def test_timestamp_fraction_of_second_kept():
    instant, _ = parse_timestamp("submitted_at", Decimal("1772359200.25"))
    assert instant == datetime(2026, 3, 1, 10, 0, 0, 250000, tzinfo=timezone.utc)
    instant, _ = parse_timestamp("submitted_at", 1772359200250)
    assert instant == datetime(2026, 3, 1, 10, 0, 0, 250000, tzinfo=timezone.utc)


def test_timestamp_zoneless_flagged_on_submission():
    model = Submission.model_validate(submission(submitted_at="2026-03-01T10:00:00"))
    assert model.submitted_at == TEN_UTC
    assert model.zoneless is True


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (99_999_999_999, "5138-11-16T09:46:39+00:00"),
        (100_000_000_000, "1973-03-03T09:46:40+00:00"),
        (0, "1970-01-01T00:00:00+00:00"),
        (946_684_799, "1999-12-31T23:59:59+00:00"),
        (4_102_444_800, "2100-01-01T00:00:00+00:00"),
        (1_772_359_200_000_000, None),
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00+00:00"),
        ("2603-03-01T10:00:00Z", "2603-03-01T10:00:00+00:00"),
    ],
    ids=["below-1e11-is-seconds", "1e11-is-ms", "zero", "before-2000", "2100", "microseconds", "iso-1970", "iso-2603"],
)
def test_timestamp_outside_range_rejected(value, shown):
    with pytest.raises(FieldError) as caught:
        parse_timestamp("submitted_at", value)
    assert caught.value.field == "submitted_at"
    assert caught.value.value == value
    if shown is None:
        assert caught.value.reason.startswith("is too large for epoch seconds or milliseconds")
    else:
        assert caught.value.reason == f"is {shown}, outside the accepted range 2000-01-01 to 2100-01-01"


def test_timestamp_range_edges_accepted():
    assert parse_timestamp("t", 946_684_800)[0] == datetime(2000, 1, 1, tzinfo=timezone.utc)
    assert parse_timestamp("t", 4_102_444_799)[0] == datetime(2099, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert parse_timestamp("t", 100_000_000_000 * 10)[0] == datetime(2001, 9, 9, 1, 46, 40, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", -99_999_999_999_999, 99_999_999_999_999.0],
    ids=["iso-year-1", "iso-year-9999", "epoch-ms-far-past", "epoch-ms-far-future"],
)
def test_timestamp_beyond_calendar_rejected(value):
    with pytest.raises(FieldError) as caught:
        parse_timestamp("submitted_at", value)
    assert caught.value.field == "submitted_at"
    assert "outside the accepted range 2000-01-01 to 2100-01-01" in caught.value.reason


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", "submitted_at: is not an ISO-8601 timestamp: 'yesterday'; use e.g. 2026-03-01T10:00:00Z"),
        ("1772359200", "submitted_at: is not an ISO-8601 timestamp: '1772359200'; use e.g. 2026-03-01T10:00:00Z"),
        (True, "submitted_at: must be ISO-8601 text or an epoch number, got 'True'"),
        (float("nan"), "submitted_at: must be a finite epoch number, got NaN"),
    ],
    ids=["word", "epoch-as-text", "boolean", "nan"],
)
def test_timestamp_invalid_message(value, message):
    with pytest.raises(FieldError) as caught:
        parse_timestamp("submitted_at", value)
    assert str(caught.value) == message


# --- unknown fields, deploy markers ----------------------------------------------------


def test_unknown_fields_kept():
    model = Submission.model_validate(submission(model="m-1", tags={"team": "search"}))
    assert model.model_extra == {"model": "m-1", "tags": {"team": "search"}}


def test_replay_result_sdk_body_valid():
    body = {
        "status": "failed",
        "actions_replayed": 4,
        "actions_total": 12,
        "divergences_detected": 1,
        "divergences": [{"type": "action_mismatch", "expected": "summarize", "actual": "fetch_data", "index": 3}],
        "cost_savings": 0.31,
    }
    result = ReplayResult.model_validate(body)
    assert result.divergence_count == 1
    assert result.cost_savings == Decimal("0.310000")


def test_deploy_marker_version_number_as_text():
    marker = DeployMarker.model_validate({"deployment": "prod", "version": 2, "deployed_at": "2026-03-01T00:00:00Z"})
    assert marker.version == "2"
    assert marker.deployed_at == datetime(2026, 3, 1, tzinfo=timezone.utc)
    assert marker.note == ""


def test_deploy_marker_bad_time_rejected():
    with pytest.raises(ValidationError) as caught:
        DeployMarker.model_validate({"deployment": "prod", "version": "v1", "deployed_at": "soon"})
    error = first_field_error(caught.value)
    assert error.field == "deployed_at"
    assert error.value == "soon"


@pytest.mark.parametrize("text, expected", [
    ("1793491200", 1793491200),
    (" 1793491200 ", 1793491200),
    ("+5", 5),
    ("1793491200.5", Decimal("1793491200.5")),
    # Not plain ASCII decimal numbers: left as text, for the ISO-8601 parse to reject.
    ("1e10", "1e10"),
    ("0x10", "0x10"),
    ("\u0661\u0662\u0663", "\u0661\u0662\u0663"),
    ("2026-03-01", "2026-03-01"),
    ("", ""),
])
def test_number_from_text(text, expected):
    result = number_from_text(text)
    assert result == expected
    assert type(result) is type(expected)


def test_digit_string_timestamp_in_record_rejected():
    with pytest.raises(FieldError) as raised:
        parse_timestamp("submitted_at", "1793491200")
    assert raised.value.reason == "is not an ISO-8601 timestamp: '1793491200'; use e.g. 2026-03-01T10:00:00Z"
