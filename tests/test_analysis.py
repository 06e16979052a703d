"""Tests for ledger.analysis: divergence causes and deploy regression checks."""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest

from ledger.analysis import (
    CAUSES,
    MISSING,
    ChangePoint,
    Difference,
    classify_divergence,
    diff_inputs,
    find_change_points,
    judge_marker,
    label_unexplained,
)

# A body as the replay SDK posts it, kept as text so the test parses it the
# way the ingest path does.
SDK_BODY = """
{"status": "partial", "actions_replayed": 3, "actions_total": 3, "divergences_detected": 2, "divergences": [
  {"type": "input_mismatch", "action": "fetch_data", "index": 0, "expected_inputs": {"args": ["https://example.com/a"], "kwargs": {"ts": "2026-12-04T19:34:47.590247"}}, "actual_inputs": {"args": ["https://example.com/a"], "kwargs": {"ts": "2026-12-04T19:34:47.595188"}}},
  {"type": "input_mismatch", "action": "summarize", "index": 1, "expected_inputs": {"args": ["hello world"], "kwargs": {"seed": 0.08145626752228585}}, "actual_inputs": {"args": ["hello world"], "kwargs": {"seed": 0.09710858188540006}}},
  {"type": "action_mismatch", "expected": "summarize", "actual": "fetch_data", "index": 1}],
 "cost_savings": 0.09000000000000001}
"""

T0 = datetime(2026, 11, 2, tzinfo=timezone.utc)


def nested_lists(depth: int, leaf):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth: int, leaf):
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def items_with_id(changed_id: int) -> dict:
    items = [{"id": i} for i in range(5)]
    items[3] = {"id": changed_id}
    return {"args": [{"items": items}], "kwargs": {}}


def pairs(differences: list[Difference]) -> list[tuple[str, str]]:
    return [(difference.path, difference.cause) for difference in differences]


# ---------------------------------------------------------------------------
# Cause classifier
# ---------------------------------------------------------------------------

