"""Regression checks over the ledger: judge every deploy marker and find shifts no marker explains.

This module joins the queries (`ledger.queries.deploys`,
`ledger.queries.trends`) to the statistics (`ledger.analysis`) and builds the
report that the Trends page shows and ``replay-ledger check`` prints. It runs
no SQL of its own.

Defaults: windows of 7 days each side, Fisher's exact test at alpha 0.01, a
minimum effect of 5 percentage points and at least 20 submissions a side.
The alpha is stricter than the usual 0.05 because a CI gate runs after every
deploy. At 0.05, one in twenty deploys with no effect at all would fail it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ledger.analysis import (
    ChangePoint, MarkerVerdict, find_change_points, judge_markers, label_unexplained, split_supported,
)
from ledger.queries import Filters
from ledger.queries import deploys as deployment_queries
from ledger.queries import trends
from ledger.queries.deploys import Marker, MarkerWindow

DEFAULT_ALPHA = 0.01
DEFAULT_MIN_EFFECT = 0.05
DEFAULT_MIN_SUBMISSIONS = 20
SHIFT_ALPHA = 0.01
SHIFT_MIN_SUBMISSIONS = 30
SHIFT_BUCKET = "day"
JSON_FORMAT = "replay-ledger check"
JSON_VERSION = 1

_UNITS = {
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_SUBMISSION_UNITS = ("sub", "subs", "submissions")
_AMOUNT = re.compile(r"\s*([0-9]{1,9})\s*([A-Za-z]*)\s*")


class InvalidCheckRequest(ValueError):
    """A window, duration or test setting that cannot be used."""


@dataclass(frozen=True)
class Window:
    """How much data each side of a marker takes: a length of time, or a number of submissions."""

    length: timedelta | None = timedelta(days=7)
    submissions: int | None = None

    def describe(self) -> str:
        """Return the window as a phrase: ``7 days each side`` or ``200 submissions each side``."""
        if self.submissions is not None:
            return f"{self.submissions:,} submissions each side"
        return f"{describe_duration(self.length)} each side"

    def to_json(self) -> dict[str, Any]:
        if self.submissions is not None:
            return {"kind": "submissions", "per_side": self.submissions}
        return {"kind": "time", "seconds": self.length.total_seconds()}


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """Parse ``30m``, ``12h``, ``7d`` or ``2w`` into a positive timedelta; raise InvalidCheckRequest otherwise."""
    match = _AMOUNT.fullmatch(text or "")
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS or int(match.group(1)) == 0:
        raise InvalidCheckRequest(
            f"{what} {str(text)[:40]!r} is not a positive number with a unit; use e.g. 90m, 12h, 7d or 2w"
        )
    return int(match.group(1)) * _UNITS[unit]


def parse_window(text: str) -> Window:
    """Parse a window: a duration (``7d``, ``36h``) or a submission count per side (``200sub``).

    A bare number is rejected, because it could mean days or submissions.
    """
    match = _AMOUNT.fullmatch(text or "")
    if match and match.group(2).lower() in _SUBMISSION_UNITS:
        count = int(match.group(1))
        if count < 1:
            raise InvalidCheckRequest(f"window {text!r} takes no submissions; use at least 1sub")
        return Window(length=None, submissions=count)
    if match and not match.group(2):
        raise InvalidCheckRequest(
            f"window {text.strip()!r} has no unit; write {text.strip()}d for days or {text.strip()}sub for "
            f"submissions each side"
        )
    try:
        return Window(length=parse_duration(text, "window"))
    except InvalidCheckRequest:
        raise InvalidCheckRequest(
            f"window {str(text)[:40]!r} is not a duration or a submission count; use e.g. 7d, 36h or 200sub"
        ) from None


def describe_duration(length: timedelta) -> str:
    """Return a length of time in the largest whole units: ``7 days``, ``2 days 6 h``, ``45 min``."""
    seconds = int(length.total_seconds())
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes = seconds // 60
    parts = []
    if days:
        parts.append(f"{days} day{'s' if days != 1 else ''}")
    if hours:
        parts.append(f"{hours} h")
    if minutes and not days:
        parts.append(f"{minutes} min")
    return " ".join(parts) or "less than a minute"


@dataclass(frozen=True)
class Settings:
    """The knobs of a regression check; `check` validates them."""

    window: Window = Window()
    alpha: float = DEFAULT_ALPHA
    min_effect: float = DEFAULT_MIN_EFFECT
    min_submissions: int = DEFAULT_MIN_SUBMISSIONS

    def check(self) -> "Settings":
        """Return self, or raise InvalidCheckRequest naming the setting that is out of range."""
        if not 0 < self.alpha < 1:
            raise InvalidCheckRequest(f"alpha must be between 0 and 1 (exclusive), got {self.alpha!r}")
        if not 0 <= self.min_effect <= 1:
            raise InvalidCheckRequest(
                f"the minimum effect must be a difference of rates between 0 and 1, got {self.min_effect!r}; "
                f"0.05 means 5 percentage points"
            )
        if self.min_submissions < 1:
            raise InvalidCheckRequest(f"the minimum submissions a side must be at least 1, got {self.min_submissions!r}")
        return self


@dataclass(frozen=True)
class MarkerResult:
    """One marker's windows, the verdict on them and, when the window was shortened, why."""

    window: MarkerWindow
    verdict: MarkerVerdict
    window_note: str | None = None

    @property
    def marker(self) -> Marker:
        return self.window.marker

    @property
    def effect(self) -> float | None:
        """After rate minus before rate, or None when a side is empty."""
        if self.verdict.before_rate is None or self.verdict.after_rate is None:
            return None
        return self.verdict.after_rate - self.verdict.before_rate

    @property
    def reason(self) -> str:
        """The verdict's reason, followed by the window note when there is one."""
        return self.verdict.reason + (f"; {self.window_note}" if self.window_note else "")


