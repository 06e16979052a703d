"""Deploy logs: CSV or JSON files of deploy markers, read into validated markers.

A CSV log has the header ``deployment,version,deployed_at,note`` (``note`` is
optional); a JSON log is a list of objects with those keys. The whole log is
rejected at its first bad row, so a partly loaded log never looks complete.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from ledger.models import DeployMarker, first_field_error, number_from_text

REQUIRED_COLUMNS = ("deployment", "version", "deployed_at")


class DeployLogError(ValueError):
    """A deploy log could not be read, or one of its rows is invalid; the message names file and row."""


def read_deploy_log(path: Path) -> list[dict[str, Any]]:
    """Return the markers of a deploy log as dicts (deployment, version, deployed_at, note).

    Raises DeployLogError naming the file, the row and the field at the first problem.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise DeployLogError(f"{path}: cannot be read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise DeployLogError(f"{path}: is not UTF-8 text; save the file as UTF-8") from None
    return parse_deploy_log(text, str(path), as_json=path.suffix.lower() == ".json")


def parse_deploy_log(text: str, name: str, *, as_json: bool = False) -> list[dict[str, Any]]:
    """Return the markers of a deploy log given as text; `name` is used in messages."""
    if as_json or text.lstrip().startswith("["):
        try:
            rows = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            raise DeployLogError(f"{name}: invalid JSON: {error}") from None
        if not isinstance(rows, list):
            raise DeployLogError(f"{name}: expected a JSON list of deploys")
        located = [(f"{name}#/{number}", row) for number, row in enumerate(rows)]
    else:
        reader = csv.DictReader(io.StringIO(text))
        missing = set(REQUIRED_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise DeployLogError(
                f"{name}: the header lacks {', '.join(sorted(missing))}; expected deployment,version,deployed_at,note"
            )
        # CSV cells are text, so a deployed_at of epoch seconds is read as the number it spells.
        located = [
            (f"{name}:{number}", {**row, "deployed_at": number_from_text(row.get("deployed_at"))})
            for number, row in enumerate(reader, start=2)
        ]
    markers = []
    for location, row in located:
        if not isinstance(row, dict):
            raise DeployLogError(f"{location}: expected an object with deployment, version, deployed_at")
        try:
            marker = DeployMarker.model_validate(row)
        except ValidationError as error:
            raise DeployLogError(f"{location}: {first_field_error(error)}") from None
        markers.append(marker.model_dump())
    return markers
