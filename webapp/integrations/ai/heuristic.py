"""The offline assessment: recognises common MSP problem areas in a case by rules, no network.

The rules themselves (areas, causes, steps, error codes) are data in heuristic_rules.toml,
checked once at import by heuristic_rules.py; this module is the engine that applies them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from webapp.integrations.ai.base import Assessment, AssessmentProvider
from webapp.integrations.ai.heuristic_rules import RULES_FILE, Area, Step, compile_ci, load_rules
from webapp.integrations.ai.rule_search import Searchable, found_in_a_part_is_found_in_the_whole

MODEL = "rules-v1"

# Huge cases are cut before matching: the head of each field and the most
# recent messages carry the signal, and the work stays bounded.
MAX_FIELD_CHARS = 8_000
MAX_MESSAGE_CHARS = 4_000
MAX_TRANSCRIPT_CHARS = 48_000

# An area needs at least this score to be named; weaker ones are noise.
MIN_AREA_SCORE = 3.0
MAX_AREAS = 3
MIN_CAUSES = 3
MAX_CAUSES = 5
# Steps for less likely causes are added up to this many; generic triage fills up to MIN_STEPS.
FULL_PLAN_STEPS = 4
MIN_STEPS = 3
MAX_STEPS = 8
# How many steps each ranked area contributes: the likeliest area gets a full plan.
STEPS_PER_AREA = (6, 2, 1)
# Assistant messages often speculate, so what they mention counts for less.
ASSISTANT_WEIGHT = 0.5


RULES = load_rules(resources.files(__package__).joinpath(RULES_FILE).read_text(encoding="utf-8"))
AREAS = RULES.areas
AREAS_BY_KEY = {area.key: area for area in AREAS}
GENERIC_CAUSES = RULES.generic_causes
GENERIC_STEPS = RULES.generic_steps
KNOWN_CODES = RULES.codes
KNOWN_EVENTS = RULES.events
# Canonical names for what engineers usually say they tried, for the summary.
TRIED_ACTIONS = RULES.tried

CODE_WEIGHT = 4.0
EVENT_WEIGHT = 3.0

_HEX_CODE = compile_ci(r"\b0x[0-9a-f]{8}\b")
_EVENT_ID = compile_ci(r"\b(?:events?\s*(?:ids?|#)?|eventid|eid)\s*[:#]?\s*(\d{1,5})\b")
# Security-log IDs are often quoted bare ("a flood of 4740s").
_BARE_SECURITY_EVENT = compile_ci(r"\b(47\d\d|46\d\d)s?\b")
_KB = compile_ci(r"\bkb\d{6,7}\b")
_ERROR_NAME = re.compile(r"\b[A-Z][A-Z0-9]+(?:_[A-Z0-9]+){2,}\b")
_SMTP_STATUS = compile_ci(r"(?<![\d.])([45]\.[1-7]\.\d{1,3})(?!\.?\d)")
# Enhanced status codes only mean something when the case is about mail delivery.
_MAIL_CONTEXT = compile_ci(r"ndr|bounc|undeliverable|smtp|delivery|reject|\b5[05]\d\b")
_IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|"
    r"[1-9]?\d)(?!\.?\d)"
)
_PORT = compile_ci(r"\b(?:port|tcp|udp)\s*[:/]?\s*(\d{2,5})\b|\b(\d{2,5})/(?:tcp|udp)\b")
_EMAIL_DOMAIN = compile_ci(r"[\w.+-]+@((?:[a-z0-9-]+\.)+[a-z]{2,24})\b")
_FQDN = compile_ci(
    r"(?<![@\w.-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})\b(?![.-]?\w)")
_UNC_HOST = compile_ci(r"\\\\([a-z0-9][a-z0-9.-]*)\\")
_NAMED_HOST = compile_ci(
    r"\b(?:server|host|hostname|pc|computer|machine|laptop|workstation|dc|nas)\s+"
    r"(?:called\s+|named\s+)?([a-z][a-z0-9-]*\d[a-z0-9-]*)\b"
)
# Upper-case names with a digit (DC01, SRV-FS02) are how MSPs name machines.
_SHOUTED_HOST = re.compile(r"\b(?=[A-Z0-9-]*\d)[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*\b")
_NOT_A_HOST = re.compile(
    r"^(?:KB\d+|CVE-.*|RFC-?\d+|(?:TLS|SSL|SMB|SHA|MD|HTTP|HTTPS|IPV|X|WIN|W|M|O|AES|RC|ISO|USB|MS|"
    r"PCIE|DDR|WPA|IKEV|SNMPV|NTLMV|TLSV|SSLV|SQL|E|P|A|G|H|R|S|V|COVID|IE|OS|WS)[0-9.]*|B2[BC])$"
)
# Names ending like files (outlook.exe, report.pdf) are not hosts.
_FILE_SUFFIXES = frozenset(
    {
        "exe", "dll", "msi", "msu", "txt", "log", "ps1", "psm1", "bat", "cmd", "vbs", "js", "py",
        "sh", "pst", "ost", "doc", "docx", "xls", "xlsx", "xlsm", "ppt", "pptx", "pdf", "csv",
        "zip", "rar", "7z", "png", "jpg", "jpeg", "gif", "bmp", "json", "xml", "ini", "cfg", "conf",
        "config", "sys", "evtx", "etl", "dmp", "html", "htm", "php", "aspx", "lnk", "iso", "vhd",
        "vhdx", "vmdk", "bak", "tmp", "old", "eml", "msg", "rdp", "inf", "cab", "mui",
    }
)

_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|[\r\n]+|;\s*")
_TRIED = compile_ci(
    r"\b(?:tried|trying|already|attempted|did(?!n'?t|\s+not)|ran|re-?ran|rebooted|restarted|"
    r"re-?installed|flushed|cleared|reset|replaced|updated|removed|deleted|disabled|re-?enabled|"
    r"re-?created|"
    r"rebuilt|re-?joined|checked|verified|confirmed|swapped|rolled back|uninstalled|unlocked|"
    r"renewed|released|repaired|recycled|power[- ]cycled|no luck|no change|no difference|"
    r"same (?:result|error)|didn'?t (?:help|work|fix)|did not (?:help|work|fix))\b"
)
_NOT_DONE = compile_ci(
    r"\b(?:haven'?t|have not|hasn'?t|has not|not yet|didn'?t (?:try|get)|did not (?:try|get)|"
    r"won'?t|will|i'll|we'll|going to|plan(?:ning)? to|next|should (?:i|we)|could (?:i|we)|"
    r"can (?:i|we)|shall (?:i|we)|do (?:i|we) need|needs? to|please)\b"
)


@dataclass(frozen=True)
class Facts:
    """Concrete details quoted in the case."""

    codes: tuple[str, ...]
    events: tuple[str, ...]
    error_names: tuple[str, ...]
    kbs: tuple[str, ...]
    smtp_statuses: tuple[str, ...]
    hosts: tuple[str, ...]
    ips: tuple[str, ...]
    ports: tuple[str, ...]
    domains: tuple[str, ...]

    def any(self) -> bool:
        """Whether the case quotes anything concrete."""
        quoted = (self.codes, self.events, self.error_names, self.kbs, self.smtp_statuses)
        return any(quoted) or bool(self.hosts or self.ips)


class HeuristicProvider(AssessmentProvider):
    """Rule-based assessment that needs no network: same case, same assessment."""

    name = "heuristic"

    def assess(self, case: dict) -> Assessment:
        """Assess the case from its problem, escalation note and transcript."""
        return assess_case(case)


def assess_case(case: dict) -> Assessment:
    """The rule-based assessment of one case."""
    text = _CaseText.from_case(case)
    facts = extract_facts(text.engineer)
    tried = tried_sentences(text.engineer)
    tried_text = "\n".join(tried)

    scores = _score_areas(text, facts)
    ranked = sorted(
        (key for key, score in scores.items() if score > 0),
        key=lambda key: (-scores[key], _AREA_ORDER[key]),
    )
    top_score = scores[ranked[0]] if ranked else 0.0
    matched = [
        AREAS_BY_KEY[key]
        for key in ranked
        if scores[key] >= MIN_AREA_SCORE and scores[key] >= 0.35 * top_score
    ][:MAX_AREAS]

    placeholders = _placeholders(facts)
    if matched:
        everything = text.searchable[2]
        fits = {area.key: _cause_fits(area, scores[area.key], everything) for area in matched}
        causes = _rank_causes(matched, fits)
        steps = _plan_steps(matched, fits, tried_text, facts, placeholders)
        confidence = _confidence(matched, scores, facts)
    else:
        causes = list(GENERIC_CAUSES)
        steps = _generic_steps(tried_text, facts, limit=5)
        confidence = round(0.2 + (0.05 if facts.any() else 0.0) + min(top_score, 3.0) / 30, 2)

    summary = _summary(case, matched, facts, tried)
    return Assessment(
        summary=summary,
        likely_causes=causes,
        next_steps=steps,
        confidence=confidence,
        provider=HeuristicProvider.name,
        model=MODEL,
    )


_AREA_ORDER = {area.key: index for index, area in enumerate(AREAS)}


@dataclass(frozen=True)
class _CaseText:
    """The case's text split by who wrote it."""

    engineer: str  # title, problem, note and the engineer's messages
    assistant: str
    everything: str

    @functools.cached_property
    def searchable(self) -> tuple[Searchable, Searchable, Searchable]:
        """(engineer, assistant, everything), each ready to be searched by the rules."""
        return Searchable(self.engineer), Searchable(self.assistant), Searchable(self.everything)

    @classmethod
    def from_case(cls, case: dict) -> _CaseText:
        engineer_parts = [_field(case, "title"), _field(case, "problem"), _field(case, "note")]
        engineer_messages: list[str] = []
        assistant_parts: list[str] = []
        messages = case.get("messages") or []
        if not isinstance(messages, list):
            messages = []
        budget = MAX_TRANSCRIPT_CHARS
        for message in reversed(messages):
            if budget <= 0:
                break
            if not isinstance(message, dict):
                continue
            content = _clean(message.get("content"), min(MAX_MESSAGE_CHARS, budget))
            budget -= len(content)
            if message.get("role") == "assistant":
                assistant_parts.append(content)
            else:
                engineer_messages.append(content)
        engineer_parts += reversed(engineer_messages)
        assistant_parts.reverse()
        engineer = "\n".join(part for part in engineer_parts if part)
        assistant = "\n".join(part for part in assistant_parts if part)
        return cls(
            engineer=engineer,
            assistant=assistant,
            everything=f"{engineer}\n{assistant}",
        )