CAUSE_CASES = [
    # Equal values, including equal numbers of different Python types.
    pytest.param({"a": [1, {"b": "x"}]}, {"a": [1, {"b": "x"}]}, [], id="equal-nested"),
    pytest.param(1, 1.0, [], id="int-equals-float"),
    pytest.param(Decimal("0.1"), 0.1, [], id="decimal-equals-float"),
    pytest.param(2**70, 2**70, [], id="big-int-equal"),
    # Type changes.
    pytest.param(1, "1", [("", "type_change")], id="number-vs-string"),
    pytest.param(True, 1, [("", "type_change")], id="true-vs-one"),
    pytest.param(None, 0, [("", "type_change")], id="null-vs-zero"),
    pytest.param({"a": []}, {"a": {}}, [("a", "type_change")], id="list-vs-dict"),
    pytest.param("1764877287", 1764877287, [("", "type_change")], id="epoch-string-vs-int"),
    pytest.param({"a": [True, 1]}, {"a": [1, 1]}, [("a[0]", "type_change")], id="true-vs-one-in-list"),
    pytest.param({"k": True, "n": 2}, {"k": 1, "n": 2.0}, [("k", "type_change")], id="true-vs-one-in-object"),
    pytest.param({"k": 1, "l": [2]}, {"k": 1.0, "l": [2.0]}, [], id="int-equals-float-nested"),
    # Missing and extra keys, including null against an absent key.
    pytest.param({"a": None}, {}, [("a", "missing_key")], id="null-vs-missing"),
    pytest.param({}, {"a": None}, [("a", "extra_key")], id="missing-vs-null"),
    pytest.param(
        {"kwargs": {"x": 1, "y": 2}},
        {"kwargs": {"y": 2, "z": 3}},
        [("kwargs.x", "missing_key"), ("kwargs.z", "extra_key")],
        id="missing-and-extra",
    ),
    pytest.param([1, 2], [1, 2, 3], [("[2]", "extra_key")], id="longer-list"),
    pytest.param(
        [1, 2, 3], [1], [("[1]", "missing_key"), ("[2]", "missing_key")], id="shorter-list"
    ),
    pytest.param([1, 2], [5, 2, 3], [("[0]", "other_value"), ("[2]", "extra_key")], id="prefix-then-extra"),
    # Big integers compare exactly.
    pytest.param(2**70, 2**70 + 1, [("", "other_value")], id="big-int-off-by-one"),
    pytest.param(2**70, float(2**70), [("", "float_noise")], id="big-int-vs-rounded-float"),
    pytest.param(3, 4, [("", "other_value")], id="small-ints"),
    # Reordering.
    pytest.param([1, 2, 3], [3, 1, 2], [("", "reordering")], id="reordered-numbers"),
    pytest.param(
        {"args": [{"a": 1}, {"b": [2]}]},
        {"args": [{"b": [2]}, {"a": 1}]},
        [("args", "reordering")],
        id="reordered-unhashable",
    ),
    pytest.param([1, 2], [2, 1.0], [("", "reordering")], id="reordered-equal-numbers"),
    pytest.param([1, 1, 2], [1, 2, 2], [("[1]", "other_value")], id="same-set-other-multiset"),
    # Formatting.
    pytest.param("Hello  World", "hello world", [("", "formatting")], id="case-and-spaces"),
    pytest.param(" hello\tworld\n", "hello world", [("", "formatting")], id="tabs-and-newlines"),
    pytest.param("STRASSE", "straße", [("", "formatting")], id="unicode-casefold"),
    # Unicode values and keys.
    pytest.param("café", "cafe", [("", "other_value")], id="unicode-accent"),
    pytest.param({"名前": "a"}, {"名前": "b"}, [('["名前"]', "other_value")], id="unicode-key"),
    pytest.param(
        {"kwargs": {"a.b": 1}}, {"kwargs": {"a.b": 2}}, [('kwargs["a.b"]', "other_value")], id="dotted-key"
    ),
    # Timestamps.
    pytest.param(1764877287, 1764877290, [("", "timestamp")], id="epoch-seconds"),
    pytest.param(1764877287590, 1764877287595, [("", "timestamp")], id="epoch-milliseconds"),
    pytest.param(1764877287.5902, 1764877287.5951, [("", "timestamp")], id="epoch-float-seconds"),
    pytest.param("2026-12-04", "2026-12-05", [("", "timestamp")], id="iso-date"),
    pytest.param("2026-12-04T19:34:47Z", "2026-12-04T19:35:00Z", [("", "timestamp")], id="iso-utc"),
    pytest.param(
        "2026-12-04 19:34:47+01:00", "2026-12-04 19:34:48,5+01:00", [("", "timestamp")], id="iso-space-offset"
    ),
    pytest.param(
        "2026-12-04T19:34:47Z", "2026-12-04T20:34:47+01:00", [("", "formatting")], id="iso-same-instant"
    ),
    pytest.param("2026-12-04", "2026-12-04T00:00:00", [("", "formatting")], id="iso-date-vs-midnight"),
    pytest.param("2026-13-04", "2026-12-04", [("", "other_value")], id="iso-invalid-month"),
    pytest.param(1764877287, 1764877287000, [("", "formatting")], id="epoch-seconds-vs-same-milliseconds"),
    pytest.param(1764877287, 1764877290000, [("", "timestamp")], id="epoch-seconds-vs-other-milliseconds"),
    pytest.param(
        "Today is 2026-12-04. Be brief.", "Today is 2026-12-05. Be brief.", [("", "timestamp")],
        id="embedded-date",
    ),
    pytest.param(
        "as of 2026-12-04T19:34:47Z (UTC)", "as of 2026-12-04T20:34:47+01:00 (UTC)", [("", "formatting")],
        id="embedded-same-instant",
    ),
    pytest.param(
        "/v1/items/3f1c2a4e-8b7d-4c6e-9a21-5d0f7e6b4c3a/parts",
        "/v1/items/9b2e7d1f-0c4a-4f8b-b6d3-2e1a9c8f7b60/parts",
        [("", "uuid")],
        id="embedded-uuid",
    ),
    pytest.param(
        "Today is 2026-12-04. Be brief.", "Today is 2026-12-05. Be short.", [("", "other_value")],
        id="embedded-date-and-words",
    ),
    pytest.param("build 2026-13-45 ok", "build 2026-12-04 ok", [("", "other_value")], id="embedded-invalid-date"),
    pytest.param("v2026-12-04x", "v2026-12-05x", [("", "other_value")], id="date-inside-word"),
    # UUIDs.
    pytest.param(
        "3f1c2a4e-8b7d-4c6e-9a21-5d0f7e6b4c3a",
        "9b2e7d1f-0c4a-4f8b-b6d3-2e1a9c8f7b60",
        [("", "uuid")],
        id="uuid-v4",
    ),
    pytest.param(
        "{3F1C2A4E-8B7D-4C6E-9A21-5D0F7E6B4C3A}",
        "9b2e7d1f0c4a4f8bb6d32e1a9c8f7b60",
        [("", "uuid")],
        id="uuid-braces-and-bare",
    ),
    pytest.param(
        "3F1C2A4E-8B7D-4C6E-9A21-5D0F7E6B4C3A",
        "3f1c2a4e-8b7d-4c6e-9a21-5d0f7e6b4c3a",
        [("", "formatting")],
        id="uuid-same-value-other-case",
    ),
    # Float noise and random numbers.
    pytest.param(0.1 + 0.2, 0.3, [("", "float_noise")], id="float-sum-noise"),
    pytest.param(
        Decimal("0.30000000000000000001"), Decimal("0.3"), [("", "float_noise")], id="decimal-noise"
    ),
    pytest.param(0.08145626752228585, 0.09710858188540006, [("", "random_number")], id="random-unit"),
    pytest.param(0, 0.4817263521947156, [("", "random_number")], id="random-int-zero"),
    pytest.param(0, 0.5, [("", "other_value")], id="short-float-from-zero"),
    pytest.param({"temperature": 0.7}, {"temperature": 0.9}, [("temperature", "other_value")], id="hand-set-setting"),
    pytest.param(0.123456, 0.5, [("", "random_number")], id="random-six-digits"),
    pytest.param(0.12345, 0.5, [("", "other_value")], id="five-digits-not-random"),
    pytest.param(0.5, 1.5, [("", "other_value")], id="float-outside-unit"),
    pytest.param(False, True, [("", "other_value")], id="bools"),
    # Nesting, paths and several differences in document order.
    pytest.param(items_with_id(3), items_with_id(30), [("args[0].items[3].id", "other_value")], id="nested-path"),
    pytest.param(
        {"ts": "2026-12-04T19:34:47", "seed": 0.2519473829, "n": 1},
        {"ts": "2026-12-04T19:34:49", "seed": 0.7538291047, "n": "1"},
        [("ts", "timestamp"), ("seed", "random_number"), ("n", "type_change")],
        id="several-in-order",
    ),
    pytest.param(
        nested_lists(300, "x"), nested_lists(300, "y"), [("[0]" * 300, "other_value")], id="deep-lists-300"
    ),
    pytest.param(
        nested_dicts(300, 1),
        nested_dicts(300, 2),
        [(".".join(["a"] * 300), "other_value")],
        id="deep-dicts-300",
    ),
    pytest.param(nested_lists(300, 1), nested_lists(300, 1.0), [], id="deep-equal-300"),
]


