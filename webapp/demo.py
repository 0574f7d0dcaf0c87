"""Demo data for the run command: one MSP with a team, one session ready to escalate."""
from __future__ import annotations

from webapp.extensions import db
from webapp.models import AiSession, SessionMessage, User

DEMO_USERS = [
    ("owner@demo.example", "Olivia Owner", "owner"),
    ("admin@demo.example", "Adam Admin", "admin"),
    ("senior@demo.example", "Sam Senior", "engineer"),
    ("tech@demo.example", "Terry Tech", "engineer"),
    ("viewer@demo.example", "Vera Viewer", "viewer"),
]


def seed_demo(password: str) -> dict:
    from webapp.passwords import hash_password
    from webapp.services.accounts import create_account

    owner = db.session.scalars(db.select(User).where(User.email == DEMO_USERS[0][0])).first()
    if owner is None:
        _, owner = create_account("Demo MSP", DEMO_USERS[0][0], DEMO_USERS[0][1], password)
        for email, name, role in DEMO_USERS[1:]:
            db.session.add(User(account_id=owner.account_id, email=email, name=name, role=role,
                                password_hash=hash_password(password)))
        tech = db.session.scalars(db.select(User).where(User.email == "tech@demo.example")).one()
        session = AiSession(
            account_id=owner.account_id, owner_id=tech.id, status="active",
            title="Outlook keeps prompting for password", client_name="Contoso Dental",
            psa_ticket_id="1001",
            problem="Since this morning Outlook on three front-desk PCs keeps asking for the "
                    "password. OWA works. Users are on Microsoft 365.")
        db.session.add(session)
        db.session.flush()
        db.session.add_all([
            SessionMessage(session_id=session.id, role="engineer",
                           content="Already rebooted the PCs and cleared Credential Manager."),
            SessionMessage(session_id=session.id, role="assistant",
                           content="Check whether modern authentication is enabled and "
                                   "whether the accounts are locked out in Entra ID."),
        ])
        db.session.commit()
    return {"account_id": owner.account_id, "password": password,
            "users": [{"email": e, "role": r} for e, _, r in DEMO_USERS]}
