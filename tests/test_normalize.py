"""Tests for ledger.normalize: key folding, aliases, unknown fields, and the fast path agreeing with the model path."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from ledger import store
from ledger.models import NO_TIMESTAMP_FLAG, ZONELESS_FLAG
from ledger.normalize import (
    Context,
    NormalizedSubmission,
    RecordRejected,
    fast_normalize,
    model_normalize,
    normalize_text,
    parse_exact,
)

CASES = Path(__file__).resolve().parent / "data" / "cases"
INGEST_TIME_US = 1_780_000_000_000_000
TEN_UTC_US = 1_772_359_200_000_000


def context(location: str = "records.jsonl:1", hint: str | None = None, deployment: str | None = None) -> Context:
    return Context(
        location=location, anchor=location, run_id_hint=hint, deployment=deployment, ingest_time_us=INGEST_TIME_US
    )


def record(**fields) -> dict:
    """Return a valid record as a dict, with `fields` replacing or adding keys."""
    base = {
        "run_id": "run-1",
        "status": "success",
        "actions_replayed": 3,
        "actions_total": 3,
        "divergences_detected": 0,
        "divergences": [],
        "cost_savings": 0.25,
        "submitted_at": "2026-03-01T10:00:00Z",
    }
    base.update(fields)
    return base


def text_of(value: dict) -> bytes:
    return json.dumps(value).encode()


def normalize(text: bytes | str, where: Context | None = None) -> NormalizedSubmission:
    """Validate through the model path, the one that explains failures."""
    return model_normalize(parse_exact(text, "test"), where or context())


def rejection(text: bytes | str, where: Context | None = None) -> RecordRejected:
    with pytest.raises(RecordRejected) as caught:
        normalize(text, where)
    return caught.value


# --- keys that name the same field --------------------------------------------------


def test_key_repeated_rejected():
    text = b'{"run_id":"r","status":"success","status":"failed","actions_replayed":1,"actions_total":1,"cost_savings":0}'
    error = rejection(text)
    assert error.field == "status"
    assert str(error) == "status: key 'status' appears more than once in the record"


def test_key_case_variant_rejected():
    text = text_of(record(Status="failed"))
    error = rejection(text)
    assert error.field == "status"
    assert str(error) == "status: keys 'status' and 'Status' both name the field 'status'; keep one"


def test_key_two_aliases_rejected():
    error = rejection(text_of(record(created_at="2026-03-01T11:00:00Z")))
    assert error.field == "submitted_at"
    assert str(error) == "submitted_at: keys 'submitted_at' and 'created_at' both name the field 'submitted_at'; keep one"


def test_key_unknown_case_variant_rejected():
    error = rejection(text_of(record(model="m-1", MODEL="m-2")))
    assert str(error) == "MODEL: keys 'model' and 'MODEL' both name the field 'model'; keep one"


def test_key_uppercase_alone_accepted():
    value = record()
    value["STATUS"] = value.pop("status")
    value["Run_Id"] = value.pop("run_id")
    result = normalize(text_of(value))
    assert result.status == "success"
    assert result.run_id == "run-1"


def test_key_repeated_fast_path_defers():
    text = b'{"run_id":"r","status":"success","status":"failed","actions_replayed":1,"actions_total":1,"cost_savings":0}'
    assert fast_normalize(text, context()) is None
    with pytest.raises(RecordRejected):
        normalize_text(text, context())


# --- aliases and unknown fields -------------------------------------------------------


def test_alias_created_at_is_submitted_at():
    value = record()
    value["created_at"] = value.pop("submitted_at")
    assert normalize(text_of(value)).submitted_at_us == TEN_UTC_US


@pytest.mark.parametrize("alias", ["submitted_at", "created_at", "timestamp"])
def test_alias_timestamp_names(alias):
    value = record()
    del value["submitted_at"]
    value[alias] = "2026-03-01T11:00:00+01:00"
    assert normalize(text_of(value)).submitted_at_us == TEN_UTC_US


def test_alias_divergence_count():
    value = record(status="partial", divergence_count=2)
    del value["divergences_detected"], value["divergences"]
    assert normalize(text_of(value)).divergences_detected == 2


def test_alias_id_is_platform_id():
    result = normalize(text_of(record(id="sub-7")))
    assert result.platform_id == "sub-7"
    assert result.extra_json is None


def test_id_number_kept_as_exact_text():
    assert normalize(b'{"id": 1.50, "run_id": 12345678901234567890123, "status": "success", '
                     b'"actions_replayed": 1, "actions_total": 1, "cost_savings": 0}').platform_id == "1.50"
    result = normalize(b'{"run_id": 12345678901234567890123, "status": "success", '
                       b'"actions_replayed": 1, "actions_total": 1, "cost_savings": 0}')
    assert result.run_id == "12345678901234567890123"


def test_run_id_decimal_number_exact_text():
    text = b'{"run_id": 1.50, "status": "success", "actions_replayed": 1, "actions_total": 1, "cost_savings": 0}'
    assert normalize(text).run_id == "1.50"
    assert normalize_text(text, context()).run_id == "1.50"


def test_unknown_fields_kept_in_extra():
    result = normalize(text_of(record(model="m-1", agent_version="2.1.4", tags={"team": "search"})))
    assert json.loads(result.extra_json) == {"model": "m-1", "agent_version": "2.1.4", "tags": {"team": "search"}}


def test_run_id_from_file_name_hint():
    value = record()
    del value["run_id"]
    result = normalize(text_of(value), context("x_run-demo-1.json", hint="run-demo-1"))
    assert result.run_id == "run-demo-1"


def test_run_id_in_record_wins_over_hint():
    result = normalize(text_of(record(run_id="run-inside")), context("x_run-demo-1.json", hint="run-demo-1"))
    assert result.run_id == "run-inside"


# --- deployment, timestamps, flags ----------------------------------------------------


def test_deployment_option_over_field():
    result = normalize(text_of(record(deployment="prod-eu")), context(deployment="prod-us"))
    assert result.deployment == "prod-us"


def test_deployment_field_used():
    assert normalize(text_of(record(deployment="prod-eu"))).deployment == "prod-eu"


def test_deployment_missing_unknown():
    assert normalize(text_of(record())).deployment == "unknown"


def test_zoneless_timestamp_flagged():
    result = normalize(text_of(record(submitted_at="2026-03-01T10:00:00")))
    assert result.submitted_at_us == TEN_UTC_US
    assert result.flags == [ZONELESS_FLAG]


def test_missing_timestamp_uses_ingest_time():
    value = record()
    del value["submitted_at"]
    result = normalize(text_of(value))
    assert result.submitted_at_us == INGEST_TIME_US
    assert result.flags == [NO_TIMESTAMP_FLAG]


def test_money_kept_in_micros():
    result = normalize(text_of(record(cost_savings=0.09000000000000001)))
    assert result.cost_micros == 90_000
    assert result.cost_savings == Decimal("0.09")


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (b'{"run_id": "r", "status": "success", "actions_replayed": 1, "actions_total": 1, "cost_savings": NaN}',
         "cost_savings", "must be a finite number, got NaN"),
        (b'{"run_id": "r", ', "", "invalid JSON at column"),
        (b"[1, 2]", "", "expected a JSON object, got list"),
        (b'{"run_id": "caf\xe9"}', "", "is not valid UTF-8 (byte 0xe9 at column 16)"),
    ],
    ids=["nan-literal", "truncated", "array", "latin-1"],
)
def test_unparseable_record_rejected(text, field, reason):
    with pytest.raises(RecordRejected) as caught:
        normalize(text)
    assert caught.value.field == field
    assert reason in caught.value.reason


# --- the fast path agrees with the model path ---------------------------------------------

DIVERGENCES = [
    {"type": "input_mismatch", "action": "fetch", "index": 0,
     "expected_inputs": {"args": ["a"], "kwargs": {"ts": "2026-03-01T09:59:00"}},
     "actual_inputs": {"args": ["a"], "kwargs": {"ts": "2026-03-01T09:59:01"}}},
    {"type": "action_mismatch", "expected": "summarize", "actual": "fetch", "index": 1},
    {"type": "tool_error", "index": 2, "detail": {"code": 7, "ratio": 0.5}},
]


def _without(name: str, **fields) -> dict:
    value = record(**fields)
    del value[name]
    return value


def _renamed(old: str, new: str, **fields) -> dict:
    value = record(**fields)
    value[new] = value.pop(old)
    return value


# (case id, record text, run id hint from the file name)
AGREEMENT_TABLE: list[tuple[str, bytes, str | None]] = [
    ("clean", text_of(record()), None),
    ("clean-partial", text_of(record(status="partial", divergences=DIVERGENCES, divergences_detected=3)), None),
    ("clean-failed", text_of(record(status="failed", actions_replayed=1, actions_total=9,
                                    divergences=DIVERGENCES[1:2], divergences_detected=1)), None),
    ("clean-count-only", text_of(_without("divergences", status="partial", divergences_detected=4)), None),
    ("clean-list-only", text_of(_without("divergences_detected", status="partial", divergences=DIVERGENCES)), None),
    ("clean-deployment", text_of(record(deployment="prod-eu")), None),
    ("clean-platform-id", text_of(record(id="sub-1")), None),
    ("clean-extra", text_of(record(model="m-1", tags={"a": [1, 2.5, None]})), None),
    ("clean-offset", text_of(record(submitted_at="2026-03-01T12:00:00+02:00")), None),
    ("clean-zoneless", text_of(record(submitted_at="2026-03-01T10:00:00")), None),
    ("clean-no-timestamp", text_of(_without("submitted_at")), None),
    ("clean-sdk-body", text_of(_without("run_id")), "run-demo-1"),
    ("clean-integer-money", text_of(record(cost_savings=3)), None),
    ("clean-sdk-float", text_of(record(cost_savings=0.09000000000000001)), None),
    ("clean-tiny-money", text_of(record(cost_savings=0.0000005)), None),
    ("clean-unicode", text_of(record(run_id="運行-1", model="ü")), None),
    ("clean-spaces", b'{ "run_id" : "r" , "status" : "success" , "actions_replayed" : 0 , "actions_total" : 0 ,'
                     b' "divergences_detected" : 0 , "cost_savings" : 0 }', None),
    ("alias-created-at", text_of(_renamed("submitted_at", "created_at")), None),
    ("alias-divergence-count", text_of(_renamed("divergences_detected", "divergence_count")), None),
    ("alias-id", text_of(record(submission_id="sub-9")), None),
    ("alias-uppercase", text_of(_renamed("status", "STATUS")), None),
    ("epoch-seconds", text_of(record(submitted_at=1772359200)), None),
    ("epoch-ms", text_of(record(submitted_at=1772359200000)), None),
    ("epoch-1e11-boundary-s", text_of(record(submitted_at=99_999_999_999)), None),
    ("epoch-1e11-boundary-ms", text_of(record(submitted_at=100_000_000_000)), None),
    ("year-1970", text_of(record(submitted_at="1970-01-01T00:00:00Z")), None),
    ("year-2603", text_of(record(submitted_at="2603-03-01T10:00:00Z")), None),
    ("year-1-offset", text_of(record(submitted_at="0001-01-01T00:00:00+01:00")), None),
    ("status-unknown", text_of(record(status="done")), None),
    ("status-case", text_of(record(status="Success")), None),
    ("count-string", text_of(record(actions_total="9")), None),
    ("count-float", text_of(record(actions_total=3.0)), None),
    ("count-true", text_of(record(actions_total=True)), None),
    ("count-negative", text_of(record(actions_replayed=-1)), None),
    ("count-huge", b'{"run_id":"r","status":"success","actions_replayed":1,"actions_total":123456789012345678901,'
                   b'"cost_savings":0}', None),
    ("replayed-above-total", text_of(record(actions_replayed=5)), None),
    ("detected-disagrees", text_of(record(divergences_detected=2)), None),
    ("detected-null", text_of(_without("divergences", divergences_detected=None)), None),
    ("divergence-index-string", text_of(record(divergences=[{"type": "x", "index": "1"}], divergences_detected=1)), None),
    ("divergence-no-type", text_of(record(divergences=[{"index": 1}], divergences_detected=1)), None),
    ("divergence-not-object", text_of(record(divergences=[1], divergences_detected=1)), None),
    ("divergence-upper-key", text_of(record(divergences=[{"Type": "x", "type": "y"}], divergences_detected=1)), None),
    ("money-nan", b'{"run_id":"r","status":"success","actions_replayed":1,"actions_total":1,"cost_savings":NaN}', None),
    ("money-infinity-text", text_of(record(cost_savings="Infinity")), None),
    ("money-1e999", b'{"run_id":"r","status":"success","actions_replayed":1,"actions_total":1,"cost_savings":1e999}',
     None),
    ("money-negative", text_of(record(cost_savings=-0.5)), None),
    ("money-negative-zero", text_of(record(cost_savings=-0.0)), None),
    ("money-string", text_of(record(cost_savings="0.5")), None),
    ("money-too-large", text_of(record(cost_savings=1e9)), None),
    ("money-just-below-limit", text_of(record(cost_savings=999999999.9999999)), None),
    ("run-id-empty", text_of(record(run_id="")), None),
    ("run-id-blank", text_of(record(run_id="  ")), None),
    ("run-id-padded", text_of(record(run_id=" r-1 ")), None),
    ("run-id-256", text_of(record(run_id="r" * 256)), None),
    ("run-id-257", text_of(record(run_id="r" * 257)), None),
    ("run-id-control", text_of(record(run_id="r\u0007")), None),
    ("run-id-decimal", b'{"run_id":1.50,"status":"success","actions_replayed":1,"actions_total":1,"cost_savings":0}',
     None),
    ("run-id-big-integer", b'{"run_id":12345678901234567890123,"status":"success","actions_replayed":1,'
                           b'"actions_total":1,"cost_savings":0}', None),
    ("run-id-missing", text_of(_without("run_id")), None),
    ("key-repeated", b'{"run_id":"r","status":"success","status":"failed","actions_replayed":1,"actions_total":1,'
                     b'"cost_savings":0}', None),
    ("key-case-variant", text_of(record(Status="failed")), None),
    ("key-two-aliases", text_of(record(created_at="2026-03-01T11:00:00Z")), None),
    ("key-escaped", b'{"run_id":"r","st\\u0061tus":"success","actions_replayed":1,"actions_total":1,"cost_savings":0}',
     None),
    ("key-in-value", text_of(record(note='the "status" key')), None),
    ("extra-big-integer", text_of(record(trace=98765432109876543210)), None),
    ("extra-surrogate", b'{"run_id":"r","status":"success","actions_replayed":1,"actions_total":1,'
                        b'"cost_savings":0,"note":"\\ud800"}', None),
    ("not-object", b"[1, 2, 3]", None),
    ("invalid-json", b'{"run_id": "r",}', None),
    ("deployment-blank", text_of(record(deployment=" ")), None),
    ("deployment-number", text_of(record(deployment=5)), None),
]


def _case_records() -> list[tuple[str, bytes, str | None]]:
    """Every record of the case files as text, with the run id hint its file name gives."""
    rows = []
    for path in sorted(CASES.glob("c*.jsonl")):
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if line.strip():
                rows.append((f"{path.stem}:{number}", line.strip(), None))
    for path in sorted(CASES.glob("c*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        items = document.get("items", [document]) if isinstance(document, dict) else document
        hint = path.stem.rsplit("_", 1)[-1] if "_run-" in path.stem else None
        for position, item in enumerate(items):
            rows.append((f"{path.stem}#/{position}", json.dumps(item).encode(), hint))
    return rows


AGREEMENT_ROWS = AGREEMENT_TABLE + _case_records()


def _both_paths(text: bytes, hint: str | None) -> tuple[NormalizedSubmission | None, NormalizedSubmission | None]:
    where = context("table.jsonl:1", hint=hint)
    fast = fast_normalize(text, where)
    try:
        model = model_normalize(parse_exact(text, where.location), where)
    except RecordRejected:
        model = None
    return fast, model


@pytest.mark.parametrize(("text", "hint"), [row[1:] for row in AGREEMENT_ROWS], ids=[row[0] for row in AGREEMENT_ROWS])
def test_fast_path_agrees_with_model_path(text, hint):
    fast, model = _both_paths(text, hint)
    if fast is not None:
        assert model is not None, "the fast path accepted a record the model path rejects"
        assert fast == model
    if model is None:
        assert fast is None


def test_fast_path_accepts_clean_records():
    accepted = [name for name, text, hint in AGREEMENT_ROWS if _both_paths(text, hint)[0] is not None]
    clean = [name for name, _, _ in AGREEMENT_TABLE if name.startswith("clean-") and name != "clean-spaces"]
    missing = sorted(set(clean) - set(accepted))
    assert missing == [], "the fast path gave up on clean records, so the agreement test would check little"
    assert len(accepted) >= 25


def test_agreement_table_has_rejections():
    rejected = [name for name, text, hint in AGREEMENT_ROWS if _both_paths(text, hint)[1] is None]
    assert len(rejected) >= 40


# --- the SQL path for JSON Lines agrees with the model path too -------------------------------------


def _model_or_none(text: bytes) -> NormalizedSubmission | None:
    try:
        return normalize(text, context("table.jsonl:1"))
    except RecordRejected:
        return None


def _sql_path(tmp_path: Path, texts: list[bytes]) -> tuple[dict[int, tuple], dict[int, list[tuple]], set[int]]:
    """Run lines through the stage's SQL checks; return staged rows and divergences by line number, and deferred lines."""
    stage = store.Stage(tmp_path)
    try:
        lines = pa.table({
            "line_no": pa.array(range(1, len(texts) + 1), pa.int64()),
            "raw": pa.array([text.decode("utf-8") for text in texts], pa.large_string()),
        })
        staged, deferred, _ = stage.check_line_batch(lines, 0, "table.jsonl", None, 0)
        rows = stage.connection.execute(
            "SELECT seq, location, platform_id, run_id, deployment, status, actions_replayed, actions_total, "
            "divergences_detected, cost_savings, epoch_us(submitted_at), flags, extra::VARCHAR FROM submissions"
        ).fetchall()
        divergences = stage.connection.execute(
            "SELECT seq, position, type, action, action_index, expected::VARCHAR, actual::VARCHAR, detail::VARCHAR "
            "FROM divergences ORDER BY seq, position"
        ).fetchall()
    finally:
        stage.discard()
    assert staged == len(rows)
    line_of_seq = {row[0]: int(row[1].rsplit(":", 1)[1]) for row in rows}
    by_line = {line_of_seq[row[0]]: row[2:] for row in rows}
    divergences_by_line: dict[int, list[tuple]] = {}
    for seq, *rest in divergences:
        divergences_by_line.setdefault(line_of_seq[seq], []).append(tuple(rest))
    return by_line, divergences_by_line, {line for line, _ in deferred}


