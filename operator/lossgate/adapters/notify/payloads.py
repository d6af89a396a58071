"""Each sink's HTTP request for one notice: (headers, body bytes). Pure functions.

The generic webhook's JSON is the schema every sink shares (docs/notifications.md): CloudEvents carry
it as `data`, Slack renders its numbers as Block Kit fields.
"""

from __future__ import annotations

import json
from typing import Any

from lossgate.adapters.notify.config import SinkConfig, SinkType
from lossgate.core.notify import Envelope
from lossgate.model.durations import format_timestamp

SCHEMA = "lossgate.io/notification/v1"
IDEMPOTENCY_HEADER = "Idempotency-Key"
CE_TYPE_PREFIX = "io.lossgate.rollout."
_EMOJI = {"info": ":large_blue_circle:", "warning": ":warning:", "critical": ":rotating_light:"}


def webhook_body(env: Envelope) -> dict[str, Any]:
    e, a = env.notice.entry, env.analysis
    numbers: dict[str, Any] | None = None
    if e.verdict is not None or a is not None:
        numbers = {
            "verdict": e.verdict if e.verdict is not None else (a.verdict if a else None),
            "delta": e.delta,
            "csLow": e.cs_low,
            "csHigh": e.cs_high,
            "nBaseline": e.n_baseline,
            "nCanary": e.n_canary,
            "margin": a.margin if a else None,
            "csLevel": a.cs_level if a else None,
            "pRegression": a.p_regression if a else None,
            "pNotWorse": a.p_not_worse if a else None,
            "samplesNeeded": a.samples_needed if a else None,
            "catastrophic": a.catastrophic if a else False,
        }
    return {
        "schema": SCHEMA,
        "id": env.key,
        "event": env.notice.event.value,
        "severity": env.notice.severity.value,
        "time": format_timestamp(e.time),
        "rollout": {
            "namespace": env.namespace,
            "name": env.name,
            "uid": env.uid,
            "model": env.model,
            "baselineVersion": env.baseline_version,
            "canaryVersion": env.canary_version,
        },
        "decision": {
            "kind": e.decision,
            "reason": e.reason,
            "message": e.message,
            "phase": e.phase.value,
            "step": e.step_index + 1,
            "canaryWeight": e.canary_weight,
            "trainingHealth": e.health,
        },
        "analysis": numbers,
    }


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def slack_body(env: Envelope) -> dict[str, Any]:
    body = webhook_body(env)
    d, a, r = body["decision"], body["analysis"], body["rollout"]
    title = f"{env.notice.event.value.capitalize()}: {r['namespace']}/{r['name']} ({r['canaryVersion']})"
    fields = [
        f"*Phase*\n{d['phase']}",
        f"*Step / weight*\n{d['step']} / {d['canaryWeight']}%",
        f"*Reason*\n{d['reason']}",
        f"*Severity*\n{env.notice.severity.value}",
    ]
    if a is not None:
        fields += [
            f"*Delta (nats)*\n{_num(a['delta'])}",
            f"*CS*\n[{_num(a['csLow'])}, {_num(a['csHigh'])}]",
            f"*Margin*\n{_num(a['margin'])}",
            f"*n baseline / canary*\n{_num(a['nBaseline'])} / {_num(a['nCanary'])}",
        ]
    emoji = _EMOJI[env.notice.severity.value]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} {d['message']}"[:3000]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields[:10]]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"id `{env.key}` · {body['time']}"}]},
    ]
    return {"text": f"{title}: {d['message']}"[:3000], "blocks": blocks}


def cloudevent(env: Envelope, structured: bool) -> tuple[dict[str, str], dict[str, Any]]:
    """(headers, body): binary mode puts the attributes in ce-* headers and the data in the body;
    structured mode sends one application/cloudevents+json document."""
    data = webhook_body(env)
    attrs = {
        "specversion": "1.0",
        "id": env.key,
        "source": f"/apis/lossgate.io/v1alpha1/namespaces/{env.namespace}/modelrollouts/{env.name}",
        "type": CE_TYPE_PREFIX + env.notice.event.value,
        "subject": env.name,
        "time": data["time"],
    }
    if structured:
        doc = {**attrs, "datacontenttype": "application/json", "data": data}
        return {"Content-Type": "application/cloudevents+json"}, doc
    headers = {f"ce-{k}": v for k, v in attrs.items()}
    return {**headers, "Content-Type": "application/json"}, data


def request_for(sink: SinkConfig, env: Envelope) -> tuple[dict[str, str], bytes]:
    """The headers and body to POST to `sink`; every request carries the idempotency key."""
    if sink.type is SinkType.SLACK:
        headers, body = {"Content-Type": "application/json"}, slack_body(env)
    elif sink.type is SinkType.CLOUDEVENTS:
        headers, body = cloudevent(env, structured=sink.mode == "structured")
    else:
        headers, body = {"Content-Type": "application/json"}, webhook_body(env)
    headers = {**sink.headers, **headers, IDEMPOTENCY_HEADER: env.key}
    return headers, json.dumps(body, separators=(",", ":")).encode()
