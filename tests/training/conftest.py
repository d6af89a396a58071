"""The training tier: real torchrun jobs (2 CPU processes, gloo) against the real Prometheus."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.training.harness import Job


@pytest.fixture
def jobs() -> Iterator[list[Job]]:
    started: list[Job] = []
    yield started
    for job in started:
        job.stop()