def _loads(text: str | None):
    return None if text is None else json.loads(text)


def test_sql_path_agrees_with_model_path(tmp_path):
    rows = [(name, text) for name, text, _ in AGREEMENT_ROWS if _is_utf8(text)]
    staged, divergences, deferred = _sql_path(tmp_path, [text for _, text in rows])
    assert len(staged) >= 20, "the SQL path accepted too few clean lines for the comparison to mean much"
    for line, (name, text) in enumerate(rows, start=1):
        model = _model_or_none(text)
        if model is None:
            assert line in deferred, f"{name}: the SQL path accepted a line the model path rejects"
            continue
        if line in deferred:
            continue
        stored = staged[line]
        assert stored == (
            model.platform_id, model.run_id, model.deployment, model.status, model.actions_replayed,
            model.actions_total, model.divergences_detected, Decimal(model.cost_micros).scaleb(-6),
            model.submitted_at_us, model.flags or None, stored[-1],
        ), name
        assert _loads(stored[-1]) == _loads(model.extra_json), name
        expected = [(item.position, item.type, item.action, item.index, _loads(item.expected_json),
                     _loads(item.actual_json), _loads(item.detail_json)) for item in model.divergences]
        got = [(*row[:4], _loads(row[4]), _loads(row[5]), _loads(row[6])) for row in divergences.get(line, [])]
        assert got == expected, name


def _is_utf8(text: bytes) -> bool:
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
