"""Response header values that are always valid HTTP: ids from training files may hold anything.

A model id, family or revision comes from user data and may hold CR/LF, other control characters or
non-ASCII text; written into a header as is, it would be refused by the ASGI server (the connection drops) or
split the header. :func:`header_value` percent-encodes (UTF-8, as in URLs) every character outside printable
ASCII, and ``%`` itself, so the value is always a legal header and decodes back with
``urllib.parse.unquote``. Ids made of Hub characters (letters, digits, ``-_./``) are left unchanged.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["header_value"]

_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_value(value: object) -> str:
    """``value`` as a legal HTTP header value (see the module docstring)."""
    return quote(str(value), safe=_SAFE)
