"""Small builders for Grafana dashboard JSON (schema 39): panels, targets, variables, layout.

Every panel and target reads from the ``$datasource`` variable; nothing names a datasource uid.
Panels are laid out in rows of fixed height, left to right, 24 grid units wide.

>>> p = timeseries("Packets/s", "Packets per second.", "pps", [target("rate(x[$__rate_interval])")])
>>> p["datasource"]["uid"], p["fieldConfig"]["defaults"]["unit"]
('${datasource}', 'pps')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
Panel = dict[str, Any]


# -- targets and field settings -------------------------------------------------------------------


def target(expr: str, legend: str = "__auto", *, table: bool = False, instant: bool = False) -> dict[str, Any]:
    """One query: a range query for graphs, an instant one (``instant=True``), or an instant one shaped as a table."""
    instant = instant or table
    t: dict[str, Any] = {"datasource": DATASOURCE, "editorMode": "code", "expr": expr, "legendFormat": legend, "range": not instant, "instant": instant}
    if table:
        t["format"] = "table"
    return t


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    """Absolute thresholds: ``("green", None), ("red", 0.9)`` colours values from 0.9 up red."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


OK = thresholds(("green", None))


def high_is_bad(amber: float, red: float) -> dict[str, Any]:
    return thresholds(("green", None), ("orange", amber), ("red", red))


def low_is_bad(red: float, amber: float) -> dict[str, Any]:
    return thresholds(("red", None), ("orange", red), ("green", amber))


def up_down(up: str = "UP", down: str = "DOWN") -> list[dict[str, Any]]:
    """Value mappings for a 0/1 state."""
    return [{"type": "value", "options": {"0": {"text": down, "color": "red", "index": 0}, "1": {"text": up, "color": "green", "index": 1}}}]


def override(column: str, **props: Any) -> dict[str, Any]:
    """Field settings for one column or series, by name (``custom_cellOptions`` for ``custom.cellOptions``)."""
    return {"matcher": {"id": "byName", "options": column}, "properties": [{"id": k.replace("_", "."), "value": v} for k, v in props.items()]}


def _refs(targets: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]


def _panel(kind: str, title: str, description: str, unit: str, targets: Sequence[dict[str, Any]], defaults: dict[str, Any], options: dict[str, Any]) -> Panel:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": _refs(targets),
        "fieldConfig": {"defaults": {"unit": unit, **defaults}, "overrides": []},
        "options": options,
    }


# -- panels -------------------------------------------------------------------------------------


def timeseries(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[dict[str, Any]],
    *,
    low: float | None = None,
    high: float | None = None,
    limit: float | None = None,
    stack: bool = False,
) -> Panel:
    """A graph; ``limit`` draws a dashed red line at that value (an alert threshold, a capacity)."""
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "fillOpacity": 10,
        "gradientMode": "none",
        "showPoints": "never",
        "spanNulls": False,
        "axisPlacement": "auto",
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if limit is not None else "off"},
    }
    defaults: dict[str, Any] = {"custom": custom, "color": {"mode": "palette-classic"}}
    if low is not None:
        defaults["min"] = low
    if high is not None:
        defaults["max"] = high
    defaults["thresholds"] = thresholds(("transparent", None), ("red", limit)) if limit is not None else OK
    options = {
        "legend": {"showLegend": True, "displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel("timeseries", title, description, unit, targets, defaults, options)


def stat(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[dict[str, Any]],
    *,
    steps: dict[str, Any] = OK,
    mappings: list[dict[str, Any]] | None = None,
    text: str = "auto",
    graph: bool = False,
) -> Panel:
    defaults = {"thresholds": steps, "mappings": mappings or [], "color": {"mode": "thresholds"}}
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "area" if graph else "none",
        "textMode": text,
        "justifyMode": "auto",
        "orientation": "auto",
    }
    return _panel("stat", title, description, unit, targets, defaults, options)


def gauge(title: str, description: str, unit: str, targets: Sequence[dict[str, Any]], *, steps: dict[str, Any], low: float = 0, high: float = 1) -> Panel:
    defaults = {"thresholds": steps, "min": low, "max": high, "color": {"mode": "thresholds"}}
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "showThresholdMarkers": True, "showThresholdLabels": False}
    return _panel("gauge", title, description, unit, targets, defaults, options)


