"""Expected and actual values side by side as indented JSON, with the differing parts marked.

`compare` lays out both values as lines of text segments, marking what
differs: the part of a changed scalar between the prefix and suffix both
sides share, or the whole of a key that only one side has, a reordered
list or a value that changed type. Unchanged stretches longer than a few
lines fold into one "unchanged lines" line. `to_html` turns the result into
HTML in which every text from data is escaped, so a value is shown as text
whatever it contains. No Streamlit here.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

from ledger.analysis import MISSING, Difference, classify_divergence, diff_inputs, index_path, key_path

INDENT = "  "
CONTEXT_LINES = 3
MAX_LINES = 400
MAX_LINE_CHARS = 300
# Causes whose difference covers the whole node at the path, not a part of one scalar.
WHOLE_NODE_CAUSES = frozenset({"reordering", "type_change", "missing_key", "extra_key", "control_flow"})
EXPECTED_COLOR = "rgba(220, 38, 38, 0.28)"
ACTUAL_COLOR = "rgba(22, 163, 74, 0.28)"
ABSENT_TEXT = "(absent)"


@dataclass(frozen=True)
class Segment:
    """A piece of one line's text; `marked` pieces differ from the other side."""

    text: str
    marked: bool = False


@dataclass(frozen=True)
class Line:
    """One line of a side: its segments, or a note such as a fold of unchanged lines when `note` is set."""

    segments: tuple[Segment, ...]
    note: bool = False

    @property
    def marked(self) -> bool:
        return any(segment.marked for segment in self.segments)

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments)


@dataclass(frozen=True)
class Comparison:
    """Both sides as lines, and the differences they were marked from."""

    expected: tuple[Line, ...]
    actual: tuple[Line, ...]
    differences: tuple[Difference, ...]


def compare(expected: Any, actual: Any, *, differences: list[Difference] | None = None) -> Comparison:
    """Lay out `expected` and `actual` (JSON values, or `analysis.MISSING` for an absent side) with marks.

    `differences` defaults to `analysis.diff_inputs(expected, actual)`. When
    the values cannot be compared (`diff_inputs` raises), both sides are
    marked whole.
    """
    if differences is None:
        try:
            differences = diff_inputs(expected, actual)
        except (TypeError, ValueError):
            differences = [Difference("", "other_value", expected, actual)]
    expected_marks: dict[str, Any] = {}
    actual_marks: dict[str, Any] = {}
    for difference in differences:
        whole = difference.cause in WHOLE_NODE_CAUSES or isinstance(difference.expected, (dict, list)) \
            or isinstance(difference.actual, (dict, list))
        if whole or difference.expected is MISSING or difference.actual is MISSING:
            expected_marks[difference.path] = _WHOLE
            actual_marks[difference.path] = _WHOLE
            continue
        expected_text, actual_text = _scalar_text(difference.expected), _scalar_text(difference.actual)
        expected_marks[difference.path] = _differing_span(expected_text, actual_text)
        actual_marks[difference.path] = _differing_span(actual_text, expected_text)
    return Comparison(
        expected=tuple(_fold(_layout(expected, expected_marks))),
        actual=tuple(_fold(_layout(actual, actual_marks))),
        differences=tuple(differences),
    )


def compare_divergence(divergence_type: str, expected: Any, actual: Any) -> Comparison:
    """Lay out a stored divergence's expected and actual values, marked by the classifier's differences.

    An action mismatch marks both action names whole; any other type compares
    the values as inputs. `expected` or `actual` is `analysis.MISSING` when the
    SDK sent no such value.
    """
    names = ("expected", "actual") if divergence_type == "action_mismatch" else ("expected_inputs", "actual_inputs")
    divergence: dict[str, Any] = {"type": divergence_type}
    if expected is not MISSING:
        divergence[names[0]] = expected
    if actual is not MISSING:
        divergence[names[1]] = actual
    try:
        differences = classify_divergence(divergence)
    except (TypeError, ValueError):
        differences = [Difference("", "other_value", expected, actual)]
    return compare(expected, actual, differences=differences)


class _Whole:
    """Mark of a node that differs as a whole."""


_WHOLE = _Whole()


