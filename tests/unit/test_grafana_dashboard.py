"""infra/grafana/modelport-deployment.json queries only what the model server really exports.

The exported names come from the model server's own registry: a child Python imports
``modelport.serving.metrics``, answers a few requests through its ``Recorder`` (so that the
labelled families have samples too) and lists what prometheus_client's ``REGISTRY.collect()``
yields: each family and the names and label names of its samples (a labelled family nothing
records there yields none: its names then follow from its type, as prometheus_client exposes them).
A child process, because recording would leave series in this process's registry for the other
tests to see.

Every PromQL expression of the dashboard (panels and template variables) goes through a small
tokenizer (``promql_selectors``): identifiers followed by ``(`` are functions (and must be PromQL
functions), identifiers inside ``{}`` and in ``by``/``without``/``on``/``ignoring``/``group_*``
lists are label names, keywords are skipped, strings, numbers and ``[...]`` ranges are tokens of
their own; every other identifier is a metric name and must be an exported sample name, and every
label it is matched or grouped by must be one of its own labels or one Prometheus attaches
(``namespace``, ``pod``: see infra/grafana/README.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from modelport.domain.entities import release_name

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "modelport-deployment.json"

# Labels Prometheus attaches to every scraped series of a model-server pod, with the chart's
# ServiceMonitor and with a kubernetes-pods annotation scrape job alike (infra/grafana/README.md).
TARGET_LABELS = {"namespace", "pod"}
# The release's pods: {release}-{pod-template-hash}-{suffix}; the panels select them with this.
POD_MATCHER = 'pod=~"$deployment-[a-z0-9]+-[a-z0-9]+"'

EXPORTED = r"""
import json
from prometheus_client import REGISTRY
from modelport.serving import metrics

recorder = metrics.Recorder()
for code in (200, 404, 503):
    recorder.observe("predict", code, 0.01)
print(json.dumps([
    {"family": f.name, "type": f.type,
     "samples": {s.name: sorted(s.labels) for s in f.samples}}
    for f in REGISTRY.collect()
]))
"""

SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

# fmt: off
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio",
}
FUNCTIONS = AGGREGATIONS | {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "avg_over_time",
    "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count_over_time", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "deg", "delta", "deriv", "double_exponential_smoothing",
    "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile",
    "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time",
    "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time",
    "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort",
    "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time",
    "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
}
# fmt: on
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"bool", "offset", "and", "or", "unless", "atan2", "inf", "nan"}
MATCH_OPS = {"=", "!=", "=~", "!~"}

TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      | (?P<range>\[[^\]]*\])
      | (?P<duration>[0-9]+(?:ms|[smhdwy])(?![A-Za-z0-9_:]))
      | (?P<num>0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)
      | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^(){},=<>@])
    """,
    re.VERBOSE,
)


@dataclass
class Query:
    """What one PromQL expression reads: metric name -> the label names its selector matches on,
    and the label names it is grouped or joined by."""

    selectors: dict[str, set[str]] = field(default_factory=dict)
    grouping: set[str] = field(default_factory=set)


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append((kind, match.group()))
        pos = match.end()
    return out


def promql_selectors(expr: str) -> Query:
    toks = tokens(expr)
    query = Query()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "op" and text == "{":
            raise ValueError(f"a selector without a metric name in {expr!r}")
        if kind != "ident":
            i += 1
            continue
        word = text.lower()
        if word in LABEL_LISTS:
            i += 1
            if i < len(toks) and toks[i][1] == "(":
                i += 1
                while toks[i][1] != ")":
                    if toks[i][0] == "ident":
                        query.grouping.add(toks[i][1])
                    elif toks[i][1] != ",":
                        raise ValueError(f"unexpected {toks[i][1]!r} in a label list of {expr!r}")
                    i += 1
                i += 1
            continue
        if text in AGGREGATIONS and following.lower() in ("by", "without"):  # sum by (le) (...)
            i += 1
            continue
        if following == "(":
            if text not in FUNCTIONS:
                raise ValueError(f"{text!r} is not a PromQL function ({expr!r})")
            i += 1
            continue
        if word in KEYWORDS:
            i += 1
            continue
        # a metric name, maybe with label matchers
        labels = query.selectors.setdefault(text, set())
        i += 1
        if following == "{":
            i += 1
            while toks[i][1] != "}":
                name, op, value = toks[i], toks[i + 1], toks[i + 2]
                if name[0] != "ident" or op[1] not in MATCH_OPS or value[0] != "str":
                    raise ValueError(f"unexpected matcher {name[1]}{op[1]}{value[1]} in {expr!r}")
                labels.add(name[1])
                i += 3
                if toks[i][1] == ",":
                    i += 1
            i += 1
    return query


# --- the tokenizer itself ------------------------------------------------------------------------


def test_the_tokenizer_tells_metrics_from_functions_labels_and_keywords() -> None:
    q = promql_selectors(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{namespace="$namespace", pod=~"x-[a-z]+"}[5m])))'
        " / on(pod) group_left() max without (code) (b_total offset 1h) > bool 1e3"
    )
    assert q.selectors == {"a_bucket": {"namespace", "pod"}, "b_total": set()}
    assert q.grouping == {"le", "pod", "code"}
    assert promql_selectors('sum(rate(x{k="a,b}"}[$__rate_interval])) or vector(0)').selectors == {"x": {"k"}}
    with pytest.raises(ValueError, match="not a PromQL function"):
        promql_selectors("rates(x[5m])")
    with pytest.raises(ValueError, match="without a metric name"):
        promql_selectors('{__name__="x"}')


