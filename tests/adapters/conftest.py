"""tests/adapters: one CPU thread per worker (the digits trainings are small; more threads
only fight over the cores), and a fixture that prints a test's measured figures."""

import json
import os

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def report(request):
    """``report(name, figures)``: print the figures and, with ``DPAP_ADAPTER_FIGURES=<file>``,
    append them to that file as one JSON line (how the figures in the docs were taken)."""

    def write(name: str, figures: dict) -> None:
        line = json.dumps({"test": request.node.name, "run": name, **figures})
        print(line)
        path = os.environ.get("DPAP_ADAPTER_FIGURES")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    return write
