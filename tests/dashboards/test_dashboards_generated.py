"""`make dashboards` output is checked in: regenerating shows no drift (dashboards/ and the chart's
copy), and each file reads back through grafana-foundation-sdk's types unchanged (no Grafana
server here to import them into: docs/dashboards.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from lossgate_dev.dashboards.__main__ import DIRS, main, rendered

ROOT = Path(__file__).resolve().parents[2]


def test_regenerating_shows_no_drift(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the checked-in dashboards; When they are generated again, Then nothing differs
    monkeypatch.chdir(ROOT)
    assert main(["--check"]) == 0, capsys.readouterr().err
    for folder in DIRS:
        assert sorted(p.name for p in (ROOT / folder).glob("*.json")) == sorted(rendered())


@pytest.mark.parametrize("name", sorted(rendered()))
def test_each_dashboard_reads_back_through_the_sdk_types(name: str) -> None:
    # Given a written dashboard; When it is parsed into the SDK's Dashboard model and written again
    text = (ROOT / "dashboards" / name).read_text()
    model = Dashboard.from_json(json.loads(text))
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    # Then it is the same document, with the variables and a datasource on every panel
    assert again == json.loads(text)
    assert [v.name for v in model.templating.list_val or []][:2] == ["datasource", "namespace"]
    for panel in model.panels or []:
        assert panel.datasource is not None
        assert panel.datasource.uid == "${datasource}"
        assert panel.targets, panel.title
    # And every panel's options are given (none left to a plugin's migration of null)
    for panel in json.loads(text)["panels"]:
        assert isinstance(panel["options"], dict), panel["title"]
    # And the panels tile the 24-column grid without overlapping
    cells = set()
    for panel in model.panels or []:
        pos = panel.grid_pos
        assert pos is not None
        assert pos.x + pos.w <= 24
        mine = {(pos.x + i, pos.y + j) for i in range(pos.w) for j in range(pos.h)}
        assert not cells & mine, panel.title
        cells |= mine
