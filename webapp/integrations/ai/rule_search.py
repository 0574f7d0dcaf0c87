"""Searching text for the heuristic's rules, fast: Python's re scans a pattern compiled with
IGNORECASE without its literal-prefix search (and a leading \\b stops that search too), so each
rule gets a case-sensitive twin for lower-cased ASCII text, and needles that let most rules be
skipped with `needle in text`. Every shortcut finds exactly what the rule itself finds."""

from __future__ import annotations

import functools
import re
import re._constants as re_constants
import re._parser as re_parser
from collections.abc import Iterator
from dataclasses import dataclass

# Inline flags ((?-i:...)) and escapes that name a character by its code ("\x41") are case
# rules of their own; anchors and lookarounds can tell the parts of a text from the whole.
_INLINE_FLAGS = re.compile(r"\(\?[a-zA-Z-]")
_CODE_ESCAPES = re.compile(r"\\(?:[xuUN0-9])")
_EDGE_SENSITIVE = re.compile(r"[$^]|\\[AZ]|\(\?<?[=!]")


@dataclass(frozen=True)
class Twin:
    """A rule's pattern made case-sensitive, to search lower-cased ASCII text; and needles,
    substrings one of which every match contains (None when no such set was found)."""

    pattern: re.Pattern
    needles: tuple[str, ...] | None


@functools.cache
def lower_case_twin(pattern: re.Pattern) -> Twin | None:
    """The pattern's twin, which finds in lower-cased ASCII text what the pattern finds
    ignoring case in the original: when the pattern is ASCII with no upper-case letter (so no
    \\B, \\D, \\S or \\W), no inline flags and no escape that names a character by its code.
    Python's re scans ignoring case without its literal-prefix search, and a `\\b` first
    stops that search too; `needle in text` skips most patterns at C speed."""
    source = pattern.pattern
    if (not pattern.flags & re.IGNORECASE or not source.isascii() or source != source.lower()
            or _INLINE_FLAGS.search(source) or _CODE_ESCAPES.search(source)):
        return None
    twin = re.compile(source, pattern.flags & ~re.IGNORECASE)
    try:
        needles = _needles(re_parser.parse(source, twin.flags))
    except Exception:   # noqa: BLE001 - the parser is CPython's own; without it, no needles
        needles = None
    return Twin(twin, needles)


def _needles(sequence) -> tuple[str, ...] | None:
    """Substrings one of which every match of the parsed sequence contains: a run of
    literals, or one needle from each branch of an alternation that must match."""
    best: tuple[str, ...] | None = None

    def consider(candidate: tuple[str, ...] | None) -> None:
        nonlocal best
        if candidate and (best is None or min(map(len, candidate)) > min(map(len, best))):
            best = candidate

    run: list[str] = []
    for op, argument in sequence:
        if op is re_constants.LITERAL:
            run.append(chr(argument))
            continue
        consider(("".join(run),) if run else None)
        run = []
        if op is re_constants.BRANCH:
            branches = [_needles(branch) for branch in argument[1]]
            if all(branches):
                consider(tuple(needle for branch in branches for needle in branch))
        elif op is re_constants.SUBPATTERN:
            consider(_needles(argument[3]))
        elif op in (re_constants.MAX_REPEAT, re_constants.MIN_REPEAT) and argument[0] >= 1:
            consider(_needles(argument[2]))
    consider(("".join(run),) if run else None)
    return best


@functools.cache
def found_in_a_part_is_found_in_the_whole(pattern: re.Pattern) -> bool:
    """Whether a match in the engineer's or the assistant's text is also a match in the two
    joined by a line break: true without anchors and lookarounds."""
    return not _EDGE_SENSITIVE.search(pattern.pattern)


class Searchable:
    """A text the rules search, with its lower-cased twin when it is ASCII."""

    __slots__ = ("text", "lowered")

    def __init__(self, text: str):
        self.text = text
        self.lowered = text.lower() if text.isascii() else None

    def search(self, pattern: re.Pattern) -> re.Match | None:
        if self.lowered is None or (twin := lower_case_twin(pattern)) is None:
            return pattern.search(self.text)
        if twin.needles is not None and not any(n in self.lowered for n in twin.needles):
            return None
        return twin.pattern.search(self.lowered)

    def finditer(self, pattern: re.Pattern) -> Iterator[re.Match]:
        if self.lowered is None or (twin := lower_case_twin(pattern)) is None:
            return pattern.finditer(self.text)
        return twin.pattern.finditer(self.lowered)
