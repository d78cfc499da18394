"""Alert rules judged on recorded series: what Prometheus would have stored from a running program's /metrics,
replayed through the real `promtool test rules` against monitoring/prometheus/alerts.yml.

Each scrape becomes one sample a minute apart (promtool's clock), and the last scrape's values are then held for
as long as a rule's `for` needs: the rule sees the figures the program really exported, not values a test made up.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.samples import Sample

LabelSet = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, LabelSet]  # (metric name, sorted labels)

# The template parts alerts.yml's quality annotations use; anything else is refused rather than guessed at.
LABEL_TEMPLATE = re.compile(r"\{\{ \$labels\.(\w+) \}\}")
VALUE_TEMPLATE = re.compile(r"\{\{ \$value \| printf \"(%\.\d+f)\" \}\}")


@dataclass
class SeriesRecorder:
    """The samples of some metrics, one scrape at a time, labelled as Prometheus stores them (job and instance added)."""

    names: frozenset[str]
    job: str
    instance: str
    scrapes: list[dict[SeriesKey, float]] = field(default_factory=list)

    def record(self, samples: Iterable[Sample]) -> None:
        scrape = {}
        for sample in samples:
            if sample.name in self.names:
                labels = {**sample.labels, "job": self.job, "instance": self.instance}
                scrape[(sample.name, tuple(sorted(labels.items())))] = float(sample.value)
        self.scrapes.append(scrape)

    def latest(self, name: str, **labels: str) -> float | None:
        """The last recorded value of the series `name` whose labels include `labels`; None if never recorded."""
        for scrape in reversed(self.scrapes):
            for (sample_name, label_set), value in scrape.items():
                if sample_name == name and labels.items() <= dict(label_set).items():
                    return value
        return None

    def input_series(self, hold_minutes: int, **labels: str) -> list[dict[str, str]]:
        """promtool's input_series for the series whose labels include `labels`: a sample per scrape ('_' where a scrape
        lacked the series), then the last scrape's value held for `hold_minutes` more samples (a series absent from
        the last scrape stays absent)."""
        keys = sorted({key for scrape in self.scrapes for key in scrape if labels.items() <= dict(key[1]).items()})
        last = self.scrapes[-1] if self.scrapes else {}
        series = []
        for key in keys:
            values = [promtool_number(scrape[key]) if key in scrape else "_" for scrape in self.scrapes]
            values += [promtool_number(last[key]) if key in last else "_"] * hold_minutes
            series.append({"series": selector(*key), "values": " ".join(values)})
        return series

    @property
    def minutes(self) -> int:
        return len(self.scrapes)


def selector(name: str, labels: LabelSet) -> str:
    """The series in PromQL notation."""
    pairs = ",".join(f'{label}="{quoted(value)}"' for label, value in labels)
    return f"{name}{{{pairs}}}"


def quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def promtool_number(value: float) -> str:
    """A float as promtool's series notation reads it back exactly (repr round-trips; NaN and infinities by name)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def alerting_rule(rules: Path, alertname: str) -> dict[str, Any]:
    groups = yaml.safe_load(rules.read_text(encoding="utf-8"))["groups"]
    found = [rule for group in groups for rule in group["rules"] if rule.get("alert") == alertname]
    assert len(found) == 1, f"{rules} holds {len(found)} alerting rules named {alertname}"
    return found[0]


def rendered(template: str, labels: Mapping[str, str], value: float) -> str:
    """An annotation as Prometheus renders it, for the template parts alerts.yml's quality rules use."""
    text = LABEL_TEMPLATE.sub(lambda match: labels[match[1]], template)
    text = VALUE_TEMPLATE.sub(lambda match: match[1] % value, text)
    assert "{{" not in text, f"the test renders only $labels.NAME and $value | printf; left over in: {text}"
    return text


def expected_alert(rule: Mapping[str, Any], labels: Mapping[str, str], value: float) -> dict[str, dict[str, str]]:
    """promtool's exp_alerts entry for `rule` firing on a series with `labels` and value `value`."""
    return {
        "exp_labels": {**rule.get("labels", {}), **labels},
        "exp_annotations": {name: rendered(template, labels, value) for name, template in rule.get("annotations", {}).items()},
    }


def run_rule_test(
    promtool: str, rules: Path, test_file: Path, name: str, input_series: list[dict[str, str]],
    alert_checks: list[dict[str, Any]], timeout_s: float,
) -> subprocess.CompletedProcess[str]:
    """Write `test_file`, a promtool unit test of `rules` on `input_series` (one sample a minute), and run it."""
    document = {
        "rule_files": [str(rules.resolve())],
        "evaluation_interval": "1m",
        "tests": [{"name": name, "interval": "1m", "input_series": input_series, "alert_rule_test": alert_checks}],
    }
    test_file.write_text(yaml.safe_dump(document, sort_keys=False, width=1_000), encoding="utf-8")
    return subprocess.run([promtool, "test", "rules", test_file.name], cwd=test_file.parent, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
