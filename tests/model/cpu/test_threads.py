"""model/cpu/threads.py: torch's threads follow the free cores."""

from __future__ import annotations

import pytest
import torch

from model.cpu import threads


@pytest.fixture
def machine(monkeypatch):
    """A 2-core machine whose clocks the test moves: wall time, our CPU time, the machine's."""
    state = {"wall": 0.0, "own": 0.0, "busy": 0.0, "total": 0.0}
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.time, "monotonic", lambda: state["wall"])
    monkeypatch.setattr(threads.time, "process_time", lambda: state["own"])
    monkeypatch.setattr(threads, "_busy_seconds", lambda: (state["busy"], state["total"]))
    kept = torch.get_num_threads()
    yield state
    torch.set_num_threads(kept)


def _second(state, own: float, others: float) -> None:
    """One second passes: we use `own` cores, other programs `others`."""
    state["wall"] += 1.0
    state["own"] += own
    state["busy"] += own + others
    state["total"] += 2.0


def test_steps_down_when_others_take_a_core_and_up_when_they_leave(machine):
    policy = threads.ThreadPolicy()
    assert policy.threads == 2 and torch.get_num_threads() == 2
    _second(machine, own=1.0, others=1.0)
    policy.step_done()
    assert policy.threads == 1 and torch.get_num_threads() == 1 and policy.others == 1.0
    _second(machine, own=1.0, others=0.0)
    policy.step_done()
    assert policy.threads == 2 and "follows the free cores" in policy.describe()
    machine["wall"] += 0.5  # within the second: not looked at again
    machine["busy"] += 1.0
    policy.step_done()
    assert policy.threads == 2


def test_a_fixed_count_stays(machine, monkeypatch):
    policy = threads.ThreadPolicy(1)
    _second(machine, own=1.0, others=0.0)
    policy.step_done()
    assert policy.threads == 1 and policy.describe() == "1 threads (fixed by --threads)"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(3)
    assert "fixed by OMP_NUM_THREADS" in threads.ThreadPolicy().describe()


def test_the_usable_cores_are_the_affinity_and_the_quota(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.usable_cores() == 4
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)
    assert threads.usable_cores() == 2
