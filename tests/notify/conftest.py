from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notify.receiver import Receiver, receiver


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


@pytest.fixture
def rx2() -> Iterator[Receiver]:
    with receiver() as r:
        yield r