def _clean(value: Any, limit: int) -> str:
    if not isinstance(value, str):
        return ""
    # Curly quotes from Word and phones would defeat patterns like "can't".
    return value[:limit].replace("\u2019", "'").replace("\u2018", "'").replace("\u00a0", " ")


def _field(case: dict, name: str) -> str:
    return _clean(case.get(name), MAX_FIELD_CHARS).strip()


def _score_areas(text: _CaseText, facts: Facts) -> dict[str, float]:
    engineer, assistant, everything = text.searchable
    scores: dict[str, float] = {}
    for area in AREAS:
        score = 0.0
        for pattern, weight in area.signals:
            # most signals are absent: one search of the whole settles those
            if found_in_a_part_is_found_in_the_whole(pattern) and not everything.search(pattern):
                continue
            if engineer.search(pattern):
                score += weight
            elif assistant.search(pattern):
                score += weight * ASSISTANT_WEIGHT
        scores[area.key] = score
    for code in facts.codes:
        if code in KNOWN_CODES:
            key = KNOWN_CODES[code][0]
            # 0x80004005 says little on its own.
            scores[key] += CODE_WEIGHT / 2 if code == "0x80004005" else CODE_WEIGHT
    for event in facts.events:
        if event in KNOWN_EVENTS:
            scores[KNOWN_EVENTS[event][0]] += EVENT_WEIGHT
    return scores


