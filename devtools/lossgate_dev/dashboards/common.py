"""What the three dashboards share: the datasource and the namespace/rollout variables, PromQL
targets, and panels placed on a 24-column grid (grafana-foundation-sdk's typed builders)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import common as viz
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    GridPos,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Any rollout's series: the last-analysis gauge stays after a rollout finishes (docs/metrics.md).
ROLLOUT_SERIES = "lossgate_last_analysis_timestamp_seconds"
Panel = timeseries.Panel | stat.Panel | table.Panel


def datasource() -> dash.DatasourceVariable:
    return dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def query_variable(name: str, label: str, query: str, *, multi: bool) -> dash.QueryVariable:
    v = (
        dash.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(DS)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )
    return v.multi(True).include_all(True) if multi else v


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).legend_format(legend or "__auto")
    return q.instant().format(PromQueryFormat.TABLE) if instant else q.range()


def series(title: str, description: str, unit: str, *targets: prometheus.Dataquery) -> timeseries.Panel:
    # Options given in full: a panel whose options are null relies on the plugin's migration.
    legend = viz.VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST)
    tooltip = viz.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)
    p = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .legend(legend.placement(LegendPlacement.BOTTOM))
        .tooltip(tooltip)
        .line_width(1)
        .fill_opacity(10)
    )
    for t in targets:
        p = p.with_target(t)
    return p


def big_number(title: str, description: str, unit: str, expr: str) -> stat.Panel:
    reduce = viz.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .reduce_options(reduce)
        .graph_mode(BigValueGraphMode.NONE)
        .with_target(target(expr))
    )


def merged_table(title: str, description: str, *targets: prometheus.Dataquery) -> table.Panel:
    """Instant queries merged into one row per series (Grafana's merge transformation)."""
    p = table.Panel().title(title).description(description).datasource(DS).show_header(True)
    for t in targets:
        p = p.with_target(t)
    return p.with_transformation(DataTransformerConfig(id_val="merge", options={}))


@dataclass
class Layout:
    """Left to right, then the next row: each panel's gridPos from its width and height."""

    x: int = 0
    y: int = 0
    row_h: int = 0

    def place(self, panel: Panel, w: int, h: int = 8) -> Panel:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel = panel.grid_pos(GridPos(h=h, w=w, x=self.x, y=self.y))
        self.x, self.row_h = self.x + w, max(self.row_h, h)
        return panel


def board(
    uid: str, title: str, description: str, variables: list[Any], panels: list[tuple[Panel, int, int]]
) -> dash.Dashboard:
    d = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["lossgate"])
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
    )
    for v in variables:
        d = d.with_variable(v)
    layout = Layout()
    for panel, w, h in panels:
        d = d.with_panel(layout.place(panel, w, h))
    return d


def to_json(d: dash.Dashboard) -> str:
    """The dashboard model as Grafana imports it: stable key order, one trailing newline."""
    return json.dumps(d.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def exprs(model: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(panel title, PromQL, instant) of every target of a dashboard's JSON model."""
    out = []
    for p in model.get("panels", []):
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"], bool(t.get("instant"))))
    return out
