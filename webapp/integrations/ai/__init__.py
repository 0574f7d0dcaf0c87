"""AI diagnostic assessments for escalations: offline heuristic or OpenAI-compatible server."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from webapp.integrations.ai.base import (
    AiError,
    AiInvalidOutput,
    AiPermanent,
    AiRetryable,
    Assessment,
    AssessmentProvider,
)
from webapp.integrations.ai.heuristic import HeuristicProvider
from webapp.integrations.ai.openai_compat import OpenAICompatProvider

__all__ = [
    "AiError",
    "AiInvalidOutput",
    "AiPermanent",
    "AiRetryable",
    "Assessment",
    "AssessmentProvider",
    "HeuristicProvider",
    "OpenAICompatProvider",
    "build_provider",
]

PROVIDERS = ("heuristic", "openai")


def build_provider(
    name: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    timeout: float = 20.0,
    http: httpx.Client | None = None,
    allow_private: bool = False,
) -> AssessmentProvider:
    """The provider AI_PROVIDER names, configured; AiPermanent when it cannot work."""
    choice = (name or "heuristic").strip().lower()
    if choice == "heuristic":
        return HeuristicProvider()
    if choice != "openai":
        raise AiPermanent(
            f"unknown AI provider {name!r}; expected one of: {', '.join(PROVIDERS)}"
        )
    base_url = (base_url or "").strip()
    model = (model or "").strip()
    if not base_url:
        raise AiPermanent("AI provider openai needs AI_BASE_URL (e.g. https://api.openai.com/v1)")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AiPermanent("AI_BASE_URL must be an http(s) URL such as https://api.openai.com/v1")
    if not model:
        raise AiPermanent("AI provider openai needs AI_MODEL")
    if not timeout or timeout <= 0:
        raise AiPermanent("the AI provider timeout must be a positive number of seconds")
    return OpenAICompatProvider(
        base_url=base_url, model=model, api_key=api_key, timeout=timeout, http=http,
        allow_private=allow_private,
    )
