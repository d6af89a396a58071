"""Which decisions are news for people: the Notice a tick emits beside its history entry. Pure data.

A notice is taken from the same place as the history entry (TickBase.record), so it exists exactly
when a decision is recorded: every start, advance, promote, rollback and block, and a hold only when
it begins or its reason changes (not once per tick while held). Delivery is an adapter's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lossgate.core.decision import DecisionKind
from lossgate.model.conditions import Reason
from lossgate.model.status import AnalysisStatus, HistoryEntry

NOTIFY_ANNOTATION = "lossgate.io/notify"  # comma-separated sink names a rollout subscribes to


class NoticeEvent(StrEnum):
    START = "start"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    HOLD = "hold"
    BLOCK = "block"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
EVENT_OF_KIND = {
    DecisionKind.START: NoticeEvent.START,
    DecisionKind.ADVANCE: NoticeEvent.ADVANCE,
    DecisionKind.PROMOTE: NoticeEvent.PROMOTE,
    DecisionKind.ROLLBACK: NoticeEvent.ROLLBACK,
    DecisionKind.HOLD: NoticeEvent.HOLD,
    DecisionKind.BLOCK: NoticeEvent.BLOCK,
}
_SEVERITY = {
    NoticeEvent.START: Severity.INFO,
    NoticeEvent.ADVANCE: Severity.INFO,
    NoticeEvent.PROMOTE: Severity.INFO,
    NoticeEvent.HOLD: Severity.WARNING,
    NoticeEvent.ROLLBACK: Severity.CRITICAL,
    NoticeEvent.BLOCK: Severity.CRITICAL,
}


@dataclass(frozen=True)
class Notice:
    """One decision worth telling people about, with the numbers it was taken on."""

    event: NoticeEvent
    severity: Severity
    entry: HistoryEntry


def notice_for(kind: DecisionKind, entry: HistoryEntry) -> Notice | None:
    """The notice of a recorded decision (None for restarts and waits). A hold someone asked for
    (paused) is info, not a warning: nobody needs to act on it."""
    event = EVENT_OF_KIND.get(kind)
    if event is None:
        return None
    severity = _SEVERITY[event]
    if event is NoticeEvent.HOLD and entry.reason == Reason.PAUSED:
        severity = Severity.INFO
    return Notice(event, severity, entry)


@dataclass(frozen=True)
class Envelope:
    """A notice addressed: which rollout, its identity and the key that makes redelivery harmless.

    `key` is the rollout's uid, the decision's time (ms) and its kind: the same for every retry of
    one delivery, different for every recorded decision (two decisions never share a tick's time
    and kind: a tick records at most one of each).
    """

    key: str
    namespace: str
    name: str
    uid: str
    model: str
    baseline_version: str
    canary_version: str
    notice: Notice
    analysis: AnalysisStatus | None
    subscriptions: frozenset[str]


def envelope(
    notice: Notice,
    *,
    namespace: str,
    name: str,
    uid: str,
    model: str,
    versions: tuple[str, str],
    analysis: AnalysisStatus | None,
    subscriptions: frozenset[str],
) -> Envelope:
    ms = round(notice.entry.time.timestamp() * 1000)
    return Envelope(
        key=f"{uid}/{ms}/{notice.event.value}",
        namespace=namespace,
        name=name,
        uid=uid,
        model=model,
        baseline_version=versions[0],
        canary_version=versions[1],
        notice=notice,
        analysis=analysis,
        subscriptions=subscriptions,
    )


def subscriptions_of(annotation: str | None) -> frozenset[str]:
    """The sinks a rollout subscribes to: the comma-separated `lossgate.io/notify` annotation."""
    if not annotation:
        return frozenset()
    return frozenset(s.strip() for s in annotation.split(",") if s.strip())
