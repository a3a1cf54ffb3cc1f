"""Idle waits back off and wake on work (kreaserve/wakeups.py); the worker's use of them
is tested in test_worker_loop.py."""

from __future__ import annotations

import threading
import time

from kreaserve import wakeups


def test_the_idle_wait_doubles_up_to_its_ceiling_and_a_claim_resets_it() -> None:
    idle = wakeups.Idle("test-backoff", 0.01, 0.04)
    delays = []
    for _ in range(4):
        delays.append(idle._delay)
        assert not idle.wait()
    assert delays == [0.01, 0.02, 0.04, 0.04]
    idle.reset()
    assert idle._delay == 0.01


def test_a_notify_ends_the_wait_of_its_channel_only() -> None:
    tasks, other = wakeups.Idle("test-tasks", 30, 30), wakeups.Idle("test-other", 30, 30)
    threading.Timer(0.1, wakeups.notify, ["test-tasks"]).start()
    started = time.monotonic()
    assert tasks.wait()
    assert time.monotonic() - started < 10
    assert not other._event.is_set()


def test_a_due_time_shortens_the_wait_but_never_below_the_base() -> None:
    idle = wakeups.Idle("test-due", 0.05, 30)
    idle._delay = 30
    started = time.monotonic()
    idle.wait(until=time.time() - 100)  # due long ago (say, not claimable): the base
    idle.wait(until=time.time() + 0.2)
    assert 0.2 <= time.monotonic() - started < 10


def test_a_waiter_that_needs_a_listener_keeps_the_base_until_it_is_connected() -> None:
    """PostgreSQL: without its LISTEN connection a waiter would miss other processes'
    work for a whole ceiling, so it backs off only while the listener is up."""
    idle = wakeups.Idle("test-remote", 0.01, 0.04, remote="test-source")
    local = wakeups.Idle("test-remote", 0.01, 0.04)
    assert (idle.ceiling, local.ceiling) == (0.01, 0.04)
    for _ in range(3):
        assert not idle.wait()
    assert idle._delay == 0.01
    wakeups.set_remote("test-source", True)
    try:
        assert idle._event.is_set() and not local._event.is_set()  # it woke its waiters
        assert idle.wait()
        for _ in range(3):
            assert not idle.wait()
        assert (idle.ceiling, idle._delay) == (0.04, 0.04)
    finally:
        wakeups.set_remote("test-source", False)
    assert idle._event.is_set()  # a lost listener wakes them too: they poll at once
    started = time.monotonic()
    idle.wait()
    idle._delay = 0.04  # grown before the outage: the next wait is the base all the same
    assert not idle.wait()
    assert time.monotonic() - started < 0.04 + 5
    assert idle._delay == 0.01
