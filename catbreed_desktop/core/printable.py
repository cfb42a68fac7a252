"""Text for people: counts with the right plural, and names that are safe to show anywhere.

File names on Linux are bytes; Python decodes the ones that are not UTF-8 with surrogate escapes
(`b'caf\\xe9.jpg'` becomes `'caf\\udce9.jpg'`), which a strict UTF-8 stream refuses to write. Labels
come from model bundles anyone can make, and an ANSI escape in one would drive the user's terminal.
`printable` turns both into visible escapes, so what is shown names the thing and cannot act on
the terminal; the path itself is never changed, only its display.
"""

from __future__ import annotations

import os
import unicodedata


def printable(value: str | os.PathLike[str]) -> str:
    """`value` with undecodable bytes shown as `\\xNN` and control characters as `\\xNN` / `\\uNNNN`."""
    text = os.fspath(value)
    if text.isprintable():
        return text
    return "".join(_escaped(character) for character in text)


def _escaped(character: str) -> str:
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not valid UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if character == " " or unicodedata.category(character)[0] not in ("C", "Z"):
        return character
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """ "1 photo", "3 photos", "1 copy", "2 copies" (pass the plural where it is not singular + "s")."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"
