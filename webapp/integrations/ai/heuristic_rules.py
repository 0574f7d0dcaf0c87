"""The heuristic's rules: the shapes of heuristic_rules.toml (areas, causes by name, steps,
codes, events, tried actions) and the loader that checks a document once and compiles it."""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RULES_FILE = "heuristic_rules.toml"
# What a step's text may name in braces; the engine fills them from the case.
PLACEHOLDERS = frozenset({"host", "ip", "port", "domain"})


def compile_ci(pattern: str) -> re.Pattern:
    """Rules match case-insensitively, as engineers type."""
    return re.compile(pattern, re.IGNORECASE)


@dataclass(frozen=True)
class Cause:
    """A likely cause; hints are words in the case that make it more likely."""

    name: str
    text: str
    hints: re.Pattern


@dataclass(frozen=True)
class Step:
    """A next step; done matches how an engineer says it was already done."""

    text: str
    done: re.Pattern | None
    # Positions of the area's causes this step checks (the rules name them), so the plan
    # follows the ranked causes; none means a first look that fits every cause.
    checks: tuple[int, ...] = ()


@dataclass(frozen=True)
class Area:
    """A problem area: the words that point to it, its usual causes and its checks."""

    key: str
    label: str
    signals: tuple[tuple[re.Pattern, float], ...]
    causes: tuple[Cause, ...]
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Rules:
    """Everything the engine reads from the rules document, checked and compiled."""

    areas: tuple[Area, ...]
    generic_causes: tuple[str, ...]
    generic_steps: tuple[Step, ...]
    codes: dict[str, tuple[str, str]]  # error code -> (area key, meaning)
    events: dict[str, tuple[str, str]]  # event ID -> (area key, meaning)
    tried: tuple[tuple[str, re.Pattern], ...]  # (what the summary calls it, how it is said)