def _hint_hits(pattern: re.Pattern, text: Searchable) -> int:
    found: set[str] = set()
    for match in text.finditer(pattern):
        found.add(match.group(0).lower())
        if len(found) >= 3:
            break
    return len(found)


@dataclass(frozen=True)
class _CauseFit:
    """How well one cause fits the case: its score and how many of its hints appear."""

    score: float
    hints: int


def _cause_fits(area: Area, area_score: float, text: Searchable) -> list[_CauseFit]:
    """How likely each of the area's causes is for this case."""
    fits = []
    for index, cause in enumerate(area.causes):
        hints = _hint_hits(cause.hints, text)
        # Earlier causes are the commoner ones; each hint in the case outweighs about
        # two places of that order.
        score = area_score * (1.0 - 0.12 * index + 0.25 * hints)
        fits.append(_CauseFit(score, hints))
    return fits


def _rank_causes(matched: list[Area], fits: dict[str, list[_CauseFit]]) -> list[str]:
    ranked: list[tuple[float, int, int, int, str]] = []
    for area_rank, area in enumerate(matched):
        for index, cause in enumerate(area.causes):
            fit = fits[area.key][index]
            ranked.append((-fit.score, area_rank, index, fit.hints, cause.text))
    ranked.sort()
    # Beyond the first three, only causes the case itself hints at are worth reading.
    chosen = [text for _, _, _, _, text in ranked[:MIN_CAUSES]]
    chosen += [text for _, _, _, hints, text in ranked[MIN_CAUSES:] if hints]
    return chosen[:MAX_CAUSES]


