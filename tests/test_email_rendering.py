"""An email group renders each email once and re-addresses it per recipient: the bytes sent
must be exactly what rendering the message for that recipient gives."""
import pytest
from flask_mail import Message

from webapp.services.notifications import readdressed

LONG_DOMAIN = "mail." * 20 + "example.com"


def message(to: str, row: int) -> Message:
    built = Message(subject="[URGENT] Escalation: DNS fails — ünïcode title (Acme Ltd) from Zoë",
                    recipients=[to], body="Escalation note:\nDNS fails on DC01 — ü\n" * 40,
                    extra_headers={"X-Escalation-Handoff": "7", "X-Escalation-Session": "3"})
    built.msgId = f"<handoff-7.delivery-{row}@escalations>"
    return built


@pytest.mark.parametrize("address", [
    "senior@example.com", "o'brien+esc@example.co.uk", f"{'x' * 64}@{LONG_DOMAIN}"])
def test_a_readdressed_message_is_byte_for_byte_its_own_rendering(app, address):
    with app.app_context():
        renderings: dict = {}
        readdressed(message("first@example.com", 1), renderings, "email-7")
        sent = readdressed(message(address, 2), renderings, "email-7")
        assert renderings["email-7"] is not None and "as_bytes" in vars(sent)
        expected = message(address, 2)
        expected.date = sent.date
        assert sent.as_bytes() == expected.as_bytes()
        assert f"To: {address}".encode() in sent.as_bytes()


@pytest.mark.parametrize("address", [
    "Zoë Senior <zoe@example.com>", "zoë@example.com", '"quoted name"@example.com'])
def test_an_address_a_header_would_quote_or_encode_is_rendered_on_its_own(app, address):
    with app.app_context():
        renderings: dict = {}
        readdressed(message("first@example.com", 1), renderings, "email-7")
        own = message(address, 2)
        assert readdressed(own, renderings, "email-7") is own and "as_bytes" not in vars(own)