@pytest.mark.parametrize(("expected", "actual", "want"), CAUSE_CASES)
def test_diff_inputs_cause_table(expected, actual, want):
    assert pairs(diff_inputs(expected, actual)) == want


def test_cause_table_size():
    assert len(CAUSE_CASES) >= 30


@pytest.mark.parametrize(("expected", "actual", "want"), CAUSE_CASES)
def test_causes_are_known(expected, actual, want):
    for difference in diff_inputs(expected, actual):
        assert difference.cause in CAUSES


def test_causes_constant():
    assert CAUSES == (
        "timestamp",
        "uuid",
        "random_number",
        "float_noise",
        "reordering",
        "formatting",
        "type_change",
        "missing_key",
        "extra_key",
        "other_value",
        "control_flow",
    )


def test_sdk_body_first_divergence():
    divergence = json.loads(SDK_BODY)["divergences"][0]

    assert pairs(classify_divergence(divergence)) == [("kwargs.ts", "timestamp")]


def test_sdk_body_second_divergence():
    divergence = json.loads(SDK_BODY)["divergences"][1]

    assert pairs(classify_divergence(divergence)) == [("kwargs.seed", "random_number")]


def test_sdk_body_action_mismatch():
    divergence = json.loads(SDK_BODY)["divergences"][2]

    assert classify_divergence(divergence) == [
        Difference(path="", cause="control_flow", expected="summarize", actual="fetch_data")
    ]


def test_sdk_body_parsed_with_decimal():
    body = json.loads(SDK_BODY, parse_float=Decimal)
    divergence = body["divergences"][1]

    assert pairs(classify_divergence(divergence)) == [("kwargs.seed", "random_number")]


def test_difference_leaf_values():
    differences = diff_inputs({"kwargs": {"ts": 1764877287, "x": 1}}, {"kwargs": {"ts": 1764877290}})

    assert differences == [
        Difference("kwargs.ts", "timestamp", 1764877287, 1764877290),
        Difference("kwargs.x", "missing_key", 1, MISSING),
    ]