def _ordered_steps(area: Area, fits: list[_CauseFit]) -> tuple[list[Step], list[Step]]:
    """The area's steps, checks for the likelier causes first: (relevant, spare)."""
    order = sorted(range(len(fits)), key=lambda index: (-fits[index].score, index))
    rank = {cause: position for position, cause in enumerate(order)}
    positions = sorted(
        (min((rank[cause] for cause in step.checks), default=-1), index)
        for index, step in enumerate(area.steps)
    )
    relevant: list[Step] = []
    spare: list[Step] = []
    for _, index in positions:
        step = area.steps[index]
        # A step is worth doing now if it is a first look, or checks one of the two
        # likeliest causes, or a cause the case hints at.
        wanted = not step.checks or any(
            rank[cause] < 2 or fits[cause].hints for cause in step.checks
        )
        (relevant if wanted else spare).append(step)
    return relevant, spare


def _plan_steps(
    matched: list[Area],
    fits: dict[str, list[_CauseFit]],
    tried_text: str,
    facts: Facts,
    placeholders: dict[str, str],
) -> list[str]:
    def open_steps(candidates: list[Step]) -> list[str]:
        return [
            step.text.format_map(placeholders)
            for step in candidates
            if step.done is None or not step.done.search(tried_text)
        ]

    steps: list[str] = []
    spares: list[str] = []
    for area, quota in zip(matched, STEPS_PER_AREA, strict=False):
        relevant, spare = _ordered_steps(area, fits[area.key])
        steps += open_steps(relevant)[:quota]
        spares += open_steps(spare)
    steps += spares[: max(0, FULL_PLAN_STEPS - len(steps))]
    lookup = _code_lookup_step(facts)
    if lookup:
        steps.insert(min(1, len(steps)), lookup)
    if len(steps) < MIN_STEPS:
        extra = _generic_steps(tried_text, facts, limit=5, with_lookup=False)
        steps += extra[: MIN_STEPS - len(steps)]
    return steps[:MAX_STEPS]