def table(
    title: str,
    description: str,
    unit: str,
    columns: Sequence[tuple[str, dict[str, Any]]],
    *,
    sort_by: tuple[str, bool],
    overrides: Iterable[dict[str, Any]] = (),
    hide: Iterable[str] = (),
) -> Panel:
    """One row per label set: each ``(name, target)`` in ``columns`` becomes a value column of that name.

    The instant queries are merged on their labels; ``hide`` drops label columns; ``sort_by``
    is ``(column, descending)``, the order the table opens in (worst first).
    """
    targets = [t for _, t in columns]
    rename = {f"Value #{chr(ord('A') + i)}": name for i, (name, _) in enumerate(columns)}
    p = _panel(
        "table",
        title,
        description,
        unit,
        targets,
        {"thresholds": OK, "custom": {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False}},
        {
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "fields": ""},
            "sortBy": [{"displayName": sort_by[0], "desc": sort_by[1]}],
        },
    )
    p["transformations"] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {"Time": True, **{h: True for h in hide}}, "renameByName": rename, "indexByName": {}}},
    ]
    p["fieldConfig"]["overrides"] = list(overrides)
    return p


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


# -- variables ----------------------------------------------------------------------------------


def datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
    }


def query_variable(name: str, label: str, query: str, *, multi: bool, all_value: str = ".+") -> dict[str, Any]:
    """A label-values variable; with ``multi`` it offers All, which matches every value (``.+``), even of series gone since.

    A label a target may lack (``site``, ``role``) takes ``all_value=".*"``: All then matches its absence too.
    """
    v: dict[str, Any] = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "current": {},
        "hide": 0,
        "options": [],
        "includeAll": multi,
        "multi": multi,
        "skipUrlSync": False,
    }
    if multi:
        v["allValue"] = all_value
    return v


def annotation(name: str, expr: str, *, title: str, text: str, color: str, step: str = "1m") -> dict[str, Any]:
    """An annotation drawn where the Prometheus query ``expr`` has a value (one point per ``step`` at most)."""
    return {
        "name": name,
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": color,
        "expr": expr,
        "step": step,
        "titleFormat": title,
        "textFormat": text,
        "tagKeys": "job,instance",
        "useValueForTime": False,
    }


# -- layout and dashboard -----------------------------------------------------------------------


def layout(sections: Sequence[tuple[str | None, int, Sequence[tuple[Panel, int]]]]) -> list[Panel]:
    """``(row title or None, height, [(panel, width), ...])`` sections, stacked top to bottom; ids in order."""
    panels: list[Panel] = []
    y = 0
    for title, height, items in sections:
        if title is not None:
            panels.append({**row(title), "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}})
            y += 1
        x = 0
        for panel, width in items:
            if x + width > GRID_WIDTH:
                x, y = 0, y + height
            panels.append({**panel, "gridPos": {"h": height, "w": width, "x": x, "y": y}})
            x += width
        y += height
    return [{"id": i + 1, **p} for i, p in enumerate(panels)]


def dashboard(
    uid: str,
    title: str,
    description: str,
    tag: str,
    variables: list[dict[str, Any]],
    panels: list[Panel],
    *,
    refresh: str = "30s",
    annotations: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [tag],
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": refresh,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "weekStart": "",
        "links": [
            {
                "title": "pktagent",
                "type": "dashboards",
                "tags": [tag],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": {"list": list(annotations)},
        "templating": {"list": variables},
        "panels": panels,
    }
