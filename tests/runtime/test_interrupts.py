"""dpap.runtime.interrupts: SIGTERM/SIGINT (real signals to this process) wait for the end of a
shielded block (an MLflow write), and come at once outside one."""

from __future__ import annotations

import os
import signal

import pytest

from dpap.runtime.interrupts import interrupt_handler, shielded


@pytest.fixture
def handler():
    old = {s: signal.signal(s, interrupt_handler) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in old.items():
        signal.signal(s, h)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_inside_a_shielded_block_is_raised_when_it_ends(handler, sig):
    done = []
    with pytest.raises(KeyboardInterrupt, match=f"signal {int(sig)}"):
        with shielded():
            with shielded():  # nested: only the outermost end raises
                os.kill(os.getpid(), sig)
                done.append("inner write finished")
            done.append("outer write finished")
    assert done == ["inner write finished", "outer write finished"]


def test_outside_a_block_the_signal_interrupts_at_once(handler):
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes, well before this ends
            pass
        pytest.fail("not interrupted")
    with shielded():  # nothing left pending
        pass