def test_missing_sentinel_repr():
    assert repr(MISSING) == "MISSING"


def test_input_mismatch_identical_inputs():
    divergence = {"type": "input_mismatch", "expected_inputs": {"args": [1]}, "actual_inputs": {"args": [1.0]}}

    assert classify_divergence(divergence) == []


def test_input_mismatch_absent_actual():
    divergence = {"type": "input_mismatch", "expected_inputs": {"args": [1]}}

    assert classify_divergence(divergence) == [Difference("", "missing_key", {"args": [1]}, MISSING)]


def test_input_mismatch_absent_expected():
    divergence = {"type": "input_mismatch", "actual_inputs": None}

    assert classify_divergence(divergence) == [Difference("", "extra_key", MISSING, None)]


def test_input_mismatch_both_absent():
    assert classify_divergence({"type": "input_mismatch"}) == []


def test_action_mismatch_absent_names():
    assert classify_divergence({"type": "action_mismatch"}) == [Difference("", "control_flow", None, None)]


def test_unknown_type_other_value():
    divergence = {"type": "output_mismatch", "expected": "a", "actual_inputs": {"x": 1}}

    assert classify_divergence(divergence) == [Difference("", "other_value", "a", {"x": 1})]


def test_unknown_type_nothing_present():
    assert classify_divergence({"type": "timeout"}) == [Difference("", "other_value", MISSING, MISSING)]


def test_classify_rejects_non_mapping():
    with pytest.raises(TypeError, match="got list"):
        classify_divergence([{"type": "action_mismatch"}])


def test_diff_rejects_tuple():
    with pytest.raises(TypeError, match=r"tuple at path 'args'"):
        diff_inputs({"args": (1, 2)}, {"args": [1, 2]})


def test_diff_rejects_int_key():
    with pytest.raises(TypeError, match="object key 1"):
        diff_inputs({1: "a"}, {1: "b"})


def test_diff_beyond_recursion_limit():
    depth = sys.getrecursionlimit() * 2

    differences = diff_inputs(nested_lists(depth, [1, 2]), nested_lists(depth, [2, 1]))

    assert pairs(differences) == [("[0]" * depth, "reordering")]


def test_diff_deep_dicts_500():
    differences = diff_inputs(nested_dicts(500, {"x": 1}), nested_dicts(500, {}))

    assert pairs(differences) == [(".".join(["a"] * 500 + ["x"]), "missing_key")]


def test_diff_rejects_list_cycle():
    cyclic: list = [1]
    cyclic.append(cyclic)

    with pytest.raises(ValueError, match="reference cycle"):
        diff_inputs([cyclic], [[1, [1]]])


def test_diff_rejects_dict_cycle():
    expected: dict = {"x": 1}
    expected["self"] = expected
    actual: dict = {"x": 2}
    actual["self"] = actual

    with pytest.raises(ValueError, match="reference cycle at path 'self'"):
        diff_inputs(expected, actual)


# ---------------------------------------------------------------------------
# judge_marker
# ---------------------------------------------------------------------------


def test_judge_finds_planted_regression():
    # Rate 0.10 -> 0.30 with 200 submissions per side gives a z statistic of
    # about 5, so a miss at alpha = 0.05 would point to a bug, not chance.
    verdicts = []
    for seed in range(50):
        rng = np.random.default_rng(seed)
        before_k = int(rng.binomial(200, 0.10))
        after_k = int(rng.binomial(200, 0.30))
        verdicts.append(judge_marker("checkout", "v2", T0, 200, before_k, 200, after_k).verdict)

    assert verdicts == ["regression"] * 50


def test_judge_finds_planted_improvement():
    verdicts = []
    for seed in range(50):
        rng = np.random.default_rng(seed)
        before_k = int(rng.binomial(200, 0.30))
        after_k = int(rng.binomial(200, 0.10))
        verdicts.append(judge_marker("checkout", "v2", T0, 200, before_k, 200, after_k).verdict)

    assert verdicts == ["improvement"] * 50


def test_judge_false_positive_rate():
    alpha = 0.05
    runs = 400
    flagged = 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        rate = rng.uniform(0.05, 0.5)
        before_k = int(rng.binomial(200, rate))
        after_k = int(rng.binomial(200, rate))
        # min_effect=0 leaves the p-value alone in charge of the verdict.
        verdict = judge_marker("checkout", "v2", T0, 200, before_k, 200, after_k, alpha=alpha, min_effect=0.0)
        flagged += verdict.verdict in ("regression", "improvement")

    # If the true false-positive rate were exactly alpha, the count would be
    # Binomial(400, 0.05): mean 20, standard deviation 4.36. Allowing three
    # standard deviations keeps a correct test from failing by chance (about
    # 0.1% one-sided) while a test that ignores alpha still fails.
    limit = runs * alpha + 3 * math.sqrt(runs * alpha * (1 - alpha))
    assert flagged <= limit


