"""The Grafana dashboards, as code: a lab overview and a per-cell dashboard.

Built with the Grafana Foundation SDK (pinned to the Grafana 11.6 types: they import into
Grafana 10.4 and later) and queried in InfluxQL, which InfluxDB 1.x, 2.x (with a DBRP
mapping) and 3.x all answer. The queries follow DESIGN.md "InfluxDB schema".

Time series aggregate with ``GROUP BY time($__interval)`` and carry a min/max envelope, so
a year of one cell loads as a few thousand points and a one-sample spike still shows.
Per-cycle features are few (one point per cycle) and are read raw, plotted against the
cycle number.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, table, timeseries, xychart
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import xychart as xm

from shortwatch.dashboards.influxql import DATASOURCE_TYPE, InfluxQL

LAB_UID = "shortwatch-lab"
CELL_UID = "shortwatch-cell"
DEFAULT_DATASOURCE_UID = "shortwatch-influxdb"
TAGS = ["shortwatch"]

#: cell status (detector "cell_status") -> colour, as the README's table shows them
STATUS_COLOURS = {"ok": "green", "watch": "yellow", "warning": "orange", "critical": "red"}

CELL = "\"cell\" = '$cell'"  # single-valued variable: an exact tag match, no regex escaping
GROUP = "GROUP BY time($__interval) fill(none)"


def _envelope(field: str, label: str) -> str:
    """Mean with a min/max envelope per interval: the spikes a mean would hide stay visible."""
    return (
        f'SELECT mean("{field}") AS "{label}", min("{field}") AS "{label} min", max("{field}") AS "{label} max" '
        f'FROM "sample" WHERE {CELL} AND $timeFilter {GROUP}'
    )


class _Fixed(cogbuilder.Builder[Any]):
    """Hands an already built model object to an SDK builder method that takes a builder."""

    def __init__(self, obj: Any):
        self.obj = obj

    def build(self) -> Any:
        return self.obj


class _AnnotationTarget:
    """An InfluxQL annotation query. The SDK models annotation targets after Grafana's own
    annotation store (tags, limit), which cannot carry a data-source query; Grafana's
    InfluxDB plugin reads this shape (query, textColumn, tagsColumn)."""

    def __init__(self, query: str, datasource: dm.DataSourceRef, text: str, tags: list[str]):
        self.query, self.datasource, self.text, self.tags = query, datasource, text, tags

    def to_json(self) -> dict[str, object]:
        return {
            "refId": "Anno",
            "datasource": self.datasource,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": "table",
            "fromAnnotations": True,
            "textColumn": self.text,
            "tagsColumn": ",".join(self.tags),
        }


def _prop(key: str, value: Any) -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val=key, value=value)


def _envelope_overrides(panel: timeseries.Panel, label: str) -> None:
    """Draw ``label min``/``label max`` as a shaded band around ``label``, out of legend and tooltip."""
    hidden = {"legend": True, "tooltip": False, "viz": False}
    panel.override_by_name(
        f"{label} max",
        [
            _prop("custom.fillBelowTo", f"{label} min"),
            _prop("custom.lineWidth", 0),
            _prop("custom.fillOpacity", 20),
            _prop("custom.hideFrom", hidden),
        ],
    )
    panel.override_by_name(f"{label} min", [_prop("custom.lineWidth", 0), _prop("custom.hideFrom", hidden)])


def _legend() -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .show_legend(True)
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
    )


def _status_mappings() -> list[dm.ValueMapping]:
    options = {
        state: dm.ValueMappingResult(text=state, color=colour, index=i)
        for i, (state, colour) in enumerate(STATUS_COLOURS.items())
    }
    return [dm.ValueMap(options=options)]


def _gauge_series(ds: dm.DataSourceRef, title: str, fields: dict[str, str], unit: str, w: int, x: int, y: int):
    """A time series of the daemon's own health figures (measurement ``daemon``), per station."""
    cols = ", ".join(f'max("{f}") AS "{label}"' for f, label in fields.items())
    query = f'SELECT {cols} FROM "daemon" WHERE $timeFilter GROUP BY time($__interval), "station" fill(none)'
    return (
        timeseries.Panel()
        .title(title)
        .datasource(ds)
        .with_target(InfluxQL("A", query, ds, alias="$col $tag_station"))
        .unit(unit)
        .legend(_legend())
        .grid_pos(dm.GridPos(h=7, w=w, x=x, y=y))
    )


