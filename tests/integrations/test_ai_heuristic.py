"""The offline rule-based assessment: specific, aware of what was tried, deterministic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from webapp.integrations.ai import Assessment, HeuristicProvider, build_provider

ROOT = Path(__file__).resolve().parents[2]


def make_case(
    *,
    title: str = "",
    problem: str = "",
    note: str = "",
    client_name: str = "Acme Dental",
    urgency: str = "normal",
    engineer: list[str] | None = None,
    assistant: list[str] | None = None,
) -> dict:
    """A case as the assessment task builds it, engineer messages before assistant ones."""
    messages = [
        {"role": "engineer", "content": text, "created_at": f"2024-05-01T09:{i:02d}:00Z"}
        for i, text in enumerate(engineer or [])
    ]
    messages += [
        {"role": "assistant", "content": text, "created_at": f"2024-05-01T10:{i:02d}:00Z"}
        for i, text in enumerate(assistant or [])
    ]
    return {
        "title": title,
        "client_name": client_name,
        "note": note,
        "urgency": urgency,
        "problem": problem,
        "messages": messages,
    }


def assess(case: dict) -> Assessment:
    return HeuristicProvider().assess(case)


def steps_text(assessment: Assessment) -> str:
    return "\n".join(assessment.next_steps)


DNS_CASE = make_case(
    title="Can't reach the file server by name",
    problem=(
        "Since this morning users at the Leeds office can't open \\\\fs01\\shared. "
        "It works by IP (10.0.0.5) but not by name."
    ),
    note="Rebooted the file server and flushed DNS on two clients, no change.",
    urgency="high",
    engineer=["nslookup fs01 answers Non-existent domain from 192.168.1.1"],
)


def test_dns_case_points_at_dns_with_concrete_checks() -> None:
    result = assess(DNS_CASE)

    assert "DNS server" in result.likely_causes[0]
    assert 3 <= len(result.likely_causes) <= 5
    # The host quoted in the case is used in the commands.
    assert "`nslookup fs01`" in steps_text(result)
    assert "ipconfig /all" in steps_text(result)
    assert 0.5 <= result.confidence <= 0.9
    assert result.provider == "heuristic"
    assert result.model == "rules-v1"


def test_summary_names_client_problem_what_was_tried_and_urgency() -> None:
    summary = assess(DNS_CASE).summary

    assert summary.startswith("Acme Dental: Can't reach the file server by name")
    assert "DNS / name resolution" in summary
    assert "Already tried: flushed DNS, rebooted" in summary
    assert "urgency high" in summary
    assert "10.0.0.5" in summary


def test_steps_the_engineer_already_did_are_skipped() -> None:
    untried = dict(DNS_CASE, note="Escalating, I'm out of ideas.")
    assert "ipconfig /flushdns" in steps_text(assess(untried))

    assert "ipconfig /flushdns" not in steps_text(assess(DNS_CASE))


def test_assistant_suggestions_and_plans_do_not_count_as_tried() -> None:
    case = make_case(
        title="Can't reach the file server by name",
        problem="Users can't resolve fs01, works by IP.",
        note="I haven't flushed DNS yet. Will flush DNS on the clients tonight.",
        assistant=["Engineers have usually flushed DNS by now, which clears the client cache."],
    )
    result = assess(case)

    assert "ipconfig /flushdns" in steps_text(result)
    assert "Nothing is recorded as tried yet" in result.summary


LOCKOUT_CASE = make_case(
    title="User keeps getting locked out",
    client_name="Baker & Sons",
    problem=(
        "Jane's AD account locks out every 30 minutes since she changed her password on Monday."
    ),
    note="Unlocked her 4 times today.",
    engineer=["Seeing Event ID 4740 on DC01 each time."],
)


def test_account_lockout_points_at_stale_credentials_and_4740() -> None:
    result = assess(LOCKOUT_CASE)

    assert "old password" in result.likely_causes[0]
    assert "Event ID 4740" in result.next_steps[0]
    assert "Caller Computer Name" in result.next_steps[0]
    assert "Credential Manager" in steps_text(result)
    assert "Event ID 4740 (account locked out)" in result.summary
    assert "DC01" in result.summary
    assert "Already tried: unlocked the account" in result.summary


def test_account_lockout_skips_clearing_credentials_once_done() -> None:
    case = dict(
        LOCKOUT_CASE, note="Unlocked her 4 times today. Already cleared Credential Manager."
    )

    assert "Credential Manager" not in steps_text(assess(case))


OUTLOOK_CASE = make_case(
    title="Outlook keeps asking for a password",
    client_name="Contoso Legal",
    problem="Outlook on two PCs keeps prompting for credentials and shows Disconnected.",
    note="Escalating: the user is a partner and needs mail now.",
    urgency="high",
)


def test_outlook_prompts_point_at_profile_and_modern_auth() -> None:
    result = assess(OUTLOOK_CASE)

    top_two = " ".join(result.likely_causes[:2])
    assert "Modern authentication" in top_two
    assert "Outlook profile" in top_two
    assert "Outlook on the web" in steps_text(result)
    assert "Credential Manager" in steps_text(result)
    assert "Microsoft 365 / Exchange / Outlook" in result.summary


def test_outlook_profile_step_is_skipped_after_recreating_it() -> None:
    case = dict(
        OUTLOOK_CASE,
        messages=[
            {
                "role": "engineer",
                "content": "Recreated the Outlook profile on one PC, same result.",
                "created_at": "2024-05-01T09:00:00Z",
            }
        ],
    )
    result = assess(case)

    assert "new Outlook profile" not in steps_text(result)
    assert "Already tried: recreated the Outlook profile" in result.summary


def test_mail_bounce_uses_the_senders_domain_in_spf_checks() -> None:
    case = make_case(
        title="Emails bouncing",
        problem=(
            "Mail from bob@contoso.com to a customer bounces with 550 5.7.26 "
            "unauthenticated email, DMARC policy."
        ),
    )
    result = assess(case)

    assert "SPF, DKIM or DMARC" in result.likely_causes[0]
    assert "nslookup -type=txt _dmarc.contoso.com" in steps_text(result)
    assert "5.7.26" in result.summary


DISK_CASE = make_case(
    title="Server C: drive full",
    client_name="Delta Freight",
    problem="SRV-APP01 is out of disk space, 200 MB free on C:. The app crashes with 0x80070070.",
    note="Ran Disk Cleanup, freed 1 GB, it filled up again within hours.",
    urgency="high",
)


def test_disk_full_explains_the_error_code_and_finds_what_grew() -> None:
    result = assess(DISK_CASE)

    assert "filled the volume" in result.likely_causes[0]
    assert "WizTree" in result.next_steps[0]
    assert "0x80070070 (not enough disk space)" in result.summary
    assert "SRV-APP01" in result.summary
    assert result.confidence >= 0.75
    # Disk Cleanup was run already.
    assert "Disk Cleanup" not in steps_text(result)
    assert "vssadmin" in steps_text(result)


def test_unknown_error_codes_get_a_decode_step() -> None:
    case = make_case(
        title="Line-of-business app fails on start",
        problem="The app shows error 0x8007045d when it starts on PC-0042.",
    )

    assert "certutil -error 0x8007045d" in steps_text(assess(case))


def test_unmatched_case_gets_low_confidence_and_generic_triage() -> None:
    case = make_case(
        title="Weird issue",
        client_name="Echo Ltd",
        problem="The user says the thing isn't working properly.",
        note="Not sure what's going on.",
    )
    result = assess(case)

    assert 0.2 <= result.confidence <= 0.35
    assert "No common problem pattern was recognised" in result.summary
    assert "Establish scope and timeline" in result.next_steps[0]
    assert "Reproduce the problem" in steps_text(result)
    assert len(result.likely_causes) >= 3


def test_matched_cases_are_more_confident_than_unmatched_ones() -> None:
    unmatched = assess(make_case(title="Help", problem="It is broken."))

    for case in (DNS_CASE, LOCKOUT_CASE, OUTLOOK_CASE, DISK_CASE):
        assert assess(case).confidence > unmatched.confidence + 0.15


@pytest.mark.parametrize(
    ("problem", "area", "cause", "step"),
    [
        (
            "Since Monday home workers get 'authentication failed' in FortiClient VPN.",
            "VPN / remote access",
            "Authentication fails at the VPN gateway",
            "VPN gateway's log",
        ),
        (
            "Laptops on the new floor get 169.254.x.x addresses, no IP from DHCP.",
            "DHCP / IP addressing",
            "scope is exhausted",
            "Get-DhcpServerv4ScopeStatistics",
        ),
        (
            "Jobs stuck in the print queue, the spooler keeps stopping; 0x0000011b since the "
            "update.",
            "Printing / print spooler",
            "Print Spooler service",
            "net stop spooler",
        ),
        (
            "Laptop blue screens with IRQL_NOT_LESS_OR_EQUAL several times a day since "
            "KB5034441.",
            "Windows Update / boot / blue screen",
            "recent update or driver",
            "minidump",
        ),
        (
            "Portal shows NET::ERR_CERT_DATE_INVALID; the Let's Encrypt certificate on "
            "portal.acme.co.uk expired yesterday.",
            "Certificates / TLS",
            "certificate has expired",
            "openssl s_client -connect portal.acme.co.uk:443",
        ),
        (
            "Nightly Veeam backup job failed with VSS error 0x800423f4 on SQL01.",
            "Backup failures",
            "VSS writer",
            "vssadmin list writers",
        ),
        (
            "Whole office has packet loss and the internet keeps dropping every few minutes.",
            "Network / switching / Wi-Fi",
            "switching fault",
            "pathping",
        ),
        (
            "After the FortiGate firmware upgrade users can't reach the RD gateway on port 443, "
            "connection refused.",
            "Firewall / ports",
            "firewall rule or NAT",
            "Test-NetConnection <host> -Port 443",
        ),
        (
            "New starter gets access denied on \\\\FS01\\Finance though she was added to the "
            "Finance security group yesterday.",
            "Permissions / access denied",
            "security group",
            "whoami /groups",
        ),
        (
            "RDS host is very slow, high CPU at 100% from MsMpEng and memory usage at 95%.",
            "Performance (CPU / memory / disk)",
            "One process",
            "Task Manager",
        ),
        (
            "The CFO clicked a link in a phishing email and entered her password; her mailbox "
            "then sent spam to everyone and has a new inbox rule.",
            "Security incident",
            "compromised through phished credentials",
            "isolate the affected machines",
        ),
    ],
)
def test_common_msp_problem_areas_are_recognised(
    problem: str, area: str, cause: str, step: str
) -> None:
    result = assess(make_case(title="Escalated ticket", problem=problem))

    assert f"Most likely area: {area}" in result.summary
    assert cause in result.likely_causes[0]
    assert step in steps_text(result)
    assert result.confidence >= 0.45


def test_same_case_gives_the_same_assessment_in_any_process() -> None:
    expected = json.dumps(assess(DNS_CASE).to_dict(), sort_keys=True)
    script = (
        "import json, sys\n"
        "from webapp.integrations.ai import HeuristicProvider\n"
        "case = json.loads(sys.stdin.read())\n"
        "print(json.dumps(HeuristicProvider().assess(case).to_dict(), sort_keys=True))\n"
    )
    for seed in ("1", "2"):
        # Different hash seeds reorder sets and dicts built from them.
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT))
        run = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(DNS_CASE),
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=30,
            check=True,
        )
        assert run.stdout.strip() == expected
    assert assess(DNS_CASE) == assess(DNS_CASE)


@pytest.mark.parametrize(
    "case",
    [
        {},
        {"title": "Printer offline", "messages": []},
        {"title": None, "problem": 42, "note": None, "urgency": None, "messages": None},
        {"problem": "Outlook crashes", "messages": ["not a dict", {"role": "engineer"}]},
    ],
)
def test_empty_or_partial_cases_still_get_an_assessment(case: dict) -> None:
    result = assess(case)

    assert result.summary.endswith(".")
    assert result.likely_causes and all(result.likely_causes)
    assert len(result.next_steps) >= 3
    assert 0.0 <= result.confidence <= 1.0


def test_very_long_input_is_bounded_and_recent_messages_count() -> None:
    filler = "The user reports the usual things and nothing specific happens. " * 2_000
    messages = [
        {"role": "engineer" if i % 2 else "assistant", "content": filler, "created_at": ""}
        for i in range(2_000)
    ]
    messages.append(
        {"role": "engineer", "content": "Now it blue screens with a BSOD.", "created_at": ""}
    )
    case = make_case(title="T" * 50_000, problem=filler * 5, note=filler, client_name="C" * 5_000)
    case["messages"] = messages

    started = time.perf_counter()
    result = assess(case)
    elapsed = time.perf_counter() - started

    assert elapsed < 5
    assert "Windows Update / boot / blue screen" in result.summary
    assert len(result.summary) < 1_000
    assert len(result.likely_causes) <= 5
    assert len(result.next_steps) <= 8


def test_assessment_dict_has_the_handoff_assessment_fields() -> None:
    data = assess(DNS_CASE).to_dict()

    assert set(data) == {
        "summary",
        "likely_causes",
        "next_steps",
        "confidence",
        "provider",
        "model",
    }
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize("name", ["heuristic", "Heuristic ", ""])
def test_build_provider_gives_the_heuristic_by_default(name: str) -> None:
    provider = build_provider(name)

    assert isinstance(provider, HeuristicProvider)
    assert provider.name == "heuristic"


def _rule_patterns() -> list:
    from webapp.integrations.ai import heuristic
    patterns = [pattern for area in heuristic.AREAS for pattern, _ in area.signals]
    patterns += [cause.hints for area in heuristic.AREAS for cause in area.causes]
    return patterns


def _pattern_corpus(patterns: list) -> list[str]:
    """Texts that hit many of the rules: the cases above, and every rule's needles in upper,
    title and lower case, glued to neighbours and spaced out, with and without accents."""
    from webapp.integrations.ai.rule_search import lower_case_twin
    needles = [needle for pattern in patterns if (twin := lower_case_twin(pattern))
               for needle in twin.needles or ()]
    soup = " ".join(needles)
    texts = [soup, soup.upper(), soup.title(), "".join(needles).upper(),
             "Café: " + soup.upper(), "the AD sync and ad campaigns; DC01 0x41 AD",
             soup.upper().replace("S", "\u017f")]   # the long s matches "s" ignoring case
    for case in (DNS_CASE, LOCKOUT_CASE, OUTLOOK_CASE, DISK_CASE):
        texts += [str(value) for value in case.values()]
    return texts


def test_the_fast_rule_search_finds_exactly_what_the_rules_find_ignoring_case() -> None:
    """Rules are searched over lower-cased text by case-sensitive twins, skipped when none of
    their needles is there: every rule must find what its own pattern finds ignoring case."""
    from webapp.integrations.ai.rule_search import Searchable
    patterns = _rule_patterns()
    matched = set()
    for text in _pattern_corpus(patterns):
        searchable = Searchable(text)
        for pattern in patterns:
            expected = pattern.search(text)
            assert bool(searchable.search(pattern)) == bool(expected), (pattern.pattern, text)
            assert ({m.group(0).lower() for m in searchable.finditer(pattern)}
                    == {m.group(0).lower() for m in pattern.finditer(text)}), pattern.pattern
            if expected:
                matched.add(pattern)
    assert len(matched) > 0.9 * len(set(patterns))   # the corpus does exercise the rules


@pytest.mark.parametrize(("source", "fast"), [
    (r"\bdns\b", True), (r"nslookup|\bdig\b", True), (r"(?-i:\bAD\b)|domain", False),
    (r"\x41d", False), (r"\Bfoo", False), (r"caf\u00e9", False), ("café", False),
])
def test_only_patterns_that_mean_the_same_on_lower_case_text_get_a_twin(source, fast) -> None:
    import re

    from webapp.integrations.ai.rule_search import lower_case_twin
    assert (lower_case_twin(re.compile(source, re.IGNORECASE)) is not None) is fast


@pytest.mark.parametrize(("source", "safe"), [
    (r"\bdns\b", True), (r"(?:a|b)c", True), (r"^dns", False), (r"dns$", False),
    (r"dns\Z", False), (r"(?<!x)dns", False), (r"dns(?!\n)", False)])
def test_the_whole_text_settles_a_rule_only_without_anchors_or_lookarounds(source, safe):
    import re

    from webapp.integrations.ai.rule_search import found_in_a_part_is_found_in_the_whole
    assert found_in_a_part_is_found_in_the_whole(re.compile(source)) is safe


def test_a_twin_has_needles_only_when_every_match_holds_one() -> None:
    import re

    from webapp.integrations.ai.rule_search import lower_case_twin
    def needles(source):
        return lower_case_twin(re.compile(source, re.IGNORECASE)).needles
    assert needles(r"\bdns\b") == ("dns",)
    assert needles(r"\b(?:a|cname|srv|ptr) records?\b") == (" record",)
    assert set(needles(r"nslookup|flushdns|\bdig\b")) == {"nslookup", "flushdns", "dig"}
    assert needles(r"\d{2,5}|port") is None      # a branch without a literal
    assert needles(r"(?:x)?\d+") is None          # an optional literal is not a needle