def test_judge_verdict_fields():
    verdict = judge_marker("checkout", "v2", T0, 200, 20, 200, 60)

    assert verdict.deployment == "checkout"
    assert verdict.version == "v2"
    assert verdict.deployed_at == T0
    assert (verdict.before_n, verdict.before_k, verdict.after_n, verdict.after_k) == (200, 20, 200, 60)
    assert verdict.before_rate == pytest.approx(0.10)
    assert verdict.after_rate == pytest.approx(0.30)
    assert verdict.p_value < 0.001
    assert verdict.reason.startswith("divergence rate rose from 10.0% to 30.0%")


def test_judge_too_few_after():
    verdict = judge_marker("checkout", "v2", T0, 100, 10, 4, 4)

    assert verdict.verdict == "not_judged"
    assert verdict.reason == "too few submissions after the deploy (4, need 20)"
    assert verdict.p_value is not None


def test_judge_too_few_before():
    verdict = judge_marker("checkout", "v2", T0, 3, 0, 100, 10)

    assert verdict.verdict == "not_judged"
    assert verdict.reason == "too few submissions before the deploy (3, need 20)"


def test_judge_empty_sides():
    verdict = judge_marker("checkout", "v2", T0, 0, 0, 0, 0)

    assert verdict.verdict == "not_judged"
    assert verdict.before_rate is None
    assert verdict.after_rate is None
    assert verdict.p_value is None
    assert "before (0) and after (0)" in verdict.reason


def test_judge_small_significant_effect():
    verdict = judge_marker("checkout", "v2", T0, 100_000, 10_000, 100_000, 12_000)

    assert verdict.p_value < 0.05
    assert verdict.verdict == "no_change"
    assert "less than the minimum effect of 5 percentage points" in verdict.reason


def test_judge_effect_exactly_minimum():
    # 0.30 - 0.25 is 0.04999999999999999 in floats; the effect is exactly 0.05.
    verdict = judge_marker("checkout", "v2", T0, 100_000, 25_000, 100_000, 30_000)

    assert verdict.verdict == "regression"


def test_judge_no_change_reason():
    verdict = judge_marker("checkout", "v2", T0, 100, 10, 100, 12)

    assert verdict.verdict == "no_change"
    assert verdict.reason.startswith("no significant change in divergence rate (from 10.0% to 12.0%")


def test_judge_rejects_k_above_n():
    with pytest.raises(ValueError, match=r"k=21.*n=20"):
        judge_marker("checkout", "v2", T0, 20, 21, 20, 0)


def test_judge_rejects_negative_count():
    with pytest.raises(ValueError, match="n=-1"):
        judge_marker("checkout", "v2", T0, 20, 0, -1, 0)


def test_judge_rejects_float_count():
    with pytest.raises(TypeError, match="20.0"):
        judge_marker("checkout", "v2", T0, 20.0, 0, 20, 0)


def test_judge_rejects_bad_alpha():
    with pytest.raises(ValueError, match="alpha must be in"):
        judge_marker("checkout", "v2", T0, 20, 0, 20, 0, alpha=1.5)


def test_judge_rejects_non_datetime():
    with pytest.raises(TypeError, match="deployed_at"):
        judge_marker("checkout", "v2", "2026-11-02", 20, 0, 20, 0)


# ---------------------------------------------------------------------------
# find_change_points and label_unexplained
# ---------------------------------------------------------------------------


def daily_series(rng, rates, days_per_rate, submissions_per_day, poisson=False):
    """Build (start, n, k) buckets with one rate per block of days."""
    buckets = []
    day = 0
    for rate, days in zip(rates, days_per_rate):
        for _ in range(days):
            n = int(rng.poisson(submissions_per_day)) if poisson else submissions_per_day
            buckets.append((T0 + timedelta(days=day), n, int(rng.binomial(n, rate))))
            day += 1
    return buckets


def day_of(point: ChangePoint) -> int:
    return (point.at - T0).days