def lab_dashboard(datasource_uid: str = DEFAULT_DATASOURCE_UID) -> dm.Dashboard:
    """Every cell's status at a glance, the latest alerts, and the daemon's own health."""
    ds = dm.DataSourceRef(type_val=DATASOURCE_TYPE, uid=datasource_uid)
    # cell_status is stored on change only, so the status query looks past the time range
    status_query = 'SELECT last("state") AS "status" FROM "detector" WHERE "detector" = \'cell_status\' GROUP BY "cell"'
    link = db.DashboardLink("Open cell ${__field.labels.cell}").url(
        f"/d/{CELL_UID}/shortwatch-cell?var-cell=${{__field.labels.cell}}&${{__url_time_range}}"
    )
    statuses = (
        stat.Panel()
        .title("Cell status")
        .description("Each cell's overall status: the worst of its detectors (detector cell_status).")
        .datasource(ds)
        .with_target(InfluxQL("A", status_query, ds, alias="$tag_cell"))
        # fields: every field (a string one too); its display name is the cell (alias $tag_cell)
        .reduce_options(cb.ReduceDataOptions().values(False).calcs(["lastNotNull"]).fields("/.*/"))
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .mappings(_status_mappings())
        .data_links([link])
        .grid_pos(dm.GridPos(h=6, w=24, x=0, y=0))
    )
    alerts_query = (
        'SELECT "cell", "detector", "severity", "state", "summary" FROM "alert" '
        "WHERE $timeFilter ORDER BY time DESC LIMIT 50"
    )
    alerts = (
        table.Panel()
        .title("Latest alerts")
        .description("The 50 most recent alert transitions in the time range (cell _station: a source or the daemon).")
        .datasource(ds)
        .with_target(InfluxQL("A", alerts_query, ds, table=True))
        .override_by_name("summary", [_prop("custom.minWidth", 400)])
        .grid_pos(dm.GridPos(h=10, w=24, x=0, y=6))
    )
    samples_rate = (
        'SELECT non_negative_derivative(max("samples_accepted"), 1s) AS "samples/s", '
        'non_negative_derivative(max("rejected"), 1s) AS "rejected/s" '
        'FROM "daemon" WHERE $timeFilter GROUP BY time($__interval), "station" fill(none)'
    )
    health = [
        timeseries.Panel()
        .title("Samples in")
        .datasource(ds)
        .with_target(InfluxQL("A", samples_rate, ds, alias="$col $tag_station"))
        .unit("short")
        .legend(_legend())
        .grid_pos(dm.GridPos(h=7, w=8, x=0, y=16)),
        _gauge_series(
            ds,
            "Queue and store",
            {"queue_depth": "queue batches", "store_pending_batches": "store pending"},
            "short",
            8,
            8,
            16,
        ),
        _gauge_series(
            ds,
            "Alerts firing",
            {"alerts_firing_warning": "warning", "alerts_firing_critical": "critical"},
            "short",
            8,
            16,
            16,
        ),
        _gauge_series(ds, "InfluxDB and notifier backlog (rows)", {"backlog_rows": "rows unsent"}, "short", 12, 0, 23),
        _gauge_series(ds, "Oldest unsent row", {"backlog_age_s": "age"}, "s", 12, 12, 23),
    ]
    builder = (
        db.Dashboard("shortwatch: lab overview")
        .uid(LAB_UID)
        .tags(TAGS)
        .description("Cell status, latest alerts and the shortwatch daemon's health")
        .time("now-24h", "now")
        .refresh("1m")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_panel(statuses)
        .with_panel(alerts)
    )
    for p in health:
        builder.with_panel(p)
    return builder.build()


