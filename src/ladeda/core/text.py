"""Counts in words for messages and reports, so a count of one reads "1 file", not "1 files"."""


def counted(n: int, noun: str) -> str:
    """`n` (with thousands separators) and the noun, plural unless n is 1: "1 group", "1,200 groups"."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
