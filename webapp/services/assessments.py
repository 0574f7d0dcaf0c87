"""The AI diagnostic assessment of an escalation, stored on the handoff."""
from __future__ import annotations

from flask import current_app
from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import JSONB

from webapp.extensions import db
from webapp.integrations.ai import (
    AiInvalidOutput,
    AiPermanent,
    AiRetryable,
    AssessmentProvider,
    build_provider,
)
from webapp.models import Delivery, Handoff
from webapp.models.base import utcnow
from webapp.services.deliveries import Permanent, Retryable
from webapp.services.statements import Prepared


def provider_from_config() -> AssessmentProvider:
    config = current_app.config
    return build_provider(config["AI_PROVIDER"], base_url=config["AI_BASE_URL"],
                          api_key=config["AI_API_KEY"], model=config["AI_MODEL"],
                          timeout=config["AI_TIMEOUT"],
                          allow_private=config["ALLOW_PRIVATE_ADDRESSES"])


def provider_is_local() -> bool:
    """The configured provider answers in this process (the heuristic), calling no server."""
    return (current_app.config["AI_PROVIDER"] or "heuristic").strip().lower() == "heuristic"


def case_of(handoff: Handoff) -> dict:
    snapshot = handoff.snapshot
    return {"title": snapshot.get("title"), "client_name": snapshot.get("client_name"),
            "note": handoff.note, "urgency": handoff.urgency,
            "problem": snapshot.get("problem", ""), "messages": snapshot.get("messages", [])}


def assess(row: Delivery) -> None:
    """Side effect of the assessment row: ask the provider, keep the answer on the handoff."""
    handoff = db.session.get(Handoff, row.handoff_id)
    try:
        assessment = provider_from_config().assess(case_of(handoff))
    except AiInvalidOutput as error:  # a model may answer well on the next try
        raise Retryable(error.reason) from error
    except AiRetryable as error:
        raise Retryable(error.reason, error.retry_after) from error
    except AiPermanent as error:
        raise Permanent(error.reason) from error
    _STORE.run({"handoff_id": handoff.id, "stored": {
        **assessment.to_dict(), "generated_at": utcnow().isoformat()}})


# one UPDATE, built once: marking the loaded handoff changed instead had the ORM's unit of
# work flush it, which cost more than the statement (the handoff as loaded keeps its old
# value: the announcement reads it anew)
_HANDOFFS = Handoff.__table__
_STORE = Prepared(db.update(_HANDOFFS).where(_HANDOFFS.c.id == bindparam("handoff_id")).values(
    assessment=bindparam("stored", type_=JSONB)))

