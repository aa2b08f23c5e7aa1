"""The protocols between processes, with threads for processes and an in-memory stand-in for
jax.distributed's coordination service: the agreed stop after a signal to one process, and
the watchdog that names a lost process. (tests/train/test_multiprocess_faults.py runs the
real thing with two processes.)"""

import itertools
import os
import threading

import pytest

from jaxseg.config import ConfigError, base_config, check_config
from jaxseg.runtime import distributed, preemption
from jaxseg.runtime.preemption import PreemptionGuard, StopAgreement


class FakeCoordinationService:
    """The key-value store and barriers of the coordination service, for threads."""

    def __init__(self, num_processes):
        self.num_processes = num_processes
        self.store = {}
        self.arrived = {}
        self.changed = threading.Condition()

    def client(self):
        return FakeClient(self)


class FakeClient:
    def __init__(self, service):
        self.service = service

    def key_value_set(self, key, value, allow_overwrite=False):
        with self.service.changed:
            if key in self.service.store and not allow_overwrite:
                raise RuntimeError(f"ALREADY_EXISTS: {key}")
            self.service.store[key] = value
            self.service.changed.notify_all()

    def blocking_key_value_get(self, key, timeout_in_ms):
        with self.service.changed:
            if not self.service.changed.wait_for(
                lambda: key in self.service.store, timeout_in_ms / 1000
            ):
                raise RuntimeError(f"DEADLINE_EXCEEDED: {key}")
            return self.service.store[key]

    def key_value_dir_get(self, prefix):
        with self.service.changed:
            return [(k, v) for k, v in sorted(self.service.store.items()) if k.startswith(prefix)]

    def wait_at_barrier(self, barrier_id, timeout_in_ms):
        service = self.service
        with service.changed:
            service.arrived[barrier_id] = service.arrived.get(barrier_id, 0) + 1
            service.changed.notify_all()
            if not service.changed.wait_for(
                lambda: service.arrived[barrier_id] >= service.num_processes, timeout_in_ms / 1000
            ):
                raise RuntimeError(f"DEADLINE_EXCEEDED: barrier {barrier_id}")


def _agreements(monkeypatch, num_processes):
    """Returns one (guard, StopAgreement) per process, on one fake coordination service."""
    service = FakeCoordinationService(num_processes)
    made = []
    for process in range(num_processes):
        # Each process counts its own agreements (they name the keys).
        monkeypatch.setattr(preemption, "_agreements", itertools.count())
        found = (service.client(), process, num_processes)
        monkeypatch.setattr(distributed, "coordination", lambda found=found: found)
        guard = PreemptionGuard()
        made.append((guard, StopAgreement(guard, timeout_s=20)))
    return made


