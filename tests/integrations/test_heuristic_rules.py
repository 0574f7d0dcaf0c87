"""The heuristic's rules document is checked as it loads: a bad rule fails, named, at import."""

from __future__ import annotations

import tomllib

import pytest

from webapp.integrations.ai.heuristic_rules import RulesError, load_rules

DOCUMENT = """
[[areas]]
key = "printing"
label = "Printing"
signals = [{ weight = 3, pattern = 'printer' }]

[[areas.causes]]
name = "spooler"
text = "The spooler stopped."
hints = 'spool'

[[areas.causes]]
name = "driver"
text = '''
A driver problem, wrapped
over two lines.'''
hints = ['driver', 'update']

[[areas.steps]]
text = "Restart the spooler on {host}."
done = 'spool'
checks = ["spooler"]

[[areas.steps]]
text = "Reinstall the driver."
checks = ["driver", "spooler"]

[generic]
causes = ["Not enough detail yet."]

[[generic.steps]]
text = "Establish scope and timeline."

[codes]
0x0000011b = { area = "printing", meaning = "print spooler hardening" }

[events]

[[tried]]
label = "restarted the print spooler"
pattern = 'spool'
"""


def test_steps_name_the_causes_they_check_and_load_as_positions() -> None:
    rules = load_rules(DOCUMENT)

    (area,) = rules.areas
    assert [cause.name for cause in area.causes] == ["spooler", "driver"]
    assert [step.checks for step in area.steps] == [(0,), (1, 0)]
    assert area.causes[1].text == "A driver problem, wrapped over two lines."
    assert area.causes[1].hints.search("after the UPDATE")
    assert rules.codes == {"0x0000011b": ("printing", "print spooler hardening")}


def test_a_step_checking_an_unknown_cause_is_rejected_naming_the_step() -> None:
    document = DOCUMENT.replace('checks = ["spooler"]', 'checks = ["spoler"]')

    with pytest.raises(RulesError, match=r"area 'printing', step 1: .*unknown cause 'spoler'"):
        load_rules(document)


def test_a_cause_missing_its_hints_is_rejected_naming_the_cause() -> None:
    document = tomllib.loads(DOCUMENT)
    del document["areas"][0]["causes"][1]["hints"]

    with pytest.raises(RulesError, match=r"area 'printing', cause 2: missing hints"):
        load_rules(document)


@pytest.mark.parametrize(
    ("before", "after", "problem"),
    [
        ("weight = 3", "weight = 'high'", r"area 'printing', signal 1: weight must be a"),
        ("hints = 'spool'", "hints = 'spool(('", r"cause 'spooler': hints: not a valid regular"),
        ('area = "printing"', 'area = "print"', r"code 0x0000011b: names unknown area 'print'"),
    ],
)
def test_bad_values_are_rejected_naming_the_rule(before: str, after: str, problem: str) -> None:
    with pytest.raises(RulesError, match=problem):
        load_rules(DOCUMENT.replace(before, after, 1))