@dataclass(frozen=True)
class Shift:
    """A change point in a deployment's daily (or other bucketed) divergence rate.

    `unexplained` is True when no marker of the deployment explains it (see
    `find_shifts`). `nearest_marker` is the marker that explains it, or else
    the deployment's closest marker, if it has any.
    """

    point: ChangePoint
    unexplained: bool
    nearest_marker: Marker | None
    bucket: str
    zone: str


@dataclass(frozen=True)
class RegressionReport:
    """Everything one check found: a result per marker judged, and the shifts in the series."""

    results: list[MarkerResult]
    shifts: list[Shift]
    settings: Settings
    as_of: datetime
    deployments: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    shifts_checked: bool = True

    @property
    def regressions(self) -> list[MarkerResult]:
        return [result for result in self.results if result.verdict.verdict == "regression"]

    @property
    def unexplained_rises(self) -> list[Shift]:
        """Unexplained shifts in which the divergence rate went up."""
        return [shift for shift in self.shifts if shift.unexplained and shift.point.direction == "up"]

    @property
    def regression_detected(self) -> bool:
        """True when a marker was judged a regression or the rate rose with no marker to explain it."""
        return bool(self.regressions or self.unexplained_rises)


def judge_windows(windows: list[MarkerWindow], settings: Settings, as_of: datetime) -> list[MarkerResult]:
    """Judge each marker's windows with Fisher's exact test (`ledger.analysis.judge_markers`)."""
    settings.check()
    verdicts = judge_markers(
        [(window.marker.deployment, window.marker.version, window.marker.deployed_at,
          window.before_n, window.before_k, window.after_n, window.after_k) for window in windows],
        alpha=settings.alpha, min_effect=settings.min_effect, min_submissions=settings.min_submissions,
    )
    return [
        MarkerResult(window, verdict, _window_note(window, settings.window, as_of))
        for window, verdict in zip(windows, verdicts)
    ]


def _window_note(window: MarkerWindow, requested: Window, as_of: datetime) -> str | None:
    """Say why a time window is shorter than requested; None when it is not, or for submission counts."""
    if requested.length is None or window.after_end is None:
        return None
    deployed_at = window.marker.deployed_at
    length = window.after_end - deployed_at
    if length >= requested.length:
        return None
    if length <= timedelta(0):
        return f"nothing after the deploy is counted yet, because it is not before {_utc_text(as_of)}"
    shortened = f"the windows are shortened to {describe_duration(length)} each side"
    if window.previous_at is not None and deployed_at - window.previous_at == length:
        return f"{shortened} by the previous deploy at {_utc_text(window.previous_at)}"
    if window.next_at is not None and window.next_at - deployed_at == length:
        return f"{shortened} by the next deploy at {_utc_text(window.next_at)}"
    return f"{shortened}, the time from the deploy to {_utc_text(as_of)}"


