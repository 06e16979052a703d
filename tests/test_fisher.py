"""Fisher's exact test for many tables at once (`ledger.fisher`) against scipy's one-table `fisher_exact`."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest
from scipy.stats import fisher_exact

from ledger import fisher
from ledger.analysis import judge_marker, judge_markers

EDGE_TABLES = [
    (0, 0, 0, 0), (0, 5, 0, 7), (5, 0, 7, 0), (3, 0, 0, 4), (0, 3, 4, 0), (1, 1, 1, 1), (10, 10, 10, 10),
    (0, 100_000, 100_000, 0), (1, 0, 0, 1), (0, 1, 1, 0), (7, 93, 7, 93), (25_000, 75_000, 30_000, 70_000),
    (10_000, 90_000, 12_000, 88_000), (1, 99, 0, 3), (0, 20, 20, 0), (2, 18, 9, 11),
]


def generated_tables(count: int, seed: int) -> list[tuple[int, int, int, int]]:
    """Return tables from a handful of submissions a side up to 150,000, with equal, close and distant rates."""
    generator = random.Random(seed)
    tables = []
    for _ in range(count):
        scale = generator.choice([1, 3, 10, 50, 300, 5_000, 150_000])
        before_n, after_n = generator.randint(0, scale), generator.randint(0, scale)
        before_rate = generator.random()
        after_rate = min(max(before_rate + generator.choice([0, 0, 0.001, 0.05, -0.05, 0.3, -0.3]), 0), 1)
        before_k = min(before_n, max(0, round(before_n * before_rate) + generator.randint(-2, 2)))
        after_k = min(after_n, max(0, round(after_n * after_rate) + generator.randint(-2, 2)))
        tables.append((before_k, before_n - before_k, after_k, after_n - after_k))
    return tables


def scipy_p_value(table: tuple[int, int, int, int]) -> float:
    a, b, c, d = table
    return float(fisher_exact([[a, b], [c, d]], alternative="two-sided").pvalue)


@pytest.mark.parametrize("tables", [EDGE_TABLES, generated_tables(400, seed=1), generated_tables(400, seed=2)],
                         ids=["edge-cases", "generated-1", "generated-2"])
def test_p_values_equal_scipy(tables: list[tuple[int, int, int, int]]):
    expected = [scipy_p_value(table) for table in tables]

    assert fisher.p_values(tables) == expected


def test_p_values_empty():
    assert fisher.p_values([]) == []


def test_judge_markers_equal_one_by_one():
    deployed_at = datetime(2026, 3, 1, tzinfo=timezone.utc)
    markers = [("prod", str(index), deployed_at, a + b, a, c + d, c)
               for index, (a, b, c, d) in enumerate(EDGE_TABLES + generated_tables(60, seed=3))]

    together = judge_markers(markers, alpha=0.01, min_effect=0.05, min_submissions=20)

    assert together == [judge_marker(*marker, alpha=0.01, min_effect=0.05, min_submissions=20) for marker in markers]
    assert {verdict.verdict for verdict in together} >= {"regression", "improvement", "no_change", "not_judged"}


def test_judge_markers_rejects_bad_count():
    deployed_at = datetime(2026, 3, 1, tzinfo=timezone.utc)

    with pytest.raises(ValueError, match=r"after: submissions with divergences \(k=5\) exceed"):
        judge_markers([("prod", "1", deployed_at, 10, 1, 10, 2), ("prod", "2", deployed_at, 10, 1, 4, 5)])