def _scalar_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _differing_span(text: str, other: str) -> tuple[int, int]:
    """Return (start, end) of the part of `text` between the prefix and suffix it shares with `other`."""
    prefix = 0
    limit = min(len(text), len(other))
    while prefix < limit and text[prefix] == other[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and text[len(text) - 1 - suffix] == other[len(other) - 1 - suffix]:
        suffix += 1
    return prefix, len(text) - suffix


def _layout(value: Any, marks: dict[str, Any]) -> list[Line]:
    """Write `value` as indented JSON lines, marking the nodes and spans of `marks` (keyed by path)."""
    if value is MISSING:
        return [Line((Segment(ABSENT_TEXT, marked="" in marks),))]
    lines: list[Line] = []
    # Each task: (value, path, depth, prefix text such as '"key": ', trailing comma, marked as a whole).
    stack: list[tuple] = [(value, "", 0, "", "", False)]
    while stack:
        task = stack.pop()
        if task[0] is _CLOSE:
            _, closing, depth, comma, whole = task
            lines.append(Line((Segment(INDENT * depth), Segment(closing + comma, whole))))
            continue
        node, path, depth, prefix, comma, whole = task
        mark = marks.get(path)
        whole = whole or mark is _WHOLE
        indent = Segment(INDENT * depth)
        if isinstance(node, dict) and node:
            lines.append(Line((indent, Segment(prefix + "{", whole))))
            stack.append((_CLOSE, "}", depth, comma, whole))
            items = list(node.items())
            for position in range(len(items) - 1, -1, -1):
                key, child = items[position]
                child_prefix = json.dumps(key, ensure_ascii=False) + ": "
                child_comma = "," if position < len(items) - 1 else ""
                stack.append((child, key_path(path, key), depth + 1, child_prefix, child_comma, whole))
            continue
        if isinstance(node, list) and node:
            lines.append(Line((indent, Segment(prefix + "[", whole))))
            stack.append((_CLOSE, "]", depth, comma, whole))
            for position in range(len(node) - 1, -1, -1):
                child_comma = "," if position < len(node) - 1 else ""
                stack.append((node[position], index_path(path, position), depth + 1, "", child_comma, whole))
            continue
        if isinstance(node, dict):
            text = "{}"
        elif isinstance(node, list):
            text = "[]"
        else:
            text = _scalar_text(node)
        if whole:
            lines.append(Line((indent, Segment(prefix + text + comma, True))))
        elif isinstance(mark, tuple):
            start, end = mark
            lines.append(Line((
                indent, Segment(prefix + text[:start]), Segment(text[start:end], True), Segment(text[end:] + comma),
            )))
        else:
            lines.append(Line((indent, Segment(prefix + text + comma))))
    return lines


_CLOSE = object()


def _fold(lines: list[Line]) -> list[Line]:
    """Fold unchanged stretches beyond `CONTEXT_LINES` of a marked line, and cut to `MAX_LINES` lines."""
    marked = [index for index, line in enumerate(lines) if line.marked]
    if not marked:
        keep = set(range(min(len(lines), MAX_LINES)))
    else:
        keep = set()
        for index in marked:
            keep.update(range(max(0, index - CONTEXT_LINES), min(len(lines), index + CONTEXT_LINES + 1)))
        keep.update((0, len(lines) - 1))
    folded: list[Line] = []
    skipped: list[Line] = []
    for index, line in enumerate(lines):
        if index not in keep:
            skipped.append(line)
            continue
        folded.extend(_skip(skipped))
        skipped = []
        folded.append(_cut(line))
    folded.extend(_skip(skipped))
    if len(folded) > MAX_LINES:
        rest = len(folded) - MAX_LINES
        folded = folded[:MAX_LINES] + [_note(f"… {rest:,} more line{'s' if rest != 1 else ''} not shown")]
    return folded


def _skip(lines: list[Line]) -> list[Line]:
    """Return a fold note for unchanged lines, or the line itself when only one would be folded."""
    if len(lines) <= 1:
        return [_cut(line) for line in lines]
    return [_note(f"… {len(lines):,} unchanged lines")]


def _note(text: str) -> Line:
    return Line((Segment(text),), note=True)


def _cut(line: Line) -> Line:
    """Cut a line to `MAX_LINE_CHARS` characters, keeping its marks, with an ellipsis where text was dropped."""
    if len(line.text) <= MAX_LINE_CHARS:
        return line
    kept_segments: list[Segment] = []
    room = MAX_LINE_CHARS - 1
    for segment in line.segments:
        if room <= 0:
            break
        kept_segments.append(Segment(segment.text[:room], segment.marked))
        room -= len(segment.text[:room])
    kept_segments.append(Segment("…"))
    return Line(tuple(kept_segments))


def _side_html(title: str, lines: tuple[Line, ...], color: str) -> str:
    rendered = []
    for line in lines:
        if line.note:
            rendered.append(f'<span style="opacity:0.6;font-style:italic">{html.escape(line.text)}</span>')
            continue
        parts = []
        for segment in line.segments:
            text = html.escape(segment.text, quote=True)
            parts.append(f'<span style="background:{color};border-radius:2px">{text}</span>' if segment.marked else text)
        rendered.append("".join(parts))
    body = "\n".join(rendered)
    return (
        '<div style="flex:1 1 0;min-width:0">'
        f'<div style="font-weight:600;margin-bottom:4px">{html.escape(title)}</div>'
        '<pre style="margin:0;padding:8px;white-space:pre-wrap;overflow-wrap:anywhere;font-size:0.85em;'
        'border:1px solid rgba(128,128,128,0.35);border-radius:4px;max-height:480px;overflow:auto">'
        f"{body}</pre></div>"
    )


def to_html(comparison: Comparison, expected_title: str = "Expected", actual_title: str = "Actual") -> str:
    """Return both sides as two columns of preformatted text; every text from data is HTML-escaped."""
    return (
        '<div style="display:flex;gap:12px;align-items:flex-start">'
        + _side_html(expected_title, comparison.expected, EXPECTED_COLOR)
        + _side_html(actual_title, comparison.actual, ACTUAL_COLOR)
        + "</div>"
    )