def test_change_point_planted_shift():
    # Rate 0.10 -> 0.30 with 200 submissions per side in 4 daily buckets of
    # 50. At alpha=0.01 with Bonferroni over 7 splits the power is below 1.
    # Over seeds 0-99, 96 runs gave exactly one change within one bucket of
    # the shift, so a threshold of 90 leaves room without hiding a real loss.
    hits = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        points = find_change_points("checkout", daily_series(rng, [0.10, 0.30], [4, 4], 50))
        if len(points) == 1 and abs(day_of(points[0]) - 4) <= 1 and points[0].direction == "up":
            hits += 1

    assert hits >= 90


def test_change_point_single_seed_fields():
    rng = np.random.default_rng(7)
    buckets = daily_series(rng, [0.10, 0.30], [14, 14], 30)

    points = find_change_points("checkout", buckets)

    assert len(points) == 1
    point = points[0]
    assert abs(day_of(point) - 14) <= 1
    assert point.deployment == "checkout"
    assert point.direction == "up"
    assert point.before_n + point.after_n == sum(n for _, n, _ in buckets)
    assert point.before_k + point.after_k == sum(k for _, _, k in buckets)
    assert point.p_value < 0.01
    assert point.after_rate - point.before_rate >= 0.05


def test_change_point_staircase():
    # Rates 0.1 -> 0.3 -> 0.5. Binary segmentation alone often puts the first
    # split inside the middle step and then adds a third, spurious point.
    # Over seeds 0-99 with the refinement pass, 88 runs found both shifts
    # within one bucket and 2 runs found a third point. Without the pass
    # the counts were 82 and 11.
    hits = 0
    runs_with_extra_points = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        points = find_change_points("checkout", daily_series(rng, [0.1, 0.3, 0.5], [15, 15, 15], 40))
        days = [day_of(point) for point in points]
        if len(days) == 2 and abs(days[0] - 15) <= 1 and abs(days[1] - 30) <= 1:
            hits += 1
        if len(days) > 2:
            runs_with_extra_points += 1

    assert hits >= 85
    assert runs_with_extra_points <= 4


def test_change_point_no_effect():
    runs_with_change = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        rate = rng.uniform(0.05, 0.5)
        buckets = daily_series(rng, [rate], [30], 30, poisson=True)
        runs_with_change += bool(find_change_points("checkout", buckets))

    assert runs_with_change <= 5


def test_change_point_direction_down():
    rng = np.random.default_rng(3)

    points = find_change_points("checkout", daily_series(rng, [0.4, 0.1], [10, 10], 40))

    assert [point.direction for point in points] == ["down"]


def test_change_point_empty_series():
    assert find_change_points("checkout", []) == []


def test_change_point_too_few_submissions():
    buckets = [(T0 + timedelta(days=day), 5, 0 if day < 3 else 5) for day in range(6)]

    assert find_change_points("checkout", buckets) == []


def test_change_point_rejects_unsorted():
    buckets = [(T0 + timedelta(days=1), 10, 1), (T0, 10, 1)]

    with pytest.raises(ValueError, match="not after the previous bucket"):
        find_change_points("checkout", buckets)


def test_change_point_rejects_k_above_n():
    with pytest.raises(ValueError, match=r"bucket 0 .*k=11"):
        find_change_points("checkout", [(T0, 10, 11)])


def make_point(deployment: str, at: datetime) -> ChangePoint:
    return ChangePoint(deployment, at, 100, 10, 100, 30, 0.1, 0.3, 0.001, "up")


def test_label_by_deployment():
    explained = make_point("checkout", T0 + timedelta(days=5))
    other_deployment = make_point("search", T0 + timedelta(days=5))
    far = make_point("checkout", T0 + timedelta(days=20))
    markers = {"checkout": [T0 + timedelta(days=4, hours=12)]}

    labels = label_unexplained([explained, other_deployment, far], markers, timedelta(days=1))

    assert labels == [(explained, False), (other_deployment, True), (far, True)]


def test_label_plain_marker_list():
    point = make_point("checkout", T0 + timedelta(days=5))

    labels = label_unexplained([point], [T0 + timedelta(days=6)], timedelta(days=1))

    assert labels == [(point, False)]


def test_label_rejects_naive_markers():
    point = make_point("checkout", T0)

    with pytest.raises(TypeError, match="timezone-aware"):
        label_unexplained([point], {"checkout": [datetime(2026, 11, 2)]}, timedelta(days=1))


def test_label_rejects_negative_tolerance():
    with pytest.raises(ValueError, match="tolerance"):
        label_unexplained([], [], timedelta(days=-1))
