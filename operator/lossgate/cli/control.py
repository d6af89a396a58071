"""`lossgate promote|abort|retry|pause|resume NAME`: set the manual-command annotation, or refuse.

The refusals mirror what the state machine would do with the annotation (docs/api.md, "Manual
control"): a command the phase does not allow would only be ignored by the operator with a
CommandIgnored event, so the CLI refuses it up front, says why and what to do instead, and exits 1.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TextIO

from lossgate.cli.kubeconn import CliError, Rollouts
from lossgate.core.observation import COMMAND_PRECEDENCE, ManualCommand

EXIT_REFUSED = 1
RETRY = ManualCommand.RETRY.annotation


def refusal(cmd: ManualCommand, obj: dict[str, Any]) -> str | None:
    """Why the operator would ignore `cmd` on this object now; None when it would act on it."""
    st = obj.get("status") or {}
    spec = obj.get("spec") or {}
    phase = str(st.get("phase") or "Pending")
    paused_by_spec = bool(spec.get("paused"))
    manual = bool(st.get("manuallyPaused"))
    new = "change spec.canary.version to start a new rollout"
    if cmd is ManualCommand.RETRY:
        if phase in ("RolledBack", "Failed"):
            return None
        return f"retry restarts a RolledBack or Failed rollout; this one is {phase}"
    if phase == "Promoted":
        return f"the rollout is already Promoted (the canary serves 100%); {new}"
    if phase in ("RolledBack", "Failed"):
        what = {
            ManualCommand.PROMOTE: f"promote needs a live rollout; use `lossgate retry` ({RETRY}) to "
            "start it again from step 1, then promote",
            ManualCommand.ABORT: "nothing to abort: the canary already has 0% of the traffic",
            ManualCommand.PAUSE: f"nothing to pause; use `lossgate retry` ({RETRY}) to start it again",
            ManualCommand.RESUME: f"nothing to resume; use `lossgate retry` ({RETRY}) to start it again",
        }[cmd]
        return f"the rollout is {phase}: {what}"
    if cmd is ManualCommand.PAUSE and (manual or paused_by_spec):
        by = "spec.paused" if paused_by_spec else ManualCommand.PAUSE.annotation
        return f"the rollout is already paused (by {by})"
    if cmd is ManualCommand.RESUME and not manual:
        if paused_by_spec:
            return "the rollout is paused by spec.paused: set spec.paused: false in the manifest (Git)"
        return f"the rollout is not paused (phase {phase})"
    return None


def pending(obj: dict[str, Any]) -> list[ManualCommand]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return [c for c in COMMAND_PRECEDENCE if c.annotation in annotations]


def run_command(rollouts: Rollouts, cmd: ManualCommand, namespace: str, name: str, out: TextIO) -> int:
    obj = rollouts.get(namespace, name)
    why = refusal(cmd, obj)
    ref = f"ModelRollout {namespace}/{name}"
    if why is not None:
        out.write(f"refused: {cmd.value} {ref}: {why}\n")
        return EXIT_REFUSED
    waiting = pending(obj)
    if cmd in waiting:
        out.write(f"{cmd.annotation} is already set on {ref}; the operator handles it at its next tick\n")
        return 0
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        rollouts.annotate(namespace, name, cmd.annotation, stamp)
    except CliError as err:
        out.write(f"refused: {cmd.value} {ref}: {err}\n")
        return EXIT_REFUSED
    phase = (obj.get("status") or {}).get("phase") or "Pending"
    out.write(f"{cmd.value} requested on {ref} (phase {phase}): annotation {cmd.annotation}={stamp}\n")
    winner = next((c for c in COMMAND_PRECEDENCE if c in {*waiting, cmd}), cmd)
    if winner is not cmd:
        out.write(f"note: {winner.annotation} is also pending and takes precedence at the next tick\n")
    if cmd is ManualCommand.RESUME and (obj.get("spec") or {}).get("paused"):
        out.write("note: spec.paused is still true and wins until it is set to false\n")
    return 0
