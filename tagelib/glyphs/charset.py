"""Candidate categories of the glyph dataset, grouped by script."""

from __future__ import annotations

import string

LATIN_UPPER = string.ascii_uppercase
LATIN_LOWER = string.ascii_lowercase
DIGITS = string.digits
# Greek and Cyrillic letters whose shapes differ from every Latin letter (Α, Ο, А, О ... would be clones).
GREEK = "ΓΔΘΛΞΠΣΦΨΩαβγδεζηθλμξπσφψω"
CYRILLIC = "БГДЖЗИЛПФЦЧШЩЫЭЮЯбвгджзилпфцчшщыэюя"

GROUPS: dict[str, str] = {
    "latin_upper": LATIN_UPPER,
    "latin_lower": LATIN_LOWER,
    "digit": DIGITS,
    "greek": GREEK,
    "cyrillic": CYRILLIC,
}
REQUIRED = LATIN_UPPER + LATIN_LOWER + DIGITS  # every kept style covers all 62 of these
OPTIONAL = GREEK + CYRILLIC  # kept as categories where at least `min_styles` styles cover them
ALL = REQUIRED + OPTIONAL


def group_of(char: str) -> str:
    """The script group a category belongs to ('latin_upper', 'digit', 'greek', ...)."""
    for name, chars in GROUPS.items():
        if char in chars:
            return name
    raise KeyError(f"{char!r} is not a candidate category; groups: {list(GROUPS)}")