# --- what the server exports ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """sample name -> its label names, as the model server's registry yields them."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, "-c", EXPORTED], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    families = json.loads(out.stdout)
    samples: dict[str, set[str]] = {}
    for family in families:
        # prometheus_client's exposition names by type (created series are disabled by metrics.py)
        by_type = {family["family"] + suffix for suffix in SUFFIXES[family["type"]]}
        assert set(family["samples"]) <= by_type, family
        # a labelled family nothing has recorded yet has no samples: its names, labels unknown
        for name in by_type if not family["samples"] else family["samples"]:
            samples.setdefault(name, set()).update(family["samples"].get(name, []))
    # the server never sets the labels Prometheus attaches (nothing to clash with)
    assert not TARGET_LABELS & set().union(*samples.values())
    assert "modelport_requests_total" in samples and "modelport_request_duration_seconds_bucket" in samples
    return samples


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, PromQL, label) of every label_values(...) variable."""
    found = []
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)", var["query"])
            assert m, f"variable {var['name']}: {var['query']!r} is not label_values(selector, label)"
            found.append((var["name"], m.group(1), m.group(2)))
    return found


def test_every_metric_queried_is_one_the_model_server_exports(
    dashboard: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    queried = set()
    for where, expr in panel_queries(dashboard) + [(v, e) for v, e, _ in variable_queries(dashboard)]:
        names = set(promql_selectors(expr).selectors)
        assert names, f"{where}: {expr!r} reads no metric"
        missing = names - set(exported)
        assert not missing, f"{where}: {sorted(missing)} not exported by the model server ({expr!r})"
        queried |= names
    # the figures the dashboard is for: requests, errors, latency, batch sizes, replicas ready, load time
    for family in (
        "modelport_requests_total",
        "modelport_errors_total",
        "modelport_request_duration_seconds_bucket",
        "modelport_batch_rows_bucket",
        "modelport_batch_requests_bucket",
        "modelport_model_ready",
        "modelport_model_load_seconds",
    ):
        assert family in queried, family


def test_label_matchers_and_groupings_use_only_labels_that_exist(
    dashboard: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    for where, expr in panel_queries(dashboard):
        query = promql_selectors(expr)
        available: set[str] = set(TARGET_LABELS)
        for metric, matched in query.selectors.items():
            own = exported[metric] | TARGET_LABELS
            assert matched <= own, f"{where}: {metric} has no label {sorted(matched - own)} ({expr!r})"
            # every panel is about one deployment: its namespace and its release's pods
            assert {"namespace", "pod"} <= matched, f"{where}: {metric} not narrowed to the deployment ({expr!r})"
            available |= exported[metric]
        assert query.grouping <= available, f"{where}: grouped by {sorted(query.grouping - available)} ({expr!r})"
        assert 'namespace="$namespace"' in expr and POD_MATCHER in expr, (where, expr)
    for name, expr, label in variable_queries(dashboard):
        for metric, matched in promql_selectors(expr).selectors.items():
            assert matched | {label} <= exported[metric] | TARGET_LABELS, (name, expr)


def test_the_deployment_variable_maps_a_release_to_exactly_its_pods(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    release = release_name(7, datetime(2026, 12, 3, tzinfo=UTC))
    pod = f"{release}-7d9f8b6c5-x2x4z"  # Deployment {release} -> ReplicaSet {release}-{hash} -> pod
    # the variable's regex turns the pods' names into the release
    regex = variables["deployment"]["regex"]
    assert regex.startswith("/") and regex.endswith("/")
    assert re.fullmatch(regex[1:-1], pod) and re.fullmatch(regex[1:-1], pod).group(1) == release  # type: ignore[union-attr]
    # the panels' matcher (PromQL regexes are anchored) selects that release's pods, not a neighbour's
    matcher = re.compile(POD_MATCHER.split('"')[1].replace("$deployment", re.escape(release)))
    assert matcher.fullmatch(pod)
    for other in (f"model-71-{release[8:]}-7d9f8b6c5-x2x4z", f"{release}-canary-7d9f8b6c5-x2x4z", release):
        assert not matcher.fullmatch(other), other


def test_panels_have_unique_ids_titles_and_use_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "deployment"} <= set(variables)
    for name in ("namespace", "deployment"):
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    panels = dashboard["panels"]
    assert panels
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for p in panels:
        assert p["title"].strip(), p
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t.get("datasource", p["datasource"]) == p["datasource"], p["title"]
            assert t["expr"].strip(), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_it_is_an_importable_grafana_10_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 38  # Grafana 10.0
    assert dashboard["id"] is None  # an import gets its own id
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert dashboard["title"]
    assert {"timeseries", "stat", "bargauge"} >= {p["type"] for p in dashboard["panels"]}
    grafana = next(r for r in dashboard["__requires"] if r["id"] == "grafana")
    assert int(grafana["version"].split(".")[0]) >= 10
    for p in dashboard["panels"]:
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, p["title"]
