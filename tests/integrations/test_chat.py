"""The chat channel's messages and webhook posts, against the local chat webhook server."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest

from tests.servers.chat import SLACK, TEAMS, TEAMS_LEGACY, ChatServer
from webapp.integrations import chat
from webapp.integrations.chat import ChatFacts, build_message, check_webhook_url, post
from webapp.services.deliveries import Permanent, Retryable

LINK = "https://escalations.example.com/queue#handoff-42"
FACTS = ChatFacts(title="File server unreachable by name", client="Acme Dental",
                  urgency="high", escalator="Jo Tech",
                  note="Rebooted fs01, flushed DNS on two PCs.\nStill failing.", link=LINK)
PROVIDER = {TEAMS: "teams", TEAMS_LEGACY: "teams", SLACK: "slack"}
KINDS = (TEAMS, TEAMS_LEGACY, SLACK)


@pytest.fixture
def chat_server():
    with ChatServer() as server:
        yield server


def send(server: ChatServer, kind: str, facts: ChatFacts = FACTS, *, deadline: float = 5.0,
         allow_private: bool = True):
    """Post facts' message to the server's webhook of this kind, as the task would."""
    provider = PROVIDER[kind]
    return post(provider, server.webhook_url(kind), build_message(provider, facts),
                allow_private=allow_private, deadline=deadline)


def secret_parts(url: str) -> list[str]:
    """The URL and each of its parts that only its holder should know."""
    parts = urlsplit(url)
    found = [part for part in (url, parts.path, parts.query) if part]
    found += [segment for segment in parts.path.split("/") if len(segment) >= 8]
    found += [pair.split("=", 1)[1] for pair in parts.query.split("&")
              if pair.startswith("sig=")]
    return found


def assert_no_secret(reason: str, url: str) -> None:
    for part in secret_parts(url):
        assert part not in reason, f"{part!r} leaked into {reason!r}"


# ---- messages -------------------------------------------------------------------------

def test_teams_message_is_the_workflows_envelope_with_an_adaptive_card():
    message = build_message("teams", FACTS)

    [attachment] = message["attachments"]
    assert message["type"] == "message"
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    title, facts, note = card["body"]
    assert title["type"] == "TextBlock" and title["weight"] == "Bolder" and title["wrap"]
    assert "File server unreachable by name" in title["text"]
    assert "URGENT" in title["text"]
    assert facts == {"type": "FactSet", "facts": [
        {"title": "Client", "value": "Acme Dental"}, {"title": "Urgency", "value": "HIGH"},
        {"title": "Escalated by", "value": "Jo Tech"}]}
    assert note == {"type": "TextBlock", "text": FACTS.note, "wrap": True}
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open in queue", "url": LINK}]
    json.dumps(message)   # all of it is JSON


def test_slack_message_has_a_fallback_text_fields_and_a_link_button():
    message = build_message("slack", FACTS)

    assert "File server unreachable by name" in message["text"] and LINK in message["text"]
    header, fields, note, actions = message["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert "File server unreachable by name" in header["text"]["text"]
    texts = [f["text"] for f in fields["fields"]]
    assert texts == ["*Client*\nAcme Dental", "*Urgency*\nHIGH", "*Escalated by*\nJo Tech"]
    assert all(f["type"] == "mrkdwn" for f in fields["fields"])
    assert note["text"]["type"] == "mrkdwn" and FACTS.note in note["text"]["text"]
    [button] = actions["elements"]
    assert button["type"] == "button" and button["url"] == LINK
    assert button["text"] == {"type": "plain_text", "text": "Open in queue"}


def test_slack_message_escapes_what_a_user_typed():
    facts = ChatFacts(title="Outlook <script>alert(1)</script>", client="Smith & Sons",
                      urgency="normal", escalator="<!channel>",
                      note="see <https://evil.example|the fix> & run <b>x</b>", link=LINK)

    message = build_message("slack", facts)

    blocks = message["blocks"]
    mrkdwn = json.dumps([message["text"], blocks[1:]])   # all but the plain_text header
    for raw in ("<script>", "<!channel>", "<https://evil.example|", "<b>", "Smith & Sons"):
        assert raw not in mrkdwn
    assert "Outlook &lt;script&gt;alert(1)&lt;/script&gt;" in message["text"]
    assert "*Client*\nSmith &amp; Sons" in [f["text"] for f in blocks[1]["fields"]]
    assert "*Escalated by*\n&lt;!channel&gt;" in [f["text"] for f in blocks[1]["fields"]]
    assert blocks[2]["text"]["text"].endswith(
        "see &lt;https://evil.example|the fix&gt; &amp; run &lt;b&gt;x&lt;/b&gt;")
    # plain_text is shown as written: escaping it would show "&lt;" to the reader
    assert blocks[0]["text"]["text"] == "Escalation: Outlook <script>alert(1)</script>"
    assert message["text"].endswith(f" <{LINK}>")   # the one link that is ours


def test_a_reminder_says_the_escalation_is_still_unclaimed():
    facts = ChatFacts(**{**FACTS.__dict__, "reminder": True})
    for provider in ("teams", "slack"):
        text = json.dumps(build_message(provider, facts))
        assert "Still unclaimed: File server unreachable by name" in text
        assert "still waiting" in text
        assert "still unclaimed" not in json.dumps(build_message(provider, FACTS)).lower()


def test_long_and_odd_text_is_cut_to_the_limits_not_rejected(chat_server):
    facts = ChatFacts(title="T<" * 200 + "\nsecond line", client="C&" * 300,
                      urgency="normal", escalator="E" * 500,
                      note="&" * 5000 + "😀" * 3000, link=LINK)

    slack = build_message("slack", facts)
    header, fields, note, _ = slack["blocks"]
    assert len(header["text"]["text"]) <= 150 and "\n" not in header["text"]["text"]
    assert len(note["text"]["text"]) <= 3000
    assert not note["text"]["text"].rstrip("…").endswith(("&", "&a", "&am", "&amp"))
    assert all(len(f["text"]) <= 2000 for f in fields["fields"])
    assert send(chat_server, SLACK, facts) is None
    assert send(chat_server, TEAMS, facts) is not None
    assert chat_server.rejections == []


def test_an_unknown_provider_is_a_programming_error():
    with pytest.raises(ValueError):
        build_message("discord", FACTS)


# ---- posting --------------------------------------------------------------------------

def test_teams_workflows_answers_202_and_nothing(chat_server):
    run_id = send(chat_server, TEAMS)

    [message] = chat_server.messages_to(TEAMS)
    assert message.json == build_message("teams", FACTS)
    assert run_id and run_id.startswith("08585")   # Workflows' x-ms-workflow-run-id
    [request] = chat_server.requests
    assert request.headers["content-type"] == "application/json"


def test_the_legacy_teams_connector_answers_200_and_1(chat_server):
    assert send(chat_server, TEAMS_LEGACY) is None
    assert len(chat_server.messages_to(TEAMS_LEGACY)) == 1


def test_slack_answers_200_and_ok(chat_server):
    assert send(chat_server, SLACK) is None
    [message] = chat_server.messages_to(SLACK)
    assert message.json["blocks"][0]["type"] == "header"


@pytest.mark.parametrize("kind", KINDS)
def test_a_503_is_retryable_and_the_next_attempt_goes_through(chat_server, kind):
    chat_server.fail_next(503)

    with pytest.raises(Retryable) as error:
        send(chat_server, kind)
    assert "503" in error.value.reason and error.value.retry_after is None
    assert chat_server.messages == []
    send(chat_server, kind)
    assert len(chat_server.messages) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_429_is_retryable_after_the_wait_it_asks_for(chat_server, kind):
    chat_server.fail_next(429, retry_after=7)

    with pytest.raises(Retryable) as error:
        send(chat_server, kind)
    assert error.value.retry_after == 7
    assert "rate limited" in error.value.reason


def test_a_huge_retry_after_is_capped_at_an_hour(chat_server):
    chat_server.fail_next(429, retry_after=86400 * 7)
    with pytest.raises(Retryable) as error:
        send(chat_server, SLACK)
    assert error.value.retry_after == 3600


@pytest.mark.parametrize(("status", "code"), [
    (400, "invalid_payload"), (403, "action_prohibited"), (404, "channel_not_found"),
    (410, "channel_is_archived"),
])
def test_slack_refusals_are_permanent_and_name_slacks_error(chat_server, status, code):
    chat_server.fail_next(status)

    with pytest.raises(Permanent) as error:
        send(chat_server, SLACK)
    assert f"Slack: {status} {code}" in error.value.reason
    assert_no_secret(error.value.reason, chat_server.slack_url)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_teams_refusals_are_permanent_and_name_the_error_code(chat_server, status):
    chat_server.fail_next(status)

    with pytest.raises(Permanent) as error:
        send(chat_server, TEAMS)
    assert error.value.reason.startswith(f"Teams: {status} ")
    assert_no_secret(error.value.reason, chat_server.teams_url)


def test_a_removed_workflow_is_permanent_without_its_id(chat_server):
    """The real 404 names the workflow (part of the secret URL) in its message."""
    url = chat_server.teams_url.replace(chat_server.workflow_id, "0" * 32)
    with pytest.raises(Permanent) as error:
        post("teams", url, build_message("teams", FACTS), allow_private=True, deadline=5)
    assert error.value.reason.startswith("Teams: 404 WorkflowNotFound")
    assert_no_secret(error.value.reason, url)
    with pytest.raises(Permanent) as error:   # a wrong signature
        post("teams", chat_server.teams_url.replace("sig=", "sig=x"),
             build_message("teams", FACTS), allow_private=True, deadline=5)
    assert "401 DirectApiInvalidAuthorizationSignature" in error.value.reason


def test_a_malformed_message_is_refused_by_the_server(chat_server):
    for kind in KINDS:
        with pytest.raises(Permanent) as error:
            post(PROVIDER[kind], chat_server.webhook_url(kind), {"hello": "world"},
                 allow_private=True, deadline=5)
        assert "400" in error.value.reason
    assert chat_server.messages == []
    assert {kind for kind, _why in chat_server.rejections} == set(KINDS)
    teams = build_message("teams", FACTS)
    teams["attachments"][0]["content"]["version"] = "9.9"
    with pytest.raises(Permanent, match="TriggerInputSchemaMismatch"):
        post("teams", chat_server.teams_url, teams, allow_private=True, deadline=5)
    slack = build_message("slack", FACTS)
    slack["blocks"][0]["text"]["text"] = "x" * 151
    with pytest.raises(Permanent, match="Slack: 400 invalid_payload"):
        post("slack", chat_server.slack_url, slack, allow_private=True, deadline=5)


def test_the_url_never_appears_in_a_reason_even_when_the_answer_echoes_it(chat_server):
    url = chat_server.slack_url
    token = urlsplit(url).path.rsplit("/", 1)[1]
    bodies = [f"invalid_token {token}", f"no_service {urlsplit(url).path}", f"bad {url}",
              {"error": {"code": f"Bad{token}"}}, "x" * 500, "<html>" + url + "</html>"]
    reasons = []
    for body in bodies:
        chat_server.fail_next(400, body=body)
        with pytest.raises(Permanent) as error:
            send(chat_server, SLACK)
        reasons.append(error.value.reason)
    for status in (500, 503, 429):
        chat_server.fail_next(status, body=f"oops {url}")
        with pytest.raises(Retryable) as error:
            send(chat_server, SLACK)
        reasons.append(error.value.reason)
    for reason in reasons:
        assert reason.startswith("Slack: ")
        assert_no_secret(reason, url)
    assert reasons[0] == "Slack: 400 invalid_token ***"


def test_network_failures_are_retryable_and_keep_the_url_out(chat_server):
    reasons = []
    chat_server.inject(action="drop")
    with pytest.raises(Retryable) as error:
        send(chat_server, SLACK)
    reasons.append(error.value.reason)

    chat_server.inject(delay=2.0)
    started = time.monotonic()
    with pytest.raises(Retryable) as error:
        send(chat_server, TEAMS, deadline=0.5)
    assert time.monotonic() - started < 1.5
    assert "may have been posted" in error.value.reason
    reasons.append(error.value.reason)

    url, teams_url = chat_server.slack_url, chat_server.teams_url
    chat_server.stop()
    with pytest.raises(Retryable) as error:
        post("slack", url, build_message("slack", FACTS), allow_private=True, deadline=2)
    assert "cannot connect" in error.value.reason
    reasons.append(error.value.reason)
    for reason, kind_url in zip(reasons, (url, teams_url, url), strict=True):
        assert_no_secret(reason, kind_url)


def test_an_answer_past_the_cap_is_abandoned_and_retryable(chat_server):
    chat_server.inject(status=200, body=b"x" * (chat.MAX_RESPONSE_BYTES + 1))
    with pytest.raises(Retryable, match="larger than"):
        send(chat_server, SLACK)


@pytest.mark.parametrize("kind", KINDS)
def test_by_default_a_loopback_webhook_is_refused_permanently(chat_server, kind):
    url = chat_server.webhook_url(kind)
    provider = PROVIDER[kind]
    with pytest.raises(Permanent) as plain:
        post(provider, url, build_message(provider, FACTS), allow_private=False, deadline=5)
    assert "https" in plain.value.reason
    with pytest.raises(Permanent) as refused:
        post(provider, url.replace("http://", "https://"), build_message(provider, FACTS),
             allow_private=False, deadline=5)
    assert "not a public address" in refused.value.reason
    assert "127.0.0.1" not in refused.value.reason
    assert chat_server.requests == []
    for reason in (plain.value.reason, refused.value.reason):
        assert_no_secret(reason, url)


def test_an_unknown_provider_cannot_be_posted_to(chat_server):
    with pytest.raises(Permanent):
        post("discord", chat_server.slack_url, {"text": "x"}, allow_private=True, deadline=5)
    assert chat_server.requests == []


# ---- the webhook URL at save time ---------------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://hooks.slack.com/services/T0AB1CD2E/B0FG3HI4J/abcdefghijklmnopqrstuvwx",
    "https://prod-12.westus.logic.azure.com:443/workflows/0123abcd/triggers/manual/paths/"
    "invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=AbC",
    "https://acme.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d",
])
def test_real_webhook_urls_are_accepted(url):
    for provider in ("teams", "slack"):
        assert check_webhook_url(provider, url) is None


@pytest.mark.parametrize(("url", "says"), [
    ("http://hooks.slack.com/services/T/B/secret-token-1234", "https"),
    ("https://127.0.0.1:8443/services/T/B/secret-token-1234", "not a public address"),
    ("https://localhost/services/T/B/secret-token-1234", "this machine"),
    ("https://10.0.0.5/services/T/B/secret-token-1234", "not a public address"),
    ("ftp://hooks.slack.com/services/T/B/secret-token-1234", "https://"),
    ("hooks.slack.com/services/T/B/secret-token-1234", "https://"),
    ("https:///services/T/B/secret-token-1234", "no host"),
    ("https://user:pw@hooks.slack.com/services/T/B/secret-token-1234", "user name"),
    ("https://hooks.slack.com/services/T/B/secret token-1234", "spaces"),
    ("https://hooks.slack.com:99999/services/T/B/secret-token-1234", "not a valid URL"),
    ("https://hooks.slack.com/" + "a" * 3000, "longer than"),
    ("", "required"),
    (None, "required"),
])
def test_unusable_webhook_urls_are_refused_without_repeating_them(url, says):
    reason = check_webhook_url("slack", url)
    assert reason and says in reason
    assert "secret-token-1234" not in reason


def test_private_and_plain_http_urls_pass_when_the_operator_allows_them(chat_server):
    for kind in KINDS:
        assert check_webhook_url(PROVIDER[kind], chat_server.webhook_url(kind),
                                 allow_private=True) is None
        assert check_webhook_url(PROVIDER[kind], chat_server.webhook_url(kind)) is not None
    assert check_webhook_url("slack", "ftp://x.example/a", allow_private=True)
    assert "unknown chat provider" in check_webhook_url("discord", "https://x.example/")