def _utc_text(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def find_shifts(
    series: dict[str, list[tuple[datetime, int, int]]],
    markers: list[Marker],
    bucket: str,
    zone: str,
    *,
    alpha: float = SHIFT_ALPHA,
    min_effect: float = DEFAULT_MIN_EFFECT,
    min_submissions: int = SHIFT_MIN_SUBMISSIONS,
) -> list[Shift]:
    """Find change points in each deployment's bucketed series and label those no marker explains.

    A marker of the same deployment explains a change point when it lies
    within one bucket (its nominal length) of it, or when splitting the
    series at the marker fits the data about as well as the change point
    does (`ledger.analysis.split_supported`): daily counts are noisy enough
    to put the best split a few days before or after the deploy that caused
    it. Returns shifts ordered by time.
    """
    tolerance = trends.BUCKET_SIZES[bucket][1]
    by_deployment: dict[str, list[Marker]] = {}
    for marker in markers:
        by_deployment.setdefault(marker.deployment, []).append(marker)
    points: list[ChangePoint] = []
    for deployment, buckets in series.items():
        points += find_change_points(
            deployment, buckets, alpha=alpha, min_effect=min_effect, min_submissions=min_submissions
        )
    marker_times = {name: [marker.deployed_at for marker in items] for name, items in by_deployment.items()}
    shifts = []
    for point, unexplained in label_unexplained(points, marker_times, tolerance):
        nearby = sorted(by_deployment.get(point.deployment, []), key=lambda marker: abs(marker.deployed_at - point.at))
        explaining = nearby[0] if nearby and not unexplained else None
        if unexplained:
            buckets = series[point.deployment]
            explaining = next((marker for marker in nearby if split_supported(buckets, point, marker.deployed_at)),
                              None)
        shifts.append(Shift(point, explaining is None, explaining or (nearby[0] if nearby else None), bucket, zone))
    return sorted(shifts, key=lambda shift: (shift.point.at, shift.point.deployment))


def scan(
    ledger: Path,
    *,
    as_of: datetime,
    deployments: tuple[str, ...] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    settings: Settings = Settings(),
    shifts: bool = True,
) -> RegressionReport:
    """Judge the markers deployed in [since, until) and, unless `shifts` is False, find shifts in that span.

    Shifts are searched in daily UTC buckets of the submissions in [since,
    until) before `as_of`. Raises InvalidCheckRequest for invalid settings;
    store.LedgerMissing and store.LedgerBusy pass through.
    """
    settings.check()
    window = settings.window
    windows = deployment_queries.marker_windows(
        ledger, as_of, deployments, since, until, window=window.length, submissions=window.submissions
    )
    results = judge_windows(windows, settings, as_of)
    found: list[Shift] = []
    if shifts:
        end = min(until, as_of) if until is not None else as_of
        series = trends.divergence_buckets(ledger, Filters(since, end, deployments), SHIFT_BUCKET, "UTC")
        all_markers = deployment_queries.markers(ledger, deployments)
        found = find_shifts(series, all_markers, SHIFT_BUCKET, "UTC", min_effect=settings.min_effect)
    return RegressionReport(results, found, settings, as_of, deployments, since, until, shifts)


def _instant(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _side(start: datetime | None, end: datetime | None, n: int, k: int) -> dict[str, Any]:
    return {
        "start": _instant(start),
        "end": _instant(end),
        "submissions": n,
        "with_divergence": k,
        "rate": k / n if n else None,
    }


def _marker_json(marker: Marker | None) -> dict[str, Any] | None:
    if marker is None:
        return None
    return {
        "deployment": marker.deployment,
        "version": marker.version,
        "deployed_at": _instant(marker.deployed_at),
        "note": marker.note,
        "origin": marker.origin,
    }


def _result_json(result: MarkerResult) -> dict[str, Any]:
    window = result.window
    deployed_at = window.marker.deployed_at
    return {
        **_marker_json(window.marker),
        "verdict": result.verdict.verdict,
        "reason": result.reason,
        "before": _side(window.before_start, deployed_at, window.before_n, window.before_k),
        "after": _side(deployed_at, window.after_end, window.after_n, window.after_k),
        "effect": result.effect,
        "p_value": result.verdict.p_value,
    }


def _shift_json(shift: Shift) -> dict[str, Any]:
    point = shift.point
    return {
        "deployment": point.deployment,
        "at": _instant(point.at),
        "direction": point.direction,
        "before": {"submissions": point.before_n, "with_divergence": point.before_k, "rate": point.before_rate},
        "after": {"submissions": point.after_n, "with_divergence": point.after_k, "rate": point.after_rate},
        "effect": point.after_rate - point.before_rate,
        "p_value": point.p_value,
        "unexplained": shift.unexplained,
        "nearest_marker": _marker_json(shift.nearest_marker),
        "bucket": shift.bucket,
        "zone": shift.zone,
    }


def finding_lines(report: RegressionReport) -> list[str]:
    """Return one line per finding: each regression, then each unexplained rise."""
    lines = []
    for result in report.regressions:
        marker, verdict = result.marker, result.verdict
        lines.append(
            f"regression: {marker.deployment} {marker.version} deployed {_utc_text(marker.deployed_at)}: "
            f"{_rate_text(verdict.before_k, verdict.before_n)} → {_rate_text(verdict.after_k, verdict.after_n)} "
            f"of submissions diverged (p={verdict.p_value:.3g}, {report.settings.window.describe()})"
        )
    for shift in report.unexplained_rises:
        point = shift.point
        lines.append(
            f"unexplained rise: {point.deployment} from {_utc_text(point.at)}: "
            f"{_rate_text(point.before_k, point.before_n)} → {_rate_text(point.after_k, point.after_n)} "
            f"of submissions diverged (p={point.p_value:.3g}, no deploy marker within a {shift.bucket})"
        )
    return lines


def _rate_text(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}% ({k:,} of {n:,})" if n else "— (0 of 0)"


def report_json(report: RegressionReport, ledger: Path) -> dict[str, Any]:
    """Return the report in the stable JSON form of ``replay-ledger check --json`` (see docs/check.md)."""
    findings = [
        {"kind": "regression", **_result_json(result)} for result in report.regressions
    ] + [
        {"kind": "unexplained_rise", **_shift_json(shift)} for shift in report.unexplained_rises
    ]
    settings = report.settings
    return {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "ledger": str(ledger),
        "as_of": _instant(report.as_of),
        "settings": {
            "deployments": list(report.deployments),
            "since": _instant(report.since),
            "until": _instant(report.until),
            "window": settings.window.to_json(),
            "alpha": settings.alpha,
            "min_effect": settings.min_effect,
            "min_submissions": settings.min_submissions,
            "shifts": {
                "checked": report.shifts_checked,
                "bucket": SHIFT_BUCKET,
                "zone": "UTC",
                "alpha": SHIFT_ALPHA,
                "min_submissions": SHIFT_MIN_SUBMISSIONS,
            },
        },
        "regression_detected": report.regression_detected,
        "findings": findings,
        "markers": [_result_json(result) for result in report.results],
        "shifts": [_shift_json(shift) for shift in report.shifts],
    }


# ---------------------------------------------------------------------------
# Deploy markers inferred from a version field in the data

INFERRED_ORIGIN = "inferred"


def unmarked_changes(
    changes: list[deployment_queries.VersionChange], markers: list[Marker]
) -> list[deployment_queries.VersionChange]:
    """Return the version changes whose deployment has no marker for that version yet, of any origin.

    Matching by version rather than by time keeps a repeated inference from
    adding a second marker when older submissions of a version arrive later
    and move its first appearance.
    """
    marked = {(marker.deployment, marker.version) for marker in markers}
    return [change for change in changes if (change.deployment, change.version) not in marked]


def inferred_markers(changes: list[deployment_queries.VersionChange]) -> list[dict[str, Any]]:
    """Return deploy markers for version changes, as `store.add_deploys` takes them (origin ``inferred``)."""
    return [
        {
            "deployment": change.deployment,
            "version": change.version,
            "deployed_at": change.first_seen,
            "note": f"inferred: {change.field} changed from {change.previous_version} to {change.version} "
                    f"in submission {change.submission_id}",
        }
        for change in changes
    ]
