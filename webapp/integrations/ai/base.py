"""What every assessment provider shares: the assessment, its errors and the provider contract."""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class Assessment:
    """An AI diagnostic assessment of an escalated session, as the handoff shows it."""

    summary: str
    likely_causes: list[str]
    next_steps: list[str]
    confidence: float  # 0..1
    provider: str
    model: str

    def to_dict(self) -> dict:
        """The assessment's fields as the handoff's `assessment` object carries them."""
        return {
            "summary": self.summary,
            "likely_causes": list(self.likely_causes),
            "next_steps": list(self.next_steps),
            "confidence": self.confidence,
            "provider": self.provider,
            "model": self.model,
        }


class AiError(Exception):
    """An assessment could not be made; `reason` is short, readable and free of secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AiRetryable(AiError):
    """Trying again later may succeed; `retry_after` is the provider's own wait hint in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class AiPermanent(AiError):
    """Trying again will not help: bad configuration, rejected request or unusable answer."""


class AiInvalidOutput(AiPermanent):
    """The model answered, but not with a usable assessment; another try may do better."""


class AssessmentProvider(abc.ABC):
    """Turns an escalated case into an Assessment."""

    name: str

    @abc.abstractmethod
    def assess(self, case: dict) -> Assessment:
        """Assess the case: title, client_name, note, urgency, problem and messages."""