def _train(agreements, *, signal_at, signal, last_step=8, lead=None):
    """Runs one training loop per process in threads; returns the step each stopped at.

    Process 1 gets `signal` after step `signal_at`. The loops meet at a barrier before every
    step (the step's collective); with `lead`, process 0 may instead run up to that many
    steps ahead of the others (the steps a host dispatches before its device catches up),
    and the others never ahead of it.
    """
    count = len(agreements)
    collective = threading.Barrier(count) if lead is None else None
    ahead = [threading.Semaphore(lead or 0) for _ in range(count)]  # others' steps, for 0
    behind = [threading.Semaphore(0) for _ in range(count)]  # process 0's steps, for others
    stopped = [None] * count
    errors = []

    def loop(process):
        guard, agreement = agreements[process]
        agreement.start(0)
        try:
            for step in range(1, last_step + 1):
                if collective is not None:
                    collective.wait(timeout=20)
                elif process == 0:
                    for other in range(1, count):
                        assert ahead[other].acquire(timeout=20)
                        behind[other].release()
                else:
                    assert behind[process].acquire(timeout=20)
                    ahead[process].release()
                if process == 1 and step == signal_at:
                    guard.requested, guard.signal_name = True, signal
                if agreement.should_stop(step, last_step=last_step):
                    stopped[process] = step
                    return
            stopped[process] = "end"
        except BaseException as e:
            errors.append(e)
        finally:
            agreement.close()
            for semaphore in (*ahead, *behind):
                semaphore.release(10**6)  # a process that stopped holds no one back

    threads = [threading.Thread(target=loop, args=(p,)) for p in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return stopped


@pytest.mark.parametrize("lead", [None, 2])
def test_a_signal_to_one_process_stops_every_process_after_one_step(monkeypatch, lead):
    agreements = _agreements(monkeypatch, 3)
    # The simulated steps take no time: the stop lands some steps after the signal, once
    # the listening threads heard of it, but well before this many.
    stopped = _train(agreements, signal_at=3, signal="SIGTERM", lead=lead, last_step=10**5)
    assert len(set(stopped)) == 1 and stopped[0] != "end", stopped
    assert 3 <= stopped[0] < 10**5, stopped
    for _, agreement in agreements:
        assert agreement.signal_name == "SIGTERM" and not agreement.interrupted
    # Only process 1 got the signal; the others stop without one of their own.
    assert [guard.requested for guard, _ in agreements] == [False, True, False]


def test_ctrl_c_to_one_process_interrupts_every_process(monkeypatch):
    agreements = _agreements(monkeypatch, 2)
    stopped = _train(agreements, signal_at=2, signal="SIGINT", last_step=10**5)
    assert stopped[0] == stopped[1] != "end"
    assert all(agreement.interrupted for _, agreement in agreements)


def test_a_signal_at_the_last_step_needs_no_agreement(monkeypatch):
    agreements = _agreements(monkeypatch, 2)
    stopped = _train(agreements, signal_at=8, signal="SIGTERM", last_step=8)
    assert stopped == ["end", "end"]  # every process saves the last step anyway
    assert [agreement.signal_name for _, agreement in agreements] == ["", "SIGTERM"]


def test_one_process_agreement_is_its_guard(monkeypatch):
    monkeypatch.setattr(distributed, "coordination", lambda: None)
    guard = PreemptionGuard()
    agreement = StopAgreement(guard, timeout_s=1)
    agreement.start(0)
    assert not agreement.should_stop(1, last_step=5)
    guard.requested, guard.signal_name = True, "SIGINT"
    assert agreement.should_stop(2, last_step=5) and agreement.interrupted
    agreement.close()


# --- the lost-process watchdog ------------------------------------------------------------


@pytest.fixture
def exits(monkeypatch):
    """Records the watchdogs' os._exit calls (and stops the watchdog that made one)."""
    calls = []
    done = threading.Event()

    def fake_exit(code):
        calls.append(code)
        done.set()
        for watchdog in fake_exit.watchdogs:
            if watchdog.thread is threading.current_thread():
                watchdog.stopped.set()

    fake_exit.watchdogs = []
    monkeypatch.setattr(os, "_exit", fake_exit)
    return calls, done, fake_exit.watchdogs


def _watchdogs(num_processes, timeout_s):
    service = FakeCoordinationService(num_processes)
    return [
        distributed._Watchdog(service.client(), p, num_processes, timeout_s)
        for p in range(num_processes)
    ]


def test_a_silent_process_is_named_lost(exits, caplog):
    calls, done, registry = exits
    watchdogs = _watchdogs(2, timeout_s=0.5)
    registry.extend(watchdogs)
    for watchdog in watchdogs:
        watchdog.thread.start()
    watchdogs[1].stopped.set()  # process 1 stops ticking: killed
    assert done.wait(timeout=20)
    watchdogs[0].stopped.set()
    assert calls == [distributed.LOST_PROCESS_EXIT_CODE]
    lines = [r.getMessage() for r in caplog.records if "is lost" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("process 1 of 2 is lost: no sign of life")
    assert "Restart all 2 processes" in lines[0]
    # It told the others on its way out, so they need not wait for its silence.
    assert ("jaxseg_watchdog/failed/0", "1") in watchdogs[0].client.key_value_dir_get("")


def test_a_process_that_failed_stops_the_others(exits, caplog):
    calls, done, registry = exits
    watchdogs = _watchdogs(2, timeout_s=8)  # the failure mark stops it, before any silence
    registry.extend(watchdogs)
    for watchdog in watchdogs:
        watchdog.thread.start()
    watchdogs[1].mark("failed")
    assert done.wait(timeout=20)
    for watchdog in watchdogs:
        watchdog.stopped.set()
    assert calls == [distributed.LOST_PROCESS_EXIT_CODE]
    assert "process 1 of 2 is lost: it stopped with an error" in caplog.text


def test_lost_process_timeout_must_be_positive():
    config = base_config()
    config.model.name = "fcn8s"
    config.distributed.lost_process_timeout_s = 0.0
    with pytest.raises(ConfigError, match=r"distributed\.lost_process_timeout_s must be > 0"):
        check_config(config)