def _generic_steps(
    tried_text: str, facts: Facts, *, limit: int, with_lookup: bool = True
) -> list[str]:
    steps = [
        step.text for step in GENERIC_STEPS if step.done is None or not step.done.search(tried_text)
    ][:limit]
    lookup = _code_lookup_step(facts) if with_lookup else None
    if lookup:
        steps.insert(min(2, len(steps)), lookup)
    return steps


def _code_lookup_step(facts: Facts) -> str | None:
    unknown = [code for code in facts.codes if code not in KNOWN_CODES][:3]
    if not unknown:
        return None
    listed = ", ".join(unknown)
    return (
        f"Decode {listed} with `certutil -error {unknown[0]}` on any Windows machine and search "
        "the vendor's knowledge base for it."
    )


def _confidence(matched: list[Area], scores: dict[str, float], facts: Facts) -> float:
    top = scores[matched[0].key]
    confidence = 0.4 + 0.45 * min(top, 16.0) / 16.0
    if len(matched) > 1 and scores[matched[1].key] >= 0.75 * top:
        # Two areas fit about equally well: less sure which one it is.
        confidence -= 0.1
    pointed = [KNOWN_CODES[c][0] for c in facts.codes if c in KNOWN_CODES]
    pointed += [KNOWN_EVENTS[e][0] for e in facts.events if e in KNOWN_EVENTS]
    if matched[0].key in pointed:
        confidence += 0.05
    return round(min(0.9, max(0.4, confidence)), 2)


def _placeholders(facts: Facts) -> dict[str, str]:
    return {
        "host": facts.hosts[0] if facts.hosts else "<host>",
        "ip": facts.ips[0] if facts.ips else "<ip>",
        "port": facts.ports[0] if facts.ports else "<port>",
        "domain": facts.domains[0] if facts.domains else "<domain>",
    }


def _unique(values: list[str], limit: int) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for value in values:
        key = value.lower()
        if key not in seen:
            seen[key] = value
            if len(seen) >= limit:
                break
    return tuple(seen.values())


def extract_facts(text: str) -> Facts:
    """Error codes, event IDs, hosts, addresses and ports quoted in text."""
    codes = _unique([m.group(0).lower() for m in _HEX_CODE.finditer(text)], 6)
    events = [m.group(1) for m in _EVENT_ID.finditer(text)]
    if re.search(r"\bevent|\blogs?\b|security log", text, re.IGNORECASE):
        bare = (m.group(1) for m in _BARE_SECURITY_EVENT.finditer(text))
        events += [event for event in bare if event in KNOWN_EVENTS]
    names = (m.group(0) for m in _ERROR_NAME.finditer(text))
    error_names = [name for name in names if not name.startswith("HKEY_")]
    addresses = (m.group(0) for m in _IPV4.finditer(text))
    ips = [ip for ip in addresses if not ip.startswith(("0.", "255."))]
    ports = [next(g for g in m.groups() if g) for m in _PORT.finditer(text)]
    ports = [port for port in ports if 0 < int(port) < 65536]
    domains = [m.group(1).lower() for m in _EMAIL_DOMAIN.finditer(text)]
    fqdns = [
        name.lower()
        for name in (m.group(1) for m in _FQDN.finditer(text))
        if name.rsplit(".", 1)[-1].lower() not in _FILE_SUFFIXES
    ]
    domains += [".".join(name.split(".")[-2:]) for name in fqdns if name.count(".") >= 1]
    hosts = [m.group(1) for m in _UNC_HOST.finditer(text)]
    hosts += [m.group(1).upper() for m in _NAMED_HOST.finditer(text)]
    hosts += [
        name for name in (m.group(0) for m in _SHOUTED_HOST.finditer(text))
        if len(name) >= 3 and not _NOT_A_HOST.match(name) and not name.startswith("0X")
    ]
    hosts += fqdns
    smtp_statuses = []
    if _MAIL_CONTEXT.search(text):
        smtp_statuses = [m.group(1) for m in _SMTP_STATUS.finditer(text)]
    return Facts(
        codes=codes,
        events=_unique(events, 6),
        error_names=_unique(error_names, 4),
        kbs=_unique([m.group(0).upper() for m in _KB.finditer(text)], 4),
        smtp_statuses=_unique(smtp_statuses, 4),
        hosts=_unique(hosts, 5),
        ips=_unique(ips, 5),
        ports=_unique(ports, 3),
        domains=_unique(domains, 3),
    )