class RulesError(ValueError):
    """The rules document cannot be used; the message names the rule at fault."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"heuristic rules: {problem}")


def load_rules(source: str | Mapping[str, Any]) -> Rules:
    """Check and compile a rules document (TOML text, or its tables already parsed).

    Every problem is found here, naming the rule, so a bad edit fails the import rather
    than some later assessment.
    """
    if isinstance(source, str):
        try:
            source = tomllib.loads(source)
        except tomllib.TOMLDecodeError as error:
            raise RulesError(f"not valid TOML: {error}") from None
    doc = _table(source, "the document", ("areas", "generic", "codes", "events", "tried"))
    areas = tuple(
        _load_area(table, f"area {number}")
        for number, table in enumerate(_items(doc["areas"], "areas"), 1)
    )
    keys = [area.key for area in areas]
    _unique_names(keys, "areas", "area with key")

    generic = _table(doc["generic"], "generic", ("causes", "steps"))
    generic_causes = tuple(
        _text(text, f"generic cause {number}")
        for number, text in enumerate(_items(generic["causes"], "generic causes"), 1)
    )
    generic_steps = []
    for number, table in enumerate(_items(generic["steps"], "generic steps"), 1):
        where = f"generic step {number}"
        step = _table(table, where, ("text",), optional=("done",))
        done = _pattern(step["done"], f"{where}: done") if "done" in step else None
        generic_steps.append(Step(_text(step["text"], f"{where}: text"), done))

    tried = []
    for number, table in enumerate(_items(doc["tried"], "tried"), 1):
        action = _table(table, f"tried action {number}", ("label", "pattern"))
        label = _text(action["label"], f"tried action {number}: label")
        tried.append((label, _pattern(action["pattern"], f"tried action {label!r}: pattern")))
    _unique_names([label for label, _ in tried], "tried", "action labelled")

    return Rules(
        areas=areas,
        generic_causes=generic_causes,
        generic_steps=tuple(generic_steps),
        codes=_meanings(doc["codes"], "code", r"0x[0-9a-f]{8}", keys),
        events=_meanings(doc["events"], "event", r"\d{1,5}", keys),
        tried=tuple(tried),
    )


def _load_area(value: Any, where: str) -> Area:
    table = _table(value, where, ("key", "label", "signals", "causes", "steps"))
    key = _name(table["key"], f"{where}: key")
    where = f"area {key!r}"

    signals = []
    for number, item in enumerate(_items(table["signals"], f"{where}: signals"), 1):
        here = f"{where}, signal {number}"
        signal = _table(item, here, ("pattern", "weight"))
        weight = signal["weight"]
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            raise RulesError(f"{here}: weight must be a positive number, not {weight!r}")
        signals.append((_pattern(signal["pattern"], f"{here}: pattern"), weight))

    causes = []
    for number, item in enumerate(_items(table["causes"], f"{where}: causes"), 1):
        cause = _table(item, f"{where}, cause {number}", ("name", "text", "hints"))
        name = _name(cause["name"], f"{where}, cause {number}: name")
        here = f"{where}, cause {name!r}"
        causes.append(
            Cause(
                name=name,
                text=_text(cause["text"], f"{here}: text"),
                hints=_pattern(cause["hints"], f"{here}: hints"),
            )
        )
    _unique_names([cause.name for cause in causes], where, "cause named")
    position = {cause.name: index for index, cause in enumerate(causes)}

    steps = []
    for number, item in enumerate(_items(table["steps"], f"{where}: steps"), 1):
        here = f"{where}, step {number}"
        step = _table(item, here, ("text", "checks"), optional=("done",))
        text = _text(step["text"], f"{here}: text")
        _check_placeholders(text, here)
        checks = step["checks"]
        if not isinstance(checks, list):
            raise RulesError(f"{here}: checks must be a list of cause names ([] for a first look)")
        for name in checks:
            if not isinstance(name, str) or name not in position:
                raise RulesError(
                    f"{here}: checks names unknown cause {name!r}; "
                    f"the area's causes are {', '.join(position)}"
                )
        done = _pattern(step["done"], f"{here}: done") if "done" in step else None
        steps.append(Step(text, done, tuple(position[name] for name in checks)))

    return Area(
        key=key,
        label=_text(table["label"], f"{where}: label"),
        signals=tuple(signals),
        causes=tuple(causes),
        steps=tuple(steps),
    )


def _table(
    value: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RulesError(f"{where}: must be a table, not {type(value).__name__}")
    missing = [field for field in required if field not in value]
    if missing:
        raise RulesError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(value) - set(required) - set(optional))
    if unknown:
        raise RulesError(f"{where}: unknown field {', '.join(unknown)}")
    return value


def _items(value: Any, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise RulesError(f"{where}: must be a non-empty list")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", value):
        raise RulesError(f"{where}: must be a lower-case name like wrong_dns_server, not {value!r}")
    return value


def _unique_names(names: list[str], where: str, what: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RulesError(f"{where}: more than one {what} {repeated[0]!r}")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RulesError(f"{where}: must be non-empty text")
    # Long texts wrap over lines in the file; they read as one paragraph.
    return " ".join(value.split())


def _pattern(value: Any, where: str) -> re.Pattern:
    # A list reads better than one long alternation: any of its patterns matches.
    if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
        value = "|".join(value)
    if not isinstance(value, str) or not value:
        raise RulesError(f"{where}: must be a regular expression or a list of them")
    try:
        return compile_ci(value)
    except re.error as error:
        raise RulesError(f"{where}: not a valid regular expression: {error}") from None


def _check_placeholders(text: str, where: str) -> None:
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    except ValueError as error:
        raise RulesError(f"{where}: text has a stray brace: {error}") from None
    unknown = sorted(fields - PLACEHOLDERS)
    if unknown:
        raise RulesError(
            f"{where}: text names unknown placeholder {unknown[0]!r}; "
            f"known are {', '.join(sorted(PLACEHOLDERS))}"
        )


def _meanings(value: Any, what: str, shape: str, areas: list[str]) -> dict[str, tuple[str, str]]:
    if not isinstance(value, Mapping):
        raise RulesError(f"{what}s: must be a table")
    meanings: dict[str, tuple[str, str]] = {}
    for key, item in value.items():
        where = f"{what} {key}"
        # Codes are matched in lower case and event IDs as digits: another shape never matches.
        if not re.fullmatch(shape, key):
            raise RulesError(f"{where}: must look like {shape}")
        entry = _table(item, where, ("area", "meaning"))
        if entry["area"] not in areas:
            raise RulesError(f"{where}: names unknown area {entry['area']!r}")
        meanings[key] = (entry["area"], _text(entry["meaning"], f"{where}: meaning"))
    return meanings
