"""The pairing guard's windows, on a hand-driven clock (pure; the end-to-end attack on a real
`mcgw serve` is in tests/e2e/test_trust_boundary.py)."""

from __future__ import annotations

from api.ratelimit import PairingGuard, Refusal


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wrong_codes_lock_out_their_sender_until_the_oldest_leaves_the_window() -> None:
    clock = Clock()
    guard = PairingGuard(per_client=3, client_window_s=60, hub_limit=100, clock=clock)
    for _ in range(3):
        assert guard.check("10.0.0.1") is None
        guard.failed("10.0.0.1")
        clock.now += 10
    assert guard.check("10.0.0.1") == Refusal(locked_out=True, retry_after_s=30)
    assert guard.check("10.0.0.2") is None  # nobody else is locked out
    clock.now += 29
    assert guard.check("10.0.0.1") is not None
    clock.now += 1
    assert guard.check("10.0.0.1") is None  # the first failure left the window


def test_a_success_clears_its_senders_failures() -> None:
    guard = PairingGuard(per_client=2, clock=Clock())
    guard.failed("a")
    guard.succeeded("a")
    guard.failed("a")
    assert guard.check("a") is None


def test_many_senders_together_meet_the_hub_limit() -> None:
    clock = Clock()
    guard = PairingGuard(per_client=5, hub_limit=4, hub_window_s=60, clock=clock)
    for n in range(4):
        guard.failed(f"10.0.0.{n}")
    refusal = guard.check("10.0.0.99")
    assert refusal == Refusal(locked_out=False, retry_after_s=60)
    clock.now += 61
    assert guard.check("10.0.0.99") is None


def test_memory_stays_bounded_under_address_spraying() -> None:
    clock = Clock()
    guard = PairingGuard(per_client=5, hub_limit=10**6, max_clients=100, clock=clock)
    for n in range(10_000):
        guard.failed(f"addr-{n}")
    assert len(guard._clients) <= 100


def test_guesses_sent_together_cannot_all_pass_before_the_first_is_judged() -> None:
    guard = PairingGuard(per_client=3, hub_limit=100, clock=Clock())
    let_through = [guard.attempt("10.0.0.1") is None for _ in range(10)]  # none judged yet
    assert let_through == [True] * 3 + [False] * 7


def test_a_right_code_and_an_unjudged_attempt_count_nothing() -> None:
    clock = Clock()
    guard = PairingGuard(per_client=5, hub_limit=2, clock=clock)
    assert guard.attempt("phone") is None
    guard.succeeded("phone")
    assert guard.attempt("other") is None
    guard.withdraw("other")  # storage failed: the code was never judged
    assert guard.attempt("x") is None
    assert guard.attempt("y") is None  # two wrong codes on the hub: its limit
    assert guard.attempt("z") == Refusal(locked_out=False, retry_after_s=60)
