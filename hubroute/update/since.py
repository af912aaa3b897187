"""The crawl cutoff of an update (``--since``): the forms it may take, read into one UTC ``datetime``.

:class:`~hubroute.update.config.UpdateConfig` reads its ``since`` here, once; the crawl, the crawl state and
the summary use that ``datetime`` (and its ``isoformat()``) from then on.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

__all__ = ["SINCE_FORMS", "parse_since"]

SINCE_FORMS = "YYYY-MM (e.g. 2026-05), YYYY-MM-DD or an ISO-8601 time (e.g. 2026-05-15T10:00:00Z)"
"""The forms a crawl cutoff may take, as error messages name them."""


def parse_since(value: str | date | datetime) -> datetime:
    """Parse a crawl cutoff: ``YYYY-MM``, ``YYYY-MM-DD``, an ISO-8601 time, a ``date`` or a ``datetime``.

    Args:
        value: The cutoff (a naive time is taken as UTC).

    Returns:
        A timezone-aware UTC datetime; ``YYYY-MM`` means the first day of that month.

    Raises:
        ValueError: the text is not one of those forms.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):  # a YAML ``since: 2026-05-15`` is read as a date
        moment = datetime(value.year, value.month, value.day)
    else:
        try:
            moment = _read_date(str(value).strip())
        except ValueError:
            raise ValueError(f"Cannot read the date {value!r}: use {SINCE_FORMS}.") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _read_date(text: str) -> datetime:
    """``YYYY-MM``, ``YYYY-MM-DD`` or an ISO-8601 time (``ValueError`` otherwise), naive or aware."""
    for form in ("%Y-%m", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, form)
        except ValueError:
            pass
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
