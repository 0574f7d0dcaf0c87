"""Events reach a stream whichever process publishes them: another web process, or a worker."""
from tests.factories import escalate


def test_an_escalation_posted_to_another_web_process_arrives(web, second_web, http, streams,
                                                             tenant):
    stream = streams(web.base_url, tenant.headers("engineer"))
    created = escalate(http, tenant, base_url=second_web.base_url)
    event = stream.wait_events(1)[0]
    assert event.event == "handoff_created" and event.json()["handoff"]["id"] == created["id"]


def test_the_workers_handoff_updated_arrives_after_handoff_created(
        web, http, streams, tenant, celery_worker_process):
    # the assessment task, in the worker process, publishes handoff_updated when it settles
    stream = streams(web.base_url, tenant.headers("admin"))
    created = escalate(http, tenant, base_url=web.base_url,
                       note="Users get 'the trust relationship failed'")

    def assessed():
        return [e for e in stream.events if e.event == "handoff_updated"
                and e.json()["handoff"]["id"] == created["id"]
                and e.json()["handoff"]["assessment"]["status"] == "ready"]
    stream.wait(assessed, 20, "handoff_updated with the assessment")
    first = stream.events[1]
    assert (first.event, first.json()["handoff"]["id"]) == ("handoff_created", created["id"])
