"""`lossgate get [NAME] [-n NS | -A] [--watch] [-o table|json|yaml]`."""

from __future__ import annotations

import json
import time
from typing import Any, TextIO

import yaml
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from lossgate.cli import view
from lossgate.cli.kubeconn import CliError, Rollouts


def render(objs: list[dict[str, Any]], name: str | None) -> RenderableType:
    if name is not None:
        return view.detail(objs[0]) if objs else Text(f"ModelRollout {name} not found (yet)")
    return view.table(objs) if objs else Text("No ModelRollouts found.")


def dump(objs: list[dict[str, Any]], name: str | None, output: str) -> str:
    doc: Any = objs[0] if name is not None else {"apiVersion": "v1", "kind": "List", "items": objs}
    if output == "json":
        return json.dumps(doc, indent=2, sort_keys=False) + "\n"
    return yaml.safe_dump(doc, sort_keys=False)


def console_for(out: TextIO) -> Console:
    return Console(file=out, width=None if out.isatty() else 200, highlight=False, soft_wrap=False)


def run_get(
    rollouts: Rollouts,
    namespace: str | None,
    name: str | None,
    output: str,
    out: TextIO,
    watch: bool = False,
    watch_timeout: float | None = None,
    max_frames: int | None = None,
) -> int:
    objs, rv = rollouts.list(namespace, name)
    if name is not None and not objs and not watch:
        raise CliError(f"ModelRollout {namespace}/{name} not found (is the namespace right? try -n NS or -A)")
    if not watch:
        _emit(objs, name, output, out, console_for(out), live=None)
        return 0
    return _watch(rollouts, namespace, name, output, out, objs, rv, watch_timeout, max_frames)


def _emit(
    objs: list[dict[str, Any]],
    name: str | None,
    output: str,
    out: TextIO,
    console: Console,
    live: Live | None,
    separate: bool = False,
) -> None:
    if output != "table":
        out.write(dump(objs, name, output) + ("---\n" if output == "yaml" and separate else ""))
        out.flush()
    elif live is not None:
        live.update(render(objs, name), refresh=True)
    else:
        print_plain(console, render(objs, name), out)


def print_plain(console: Console, renderable: RenderableType, out: TextIO) -> None:
    """Print; off a terminal, without the padding rich adds to the right of table cells."""
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as cap:
        console.print(renderable)
    out.write("\n".join(line.rstrip() for line in cap.get().splitlines()) + "\n")
    out.flush()


def _watch(
    rollouts: Rollouts,
    namespace: str | None,
    name: str | None,
    output: str,
    out: TextIO,
    objs: list[dict[str, Any]],
    rv: str,
    watch_timeout: float | None,
    max_frames: int | None,
) -> int:
    """Redraw on every change of a watched object. On a terminal the table is redrawn in place (rich
    Live); otherwise each new state is printed after the previous one, like `kubectl get -w`."""
    console = console_for(out)
    deadline = None if watch_timeout is None else time.monotonic() + watch_timeout
    current = {view.fingerprint(o)[0]: o for o in objs}
    frames = 0
    live = Live(console=console, auto_refresh=False) if console.is_terminal and output == "table" else None

    def draw() -> bool:
        nonlocal frames
        items = [current[k] for k in sorted(current)]
        _emit(items, name, output, out, console, live, separate=True)
        frames += 1
        return max_frames is not None and frames >= max_frames

    try:
        if live is not None:
            live.start()
        if draw():
            return 0
        while deadline is None or time.monotonic() < deadline:
            remaining = 300 if deadline is None else max(1, int(deadline - time.monotonic() + 0.999))
            for kind, obj in rollouts.watch(namespace, name, rv, remaining):
                if kind == "ERROR":  # the resourceVersion expired: list again
                    fresh, rv = rollouts.list(namespace, name)
                    current = {view.fingerprint(o)[0]: o for o in fresh}
                    break
                key, version = view.fingerprint(obj)
                rv = version or rv
                if kind == "DELETED":
                    current.pop(key, None)
                else:
                    current[key] = obj
                if draw():
                    return 0
                if deadline is not None and time.monotonic() >= deadline:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
    return 0