def cell_dashboard(datasource_uid: str = DEFAULT_DATASOURCE_UID) -> dm.Dashboard:
    """One cell: V, I and P on one time axis, per-cycle features against cycle number,
    detector statistics, and its alerts as annotations."""
    ds = dm.DataSourceRef(type_val=DATASOURCE_TYPE, uid=datasource_uid)
    cell_var = (
        db.QueryVariable("cell")
        .label("Cell")
        .datasource(ds)
        .query('SHOW TAG VALUES FROM "sample" WITH KEY = "cell"')
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )
    vip = (
        timeseries.Panel()
        .title("Voltage, current and stack pressure")
        .description("Mean per interval; the bands are the min and max, so a single-sample spike stays visible.")
        .datasource(ds)
        .with_target(InfluxQL("A", _envelope("voltage_V", "V"), ds, alias="$col"))
        .with_target(InfluxQL("B", _envelope("current_A", "I"), ds, alias="$col"))
        .with_target(InfluxQL("C", _envelope("pressure_MPa", "P"), ds, alias="$col"))
        .legend(_legend())
        .span_nulls(False)
        .grid_pos(dm.GridPos(h=10, w=24, x=0, y=0))
    )
    for label in ("V", "I", "P"):
        _envelope_overrides(vip, label)
    vip.override_by_regexp("^V( min| max)?$", [_prop("unit", "volt"), _prop("custom.axisPlacement", "left")])
    vip.override_by_regexp("^I( min| max)?$", [_prop("unit", "amp"), _prop("custom.axisPlacement", "right")])
    vip.override_by_regexp("^P( min| max)?$", [_prop("unit", "suffix: MPa"), _prop("custom.axisPlacement", "right")])

    def per_cycle(title: str, field: str, label: str, unit: str, x: int, y: int) -> xychart.Panel:
        query = f'SELECT "cycle", "{field}" AS "{label}" FROM "cycle" WHERE {CELL} AND $timeFilter'
        series = (
            xychart.XYSeriesConfig()
            .frame(xychart.XychartXYSeriesConfigFrame().matcher(xychart.MatcherConfig().id("byIndex").options(0)))
            .x(xychart.XychartXYSeriesConfigX().matcher(xychart.MatcherConfig().id("byName").options("cycle")))
            .y(xychart.XychartXYSeriesConfigY().matcher(xychart.MatcherConfig().id("byName").options(label)))
        )
        return (
            xychart.Panel()
            .title(title)
            .datasource(ds)
            .with_target(InfluxQL("A", query, ds, table=True))
            .mapping(xm.SeriesMapping.MANUAL)
            .series([series])
            .show(xm.XYShowMode.POINTS_AND_LINES)
            .unit(unit)
            .legend(_legend())
            .grid_pos(dm.GridPos(h=8, w=12, x=x, y=y))
        )

    cycles = [
        per_cycle("ASR per cycle", "asr_ohm_cm2", "ASR", "suffix: Ω cm²", 0, 10),
        per_cycle("Coulombic efficiency per cycle", "ce", "CE", "percentunit", 12, 10),
        per_cycle("d(dP)_Q per cycle", "dpq_MPa_g_per_Ah", "d(dP)_Q", "suffix: MPa g/Ah", 0, 18),
        per_cycle("CV check peak current per cycle", "cv_peak_A", "CV peak", "amp", 12, 18),
    ]
    cycle_table = (
        table.Panel()
        .title("Cycles")
        .datasource(ds)
        .with_target(
            InfluxQL(
                "A",
                'SELECT "cycle", "q_charge_Ah", "q_discharge_Ah", "ce", "asr_ohm_cm2", "dpq_MPa_g_per_Ah", '
                f'"cv_peak_A", "gap_s" FROM "cycle" WHERE {CELL} AND $timeFilter',
                ds,
                table=True,
            )
        )
        .sort_by([cb.TableSortByFieldState().display_name("cycle").desc(True)])
        .grid_pos(dm.GridPos(h=8, w=24, x=0, y=26))
    )
    asr_steps = (
        timeseries.Panel()
        .title("Half-cycle ASR")
        .description("Plateau ASR of each charge and discharge half-cycle (measurement step).")
        .datasource(ds)
        .with_target(
            InfluxQL(
                "A",
                f'SELECT mean("asr_ohm_cm2") AS "ASR" FROM "step" WHERE {CELL} AND $timeFilter '
                'GROUP BY time($__interval), "step_kind" fill(none)',
                ds,
                alias="$col $tag_step_kind",
            )
        )
        .unit("suffix: Ω cm²")
        .show_points(common.VisibilityMode.ALWAYS)
        .legend(_legend())
        .grid_pos(dm.GridPos(h=8, w=12, x=0, y=34))
    )
    detectors = (
        timeseries.Panel()
        .title("Detector statistics")
        .description("Each detector's statistic; a detector alerts when it passes its threshold.")
        .datasource(ds)
        .with_target(
            InfluxQL(
                "A",
                f'SELECT max("statistic") AS "statistic" FROM "detector" WHERE {CELL} '
                "AND \"detector\" != 'cell_status' AND $timeFilter "
                'GROUP BY time($__interval), "detector" fill(none)',
                ds,
                alias="$tag_detector",
            )
        )
        .legend(_legend())
        .grid_pos(dm.GridPos(h=8, w=12, x=12, y=34))
    )
    cell_alerts = (
        table.Panel()
        .title("Alerts of this cell")
        .datasource(ds)
        .with_target(
            InfluxQL(
                "A",
                f'SELECT "detector", "severity", "state", "summary" FROM "alert" WHERE {CELL} AND $timeFilter '
                "ORDER BY time DESC",
                ds,
                table=True,
            )
        )
        .override_by_name("summary", [_prop("custom.minWidth", 400)])
        .grid_pos(dm.GridPos(h=8, w=24, x=0, y=42))
    )
    anno = (
        db.AnnotationQuery()
        .name("shortwatch alerts")
        .datasource(ds)
        .enable(True)
        .icon_color("red")
        .target(
            _Fixed(
                _AnnotationTarget(
                    f'SELECT "summary" AS "text", "detector", "severity", "state" FROM "alert" '
                    f"WHERE {CELL} AND $timeFilter",
                    ds,
                    "text",
                    ["detector", "severity", "state"],
                )
            )
        )
    )
    builder = (
        db.Dashboard("shortwatch: cell")
        .uid(CELL_UID)
        .tags(TAGS)
        .description("One cell: signals, per-cycle features, detector statistics and alerts")
        .time("now-7d", "now")
        .refresh("1m")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(cell_var)
        .annotation(anno)
        .link(db.DashboardLink("Lab overview").type(dm.DashboardLinkType.DASHBOARDS).tags(TAGS).keep_time(True))
        .with_panel(vip)
    )
    for p in (*cycles, cycle_table, asr_steps, detectors, cell_alerts):
        builder.with_panel(p)
    return builder.build()


def dashboards(datasource_uid: str = DEFAULT_DATASOURCE_UID) -> dict[str, dict[str, Any]]:
    """Every dashboard as Grafana JSON, keyed by file stem."""
    out = {}
    for name, build in (("shortwatch-lab", lab_dashboard), ("shortwatch-cell", cell_dashboard)):
        out[name] = to_json(build(datasource_uid))
    return out


def to_json(dash: dm.Dashboard) -> dict[str, Any]:
    """The dashboard model as plain JSON data (what Grafana imports), panel ids numbered."""
    import json

    data = json.loads(json.dumps(dash, cls=JSONEncoder))
    for i, panel in enumerate(data.get("panels", []), start=1):
        panel["id"] = i
    return data
