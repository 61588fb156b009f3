"""Fair queues' tenant state in the store: Redis' script and the MemoryStore agree, and
hostile tenant and queue names neither collide nor break the script."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from celery_resilience.load.fairness import FairTag
from celery_resilience.store import MemoryStore, Store
from celery_resilience.store.keys import KeySpace
from celery_resilience.store.redis import RedisStore
from celery_resilience.testing import FakeClock
from tests.conftest import store_url

HOSTILE = ["a:b", "a", "b", "{s1}", "w:a", "delayed:a", "*", "~anonymous", "x\x00y", "é" * 300, "' or 1 --"]


@pytest.fixture(params=["memory", "redis"])
def fair_store(request: pytest.FixtureRequest, keys: KeySpace, clock: FakeClock) -> Iterator[Store]:
    """The MemoryStore and the RedisStore, on an injected clock."""
    if request.param == "memory":
        yield MemoryStore(keys, clock=clock)
        return
    request.getfixturevalue("redis_available")
    store = RedisStore(store_url(), keys, clock=clock)
    yield store
    store.purge()
    store.close()


def test_tags_space_a_flood_and_let_a_newcomer_in(fair_store: Store, clock: FakeClock) -> None:
    """A flood is spaced at the service rate; a second tenant starts at once and halves the flood's share."""
    delays = [fair_store.fair_tag("q", "noisy", 1.0, 1.0, 60.0, 10.0).delay for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert fair_store.fair_tag("q", "quiet", 1.0, 1.0, 60.0, 10.0).delay == 0.0
    # Two tenants booked now: the next noisy task starts at its tag, and is spaced twice as far.
    assert fair_store.fair_tag("q", "noisy", 1.0, 1.0, 60.0, 10.0).delay == pytest.approx(0.5)
    assert fair_store.fair_tag("q", "noisy", 1.0, 1.0, 60.0, 10.0).delay == pytest.approx(0.7)
    clock.advance(100)
    assert fair_store.fair_tag("q", "noisy", 1.0, 1.0, 60.0, 10.0).delay == 0.0
    status = fair_store.fair_status("q")
    assert status["delayed"] == status["delayed:noisy"] == 6 and "delayed:quiet" not in status
    assert status["delay_total"] == pytest.approx(0.1 + 0.2 + 0.3 + 0.4 + 0.5 + 0.7)


def test_workers_reports_make_the_service_rate(fair_store: Store, clock: FakeClock) -> None:
    """Without a stated rate the tags use the sum of fresh worker reports; none fresh: no delay."""
    assert fair_store.fair_tag("q", "t", 1.0, 1.0, 60.0, None).capacity == 0.0
    fair_store.fair_capacity("q", "host:1", 4.0)
    fair_store.fair_capacity("q", "host:2", 6.0)
    assert fair_store.fair_status("q")["capacity"] == pytest.approx(10.0)
    tags = [fair_store.fair_tag("q", "t", 1.0, 1.0, 60.0, None) for _ in range(2)]
    assert [tag.capacity for tag in tags] == pytest.approx([10.0, 10.0])
    assert tags[1].delay == pytest.approx(0.1)
    clock.advance(30)
    assert fair_store.fair_tag("q", "t", 1.0, 1.0, 60.0, None).capacity == 0.0


def test_hostile_tenant_names_are_tenants_of_their_own(fair_store: Store) -> None:
    """Names with colons, braces, globs, NULs, markers or 600 bytes each keep a tag of their own."""
    queue = "q:{x}*"
    # Two names sharing a tag would hold the second back in this first round.
    assert [fair_store.fair_tag(queue, name, 1.0, 1.0, 60.0, 1.0).delay for name in HOSTILE] == [0.0] * 11
    # The k-th tenant booked its first task among k: its second starts k seconds later.
    again = [fair_store.fair_tag(queue, name, 1.0, 1.0, 60.0, 1.0).delay for name in HOSTILE]
    assert again == pytest.approx(list(range(1, 12)))
    assert fair_store.fair_status(queue)["tenants"] == len(HOSTILE)
    # The anonymous callers' marker is not a name a tenant can take.
    assert fair_store.fair_tag(queue, None, 1.0, 1.0, 60.0, 1.0).delay == 0.0


def test_a_fair_queues_keys_share_one_slot(keys: KeySpace) -> None:
    """Every key the script touches hashes to one Cluster slot, whatever the queue's name."""
    for queue in ("celery", "q:{x}*", "}{", "é" * 300):
        assert len({key_slot(key.encode()) for key in keys.fair(queue)}) == 1


def test_a_turn_further_off_than_the_wait_is_not_booked(fair_store: Store, clock: FakeClock) -> None:
    """Within a second, a tenant books four turns; its fifth is counted over its share and charges nothing."""

    def turn() -> FairTag:
        return fair_store.fair_tag("p", "noisy", 1.0, 1.0, 60.0, 2.0, within=1.0, kind="provider")

    turns = [turn() for _ in range(4)]
    assert [(t.delay, t.booked) for t in turns] == [(0.0, True), (0.0, True), (0.5, True), (1.0, True)]
    refused = turn()
    assert refused.booked is False and refused.delay == pytest.approx(1.5)
    clock.advance(0.6)  # the refusal booked nothing: the next turn is where the fourth left it
    assert turn().delay == pytest.approx(0.9)
    status = fair_store.fair_status("p", "provider")
    assert (status["over_share"], status["over_share:noisy"], status["delayed:noisy"]) == (1.0, 1.0, 3.0)


def test_a_budget_and_a_queue_of_one_name_share_nothing(fair_store: Store, keys: KeySpace) -> None:
    """A provider's tenants are kept apart from a queue's of the same name, in keys and in tags."""
    turns = [fair_store.fair_tag("openai", "t", 1.0, 1.0, 60.0, 1.0, kind="provider").delay for _ in range(3)]
    assert turns == [0.0, 0.0, 1.0]
    assert fair_store.fair_tag("openai", "t", 1.0, 1.0, 60.0, 1.0).delay == 0.0
    assert fair_store.fair_status("openai", "provider")["delayed"] == 1.0
    assert fair_store.fair_status("openai").get("delayed", 0.0) == 0.0
    assert not set(keys.fair("openai")) & set(keys.fair("openai", "provider"))
    assert len({key_slot(key.encode()) for key in keys.fair("q:{x}*", "provider")}) == 1


def test_a_budgets_clock_hands_an_idle_share_to_the_others(fair_store: Store, clock: FakeClock) -> None:
    """Two calls a second: turns half a second apart alone, a second among two, half again once alone."""

    def turn(tenant: str) -> float:
        return fair_store.fair_tag("p", tenant, 1.0, 1.0, 60.0, 2.0, kind="provider").delay

    assert [turn("a") for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    assert [turn("b") for _ in range(3)] == [0.0, 0.0, 1.0]
    assert turn("a") == 3.0  # its fourth turn ahead, among two
    assert fair_store.fair_status("p", "provider")["tenants"] == 2
    clock.advance(3.0)  # the clock has passed b's last turn: a is alone again
    assert turn("a") == pytest.approx(0.5)
    assert fair_store.fair_status("p", "provider")["tenants"] == 1
    refused = fair_store.fair_tag("p", "a", 1.0, 1.0, 60.0, 2.0, within=0.6, kind="provider")
    assert refused.delay == pytest.approx(1.0) and not refused.booked
    assert fair_store.fair_status("p", "provider")["over_share:a"] == 1.0


def test_a_wait_is_foreseen_with_the_tags_as_they_stand(fair_store: Store, clock: FakeClock) -> None:
    """Two a second: a turn behind a tenant that leaves after one call is foreseen alone after it."""

    def turn(tenant: str) -> float:
        return fair_store.fair_tag("p", tenant, 1.0, 1.0, 60.0, 2.0, kind="provider").delay

    assert turn("b") == 0.0  # one call: booked for one turn
    # a's third call waits a turn among two (1 s); its fourth one more turn, a alone by then
    # (0.5 s more, not a whole second as if b stayed booked).
    assert [turn("a") for _ in range(4)] == [0.0, 0.0, 1.0, 1.5]


def test_a_clock_starting_charges_what_the_window_holds_ahead(fair_store: Store, clock: FakeClock) -> None:
    """A lead given as the clock starts slows it until paid; given while it runs, nothing."""

    def turn(tenant: str, lead: float = 0.0) -> float:
        tag = fair_store.fair_tag("p", tenant, 1.0, 1.0, 60.0, 2.0, kind="provider", lead=lead, lead_for=3.0)
        return tag.delay

    # Three calls ahead for three seconds: one a second is given out, not two.
    assert [turn("a", lead=3.0) for _ in range(4)] == [0.0, 0.0, 1.0, 2.0]
    clock.advance(3.0)  # paid: a is still booked, and the clock runs at the budget's rate
    assert [turn("a", lead=3.0) for _ in range(2)] == [0.0, 0.5]  # a lead now is not charged
    clock.advance(100.0)
    assert [turn("b") for _ in range(3)] == [0.0, 0.0, 0.5]  # started without a lead: its own rate
