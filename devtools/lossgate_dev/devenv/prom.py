"""A real Prometheus (Debian package) on loopback, with file_sd scrape targets and promtool backfill."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossgate_dev.devenv.procs import Server, free_port, wait_until

_CONFIG = """\
global:
  scrape_interval: {interval}
  scrape_timeout: {timeout}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: targets
    file_sd_configs: [{{files: ["{sd}/targets.json"], refresh_interval: 1s}}]
  - job_name: honor
    honor_labels: true
    file_sd_configs: [{{files: ["{sd}/honor.json"], refresh_interval: 1s}}]
{extra}"""


def _binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise FileNotFoundError(f"{name} not found on PATH: install Debian's package with `make deps`.")
    return path


@dataclass
class Prometheus:
    workdir: Path
    scrape_interval: str = "1s"
    port: int = 0
    server: Server | None = None
    # Where it listens: loopback, or the node tier's host-only address (pods query it there).
    host: str = "127.0.0.1"
    # The binary: Debian's by default; the node tier's own build (it has Kubernetes discovery).
    binary: str = ""
    _targets: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"targets": [], "honor": []})

    @classmethod
    def start(
        cls,
        workdir: Path | None = None,
        scrape_interval: str = "1s",
        port: int = 0,
        host: str = "127.0.0.1",
        extra_scrape_configs: str = "",
        binary: str = "",
    ) -> Prometheus:
        """extra_scrape_configs: YAML list items appended under scrape_configs (indented 2)."""
        p = cls(
            Path(workdir or tempfile.mkdtemp(prefix="lossgate-prom-")),
            scrape_interval,
            port or free_port(),
            host=host,
            binary=binary,
        )
        (p.workdir / "sd").mkdir(parents=True, exist_ok=True)
        for job in p._targets:
            p._write_sd(job)
        secs = float(scrape_interval.rstrip("s"))
        (p.workdir / "prometheus.yml").write_text(
            _CONFIG.format(
                interval=scrape_interval,
                timeout=f"{int(max(secs * 0.8, 0.5) * 1000)}ms",
                sd=p.workdir / "sd",
                extra=extra_scrape_configs,
            )
        )
        p._launch()
        return p

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _launch(self) -> None:
        self.server = Server(
            "prometheus",
            [
                self.binary or _binary("prometheus"),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=30d",
                "--log.level=warn",
            ],
            self.workdir / "prometheus.log",
        )
        wait_until(lambda: _get(f"{self.url}/-/ready") is not None, 60, "prometheus /-/ready", self.server)

    def stop(self) -> None:
        if self.server:
            self.server.stop()
            self.server = None

    def restart(self) -> None:
        """Start again on the same port and data dir (after stop(), or to load backfilled blocks)."""
        self.stop()
        self._launch()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # Scrape targets -----------------------------------------------------------------------------
    def add_target(
        self, address: str, labels: dict[str, str] | None = None, honor_labels: bool = False
    ) -> None:
        job = "honor" if honor_labels else "targets"
        self._targets[job].append({"targets": [address], "labels": dict(labels or {})})
        self._write_sd(job)

    def remove_target(self, address: str) -> None:
        for job, groups in self._targets.items():
            self._targets[job] = [g for g in groups if address not in g["targets"]]
            self._write_sd(job)

    def _write_sd(self, job: str) -> None:
        tmp = self.workdir / "sd" / f".{job}.json.tmp"
        tmp.write_text(json.dumps(self._targets[job]))
        tmp.replace(self.workdir / "sd" / f"{job}.json")  # atomic: Prometheus never reads half a file

    def wait_target_up(self, address: str, timeout: float = 30) -> None:
        def up() -> bool:
            data = self.api("targets")
            return any(
                t["scrapeUrl"].split("//", 1)[1].startswith(address) and t["health"] == "up"
                for t in data["activeTargets"]
            )

        wait_until(up, timeout, f"scrape target {address} up", self.server)

    # Backfill -------------------------------------------------------------------------------------
    def backfill(self, openmetrics: str) -> None:
        """Write OpenMetrics text as TSDB blocks with promtool, then restart so they are loaded now
        (a running Prometheus would only pick them up at its next block reload)."""
        src = self.workdir / "backfill.om"
        text = openmetrics if openmetrics.rstrip().endswith("# EOF") else openmetrics.rstrip() + "\n# EOF\n"
        src.write_text(text)
        out = subprocess.run(
            [
                _binary("promtool"),
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                str(src),
                str(self.workdir / "data"),
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"promtool backfill failed: {out.stderr.strip() or out.stdout.strip()}")
        self.restart()

    # Queries --------------------------------------------------------------------------------------
    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        body = _get(url)
        if body is None:
            raise RuntimeError(f"GET {url} failed")
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise RuntimeError(f"GET {url}: {doc}")
        return doc["data"]

    def query(self, expr: str, time: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} | ({"time": str(time)} if time is not None else {})
        return list(self.api("query", **params)["result"])


@dataclass
class Pushgateway:
    workdir: Path
    port: int = 0
    server: Server | None = None

    @classmethod
    def start(cls, workdir: Path | None = None) -> Pushgateway:
        g = cls(Path(workdir or tempfile.mkdtemp(prefix="lossgate-pgw-")), free_port())
        g.server = Server(
            "pushgateway",
            [
                _binary("prometheus-pushgateway"),
                f"--web.listen-address=127.0.0.1:{g.port}",
                "--log.level=warn",
            ],
            g.workdir / "pushgateway.log",
        )
        wait_until(lambda: _get(f"{g.url}/-/ready") is not None, 30, "pushgateway /-/ready", g.server)
        return g

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.server:
            self.server.stop()
            self.server = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _get(url: str, timeout: float = 5) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bytes(r.read()) if r.status == 200 else None
    except OSError:
        return None
