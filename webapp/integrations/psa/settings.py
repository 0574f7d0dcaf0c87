"""What each PSA provider's connection is made of, declared once by its adapter: the API's
schema, storage (plain JSON or encrypted) and validation all derive from these."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str
    required: bool = False
    secret: bool = False      # stored encrypted at rest, never returned
    url: bool = False         # an http(s) address the adapter calls: outbound rules apply
    max_length: int = 200
    pattern: str | None = None


def required(settings: tuple[Setting, ...]) -> tuple[str, ...]:
    return tuple(setting.name for setting in settings if setting.required)


def names(settings: tuple[Setting, ...], *, secret: bool) -> tuple[str, ...]:
    return tuple(setting.name for setting in settings if setting.secret == secret)


def union(declared: dict[str, tuple[Setting, ...]]) -> dict[str, Setting]:
    """Every setting of every provider by name. One name means one thing: a name two
    providers share must be declared alike (apart from being required), else the API's
    single body schema could not describe both."""
    found: dict[str, Setting] = {}
    for provider, settings in declared.items():
        for setting in settings:
            seen = found.setdefault(setting.name, setting)
            if (seen.secret, seen.url, seen.max_length, seen.pattern) != (
                    setting.secret, setting.url, setting.max_length, setting.pattern):
                raise TypeError(f"PSA setting {setting.name!r} of {provider} is declared "
                                "differently by another provider")
    return found
