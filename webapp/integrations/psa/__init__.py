"""PSA adapters: one note per escalation on the client's ticket, whichever PSA the MSP uses."""

from __future__ import annotations

from typing import Any

import httpx

from .autotask import AutotaskAdapter
from .base import (
    PsaAdapter,
    PsaAmbiguous,
    PsaBusy,
    PsaError,
    PsaPermanent,
    PsaRetryable,
    note_marker,
    write_note_once,
)
from .connectwise import ConnectWiseAdapter
from .halopsa import HaloPsaAdapter
from .settings import Setting, union

_ADAPTERS: dict[str, type[PsaAdapter]] = {
    adapter.provider: adapter for adapter in (ConnectWiseAdapter, AutotaskAdapter, HaloPsaAdapter)
}
PROVIDERS = tuple(_ADAPTERS)
# each provider's settings as its adapter declares them; "none" has none
SETTINGS: dict[str, tuple[Setting, ...]] = {
    **{provider: adapter.settings for provider, adapter in _ADAPTERS.items()}, "none": ()}
ALL_SETTINGS: dict[str, Setting] = union(SETTINGS)


def build_adapter(
    provider: str,
    settings: dict,
    *,
    http: httpx.Client | None = None,
    redis: Any = None,
    timeout: float = 10.0,
) -> PsaAdapter:
    """The adapter for an account's decrypted PSA settings; PsaPermanent if they cannot work."""
    adapter = _ADAPTERS.get(provider)
    if adapter is None:
        raise PsaPermanent(f"unknown PSA provider {provider!r}")
    if not isinstance(settings, dict):
        raise PsaPermanent(f"{provider} settings are missing")
    try:
        return adapter(settings, http=http, redis=redis, timeout=timeout)
    except (TypeError, ValueError) as exc:
        # A numeric option that is not a number; the message could quote the value.
        raise PsaPermanent(f"{provider} settings are not valid") from exc


__all__ = [
    "ALL_SETTINGS",
    "PROVIDERS",
    "SETTINGS",
    "PsaAdapter",
    "PsaAmbiguous",
    "PsaBusy",
    "PsaError",
    "PsaPermanent",
    "PsaRetryable",
    "Setting",
    "build_adapter",
    "note_marker",
    "write_note_once",
]