def tried_sentences(text: str) -> list[str]:
    """The sentences in which the engineer says something was already done."""
    found: list[str] = []
    for sentence in _SENTENCE_BREAK.split(text):
        sentence = " ".join(sentence.split())
        if not sentence or sentence.endswith("?"):
            continue
        if _TRIED.search(sentence) and not _NOT_DONE.search(sentence):
            found.append(sentence)
    return found


def tried_actions(tried: list[str]) -> list[str]:
    """What the engineer already tried, named the usual way, in the order first said."""
    firsts: dict[str, int] = {}
    for position, sentence in enumerate(tried):
        for label, pattern in TRIED_ACTIONS:
            if label not in firsts and pattern.search(sentence):
                firsts[label] = position
    order = {label: index for index, (label, _) in enumerate(TRIED_ACTIONS)}
    return sorted(firsts, key=lambda label: (firsts[label], order[label]))


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return f"{cut}…"


def _first_sentence(text: str) -> str:
    for part in _SENTENCE_BREAK.split(text):
        part = " ".join(part.split()).rstrip(".")
        if part:
            return part
    return ""


def _evidence(facts: Facts) -> list[str]:
    items: list[str] = []
    for code in facts.codes:
        meaning = KNOWN_CODES.get(code)
        items.append(f"{code} ({meaning[1]})" if meaning else code)
    for event in facts.events:
        meaning = KNOWN_EVENTS.get(event)
        items.append(f"Event ID {event} ({meaning[1]})" if meaning else f"Event ID {event}")
    items += list(facts.error_names) + list(facts.smtp_statuses) + list(facts.kbs)
    if facts.hosts:
        items.append("host " + ", ".join(facts.hosts[:3]))
    if facts.ips:
        items.append("address " + ", ".join(facts.ips[:3]))
    return items[:6]


def _summary(case: dict, matched: list[Area], facts: Facts, tried: list[str]) -> str:
    client = _shorten(_field(case, "client_name"), 80) or "The client"
    title = _shorten(_field(case, "title"), 120)
    headline = _first_sentence(_field(case, "problem")) or _first_sentence(_field(case, "note"))
    headline = _shorten(headline, 160)
    first = f"{client}: {title or headline or 'no problem description given'}"
    if title and headline and headline.lower().rstrip(".…") != title.lower().rstrip(".…"):
        first += f" ({headline})"
    sentences = [first.rstrip(".") + "."]

    evidence = _evidence(facts)
    if matched:
        second = f"Most likely area: {matched[0].label}"
        if len(matched) > 1:
            second += f", with {matched[1].label} also possible"
    else:
        second = "No common problem pattern was recognised, so it needs hands-on triage"
    if evidence:
        second += "; evidence: " + "; ".join(evidence)
    sentences.append(second + ".")

    actions = tried_actions(tried)
    if actions:
        done = "Already tried: " + ", ".join(actions[:6])
    elif tried:
        done = "Already tried: " + " / ".join(_shorten(sentence, 90) for sentence in tried[:2])
    else:
        done = "Nothing is recorded as tried yet"
    urgency = _shorten(_field(case, "urgency").lower(), 20) or "normal"
    sentences.append(f"{done.rstrip('.…')}; urgency {urgency}.")
    return " ".join(sentences)
