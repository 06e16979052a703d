"""Links to a run's page on the agent platform, built from the address in $REPLAY_LEDGER_PLATFORM_URL.

The setting is the platform's run page address with ``{run_id}`` where the
run id goes, such as ``https://sentinel.example.com/runs/{run_id}``. Without
``{run_id}`` the run id is appended as the last path segment. Only http and
https addresses with a host are accepted. The run id is percent-encoded with
no safe characters, so an id like ``../admin?x=1#y`` stays one path segment
and can neither change the host nor add parameters.
"""

from __future__ import annotations

import os
from urllib.parse import quote, urlsplit

PLATFORM_URL_ENV = "REPLAY_LEDGER_PLATFORM_URL"
RUN_ID_PLACEHOLDER = "{run_id}"
SCHEMES = ("http", "https")
MAX_TEMPLATE_CHARS = 2_000


class InvalidPlatformUrl(ValueError):
    """The configured platform address is not an http(s) URL with a host."""


def platform_template(environ: dict[str, str] | None = None) -> str | None:
    """Return the configured run page template, or None when $REPLAY_LEDGER_PLATFORM_URL is unset or empty.

    Raises InvalidPlatformUrl when it is set to anything but an http(s) address with a host.
    """
    value = (os.environ if environ is None else environ).get(PLATFORM_URL_ENV, "").strip()
    if not value:
        return None
    check_template(value)
    return value


def check_template(template: str) -> None:
    """Raise InvalidPlatformUrl unless `template` is an http(s) address with a host and at most one ``{run_id}``."""
    excerpt = template if len(template) <= 80 else template[:79] + "…"
    if len(template) > MAX_TEMPLATE_CHARS:
        raise InvalidPlatformUrl(
            f"{PLATFORM_URL_ENV} is {len(template):,} characters long; give the run page address, "
            f"such as https://sentinel.example.com/runs/{RUN_ID_PLACEHOLDER}"
        )
    parts = urlsplit(template.replace(RUN_ID_PLACEHOLDER, "x"))
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        raise InvalidPlatformUrl(
            f"{PLATFORM_URL_ENV} is {excerpt!r}, which is not an http or https address with a host; "
            f"set it to the platform's run page, such as https://sentinel.example.com/runs/{RUN_ID_PLACEHOLDER}"
        )
    if RUN_ID_PLACEHOLDER in urlsplit(template).netloc:
        raise InvalidPlatformUrl(
            f"{PLATFORM_URL_ENV} is {excerpt!r}, which puts {RUN_ID_PLACEHOLDER} in the host, where a run id "
            "could choose the site; put it in the path or query"
        )
    if template.count(RUN_ID_PLACEHOLDER) > 1:
        raise InvalidPlatformUrl(
            f"{PLATFORM_URL_ENV} is {excerpt!r}, which has {RUN_ID_PLACEHOLDER} more than once; keep one"
        )
    if any(character.isspace() or ord(character) < 0x20 for character in template):
        raise InvalidPlatformUrl(f"{PLATFORM_URL_ENV} is {excerpt!r}, which contains spaces or control characters")


def run_page_url(template: str, run_id: str) -> str:
    """Return the platform's page of `run_id` from a checked template; the id is percent-encoded."""
    check_template(template)
    encoded = quote(run_id, safe="")
    if RUN_ID_PLACEHOLDER in template:
        return template.replace(RUN_ID_PLACEHOLDER, encoded)
    return template.rstrip("/") + "/" + encoded
