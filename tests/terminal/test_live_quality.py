"""The model-quality table of `consumer.py --live`: what it shows from a snapshot, and without one."""

import io
import re
from datetime import UTC, datetime, timedelta

import msgspec
from rich.console import Console

from quality.snapshot import ModelQuality, QualitySnapshot, Role, encode_snapshot
from terminal.live_view import LiveTally, render
from terminal.quality_view import FIGURES, NO_LABELS, QualityState, describe_seconds, quality_column, render_quality

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def model(version: str = "v1", role: Role = "serving", **figures) -> ModelQuality:
    values = {"training_auc": 0.80, "labelled": 12_000, "window": 5_000, "auc": 0.78, "log_loss": 0.31, "brier": 0.09,
              "ece": 0.012, "mean_probability": 0.14, "positive_rate": 0.13, **figures}
    return ModelQuality(model_version=version, role=role, **values)


def snapshot(*models: ModelQuality, at: datetime = NOW - timedelta(seconds=3), watermark: datetime | None = NOW - timedelta(seconds=42),
             pending: int = 812, late_purchases: int = 4, sampled_out: int = 0) -> QualitySnapshot:
    return QualitySnapshot(at=at, watermark=watermark, pending=pending, late_purchases=late_purchases, sampled_out=sampled_out,
                           models=models)


def shown(state: QualityState, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, record=True)
    console.print(render_quality(state, NOW))
    return console.export_text()


def figures(text: str) -> dict[str, list[str]]:
    """The table's cells by figure: each row's text after its figure's name, split on the column gaps."""
    rows = {}
    for line in text.splitlines():
        name = next((figure for figure in FIGURES if line.strip().startswith(figure + "  ")), None)
        if name is not None:
            rows[name] = re.split(r"\s{2,}", line.strip().removeprefix(name).strip())
    return rows


def state_with(snap: QualitySnapshot) -> QualityState:
    state = QualityState("prediction_quality")
    state.offer(encode_snapshot(snap))
    return state


def test_each_model_version_and_role_gets_its_figures_with_live_auc_beside_training_auc():
    text = shown(state_with(snapshot(model("v2", role="shadow", auc=0.790, training_auc=0.805),
                                     model("v1", auc=0.712, training_auc=0.801, ece=0.034, log_loss=0.402, brier=0.118,
                                           mean_probability=0.21, positive_rate=0.12, window=4_321, labelled=9_876))))
    cells = figures(text)
    assert list(cells) == list(FIGURES)
    v1, v2 = ({figure: values[column] for figure, values in cells.items()} for column in (0, 1))
    assert v1 == {"AUC live": "0.712", "AUC at training": "0.801", "log loss": "0.402", "Brier score": "0.118", "ECE": "0.034",
                  "mean probability": "0.210", "positive rate": "0.120", "labelled in window": "4321", "labelled in all": "9876"}
    assert v2["AUC live"] == "0.790" and v2["AUC at training"] == "0.805"
    header = text.splitlines()[2:4]
    assert header[0].split() == ["v1", "v2"] and header[1].split() == ["serving", "shadow"], "the serving model comes first"


def test_the_title_says_how_old_the_snapshot_is_how_far_the_watermark_trails_and_the_backlog():
    text = shown(state_with(snapshot(model(), pending=812, late_purchases=4, sampled_out=7)))
    assert "snapshot 3 s old" in text
    assert "watermark 42 s behind now" in text
    assert "812 pending, 4 late purchases, 7 sampled out" in text
    assert "stale" not in text and "invalid purchases" not in text
    with_invalid = QualitySnapshot(**{**msgspec.structs.asdict(snapshot(model())), "invalid_purchases": 5})
    assert "0 sampled out, 5 invalid purchases" in shown(state_with(with_invalid))


def test_an_old_snapshot_is_called_stale_and_a_missing_watermark_is_said():
    text = shown(state_with(snapshot(model(), at=NOW - timedelta(minutes=5), watermark=None)))
    assert "snapshot 5 min old (stale: is quality_monitor.py still running?)" in text
    assert "no watermark yet" in text


def test_no_labelled_predictions_yet_is_said_per_model_and_for_an_empty_snapshot():
    text = shown(state_with(snapshot(model("v1"), model("v2", role="shadow", window=0, labelled=0, auc=None, log_loss=None,
                                                          brier=None, ece=None, mean_probability=None, positive_rate=None))))
    cells = figures(text)
    assert cells["AUC live"] == ["0.780", NO_LABELS]
    assert cells["AUC at training"] == ["0.800", "0.800"], "the training AUC is known before any label"
    assert cells["log loss"] == ["0.310", "–"] and cells["labelled in all"] == ["12000", "0"]
    empty = shown(state_with(snapshot()))
    assert f"0 sampled out; {NO_LABELS}" in empty


def test_without_a_snapshot_the_table_says_where_it_looks_and_why_it_has_none():
    state = QualityState("prediction_quality")
    assert "no snapshot on prediction_quality yet (is quality_monitor.py running?)" in shown(state)
    state.problem = "the topic does not exist yet: is quality_monitor.py running?"
    assert "(the topic does not exist yet: is quality_monitor.py running?)" in shown(state)


def test_auc_and_calibration_past_the_alert_margins_are_marked():
    """0.06 below training and a 0.06 calibration gap are shown red; 0.04 and 0.04 are not."""
    bad = quality_column(model(auc=0.74, training_auc=0.80, mean_probability=0.19, positive_rate=0.13))
    fine = quality_column(model(auc=0.76, training_auc=0.80, mean_probability=0.17, positive_rate=0.13))
    assert bad[FIGURES.index("AUC live")] == "[red]0.740[/red]"
    assert bad[FIGURES.index("mean probability")] == "[red]0.190[/red]"
    assert "[red]" not in "".join(fine)


def test_a_hostile_model_version_is_shown_inert():
    text = shown(state_with(snapshot(model("[red]v\x1b[2J"))))
    assert "[red]v\\x1b[2J" in text


def test_the_newest_snapshot_wins_and_unreadable_ones_are_counted():
    state = QualityState("prediction_quality")
    newer = snapshot(model("new"), at=NOW)
    older = snapshot(model("old"), at=NOW - timedelta(seconds=10))
    state.offer(encode_snapshot(newer))
    state.offer(encode_snapshot(older))  # read later, but older: records of two partitions interleave
    state.offer(b"not json")
    state.offer(b'{"at": "2026-11-26T12:00:00Z", "models": []}')  # no counts: not a snapshot
    assert state.snapshot == newer
    assert state.unreadable == 2
    assert "2 unreadable snapshots" in shown(state)


def test_a_time_written_without_an_offset_is_taken_as_utc():
    raw = encode_snapshot(snapshot(model(), at=NOW - timedelta(seconds=3), watermark=NOW - timedelta(seconds=42)))
    naive = raw.replace(b"Z", b"")
    assert naive != raw
    state = QualityState("prediction_quality")
    state.offer(naive)
    text = shown(state)
    assert "snapshot 3 s old" in text and "watermark 42 s behind now" in text
    state.offer(encode_snapshot(snapshot(model("later"), at=NOW - timedelta(seconds=1))))
    assert state.snapshot is not None and state.snapshot.models[0].model_version == "later"


def test_durations_read_in_seconds_then_minutes_then_hours():
    assert [describe_seconds(s) for s in (0, 119, 120, 3_599, 7_200)] == ["0 s", "119 s", "2 min", "60 min", "2.0 h"]


def test_the_live_view_shows_the_quality_table_only_when_given_one():
    tally = LiveTally(started=0.0)
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render(tally, now=1.0))
    assert "model quality" not in console.export_text()
    console.print(render(tally, now=1.0, quality=state_with(snapshot(model())), wall_now=NOW))
    text = console.export_text()
    assert "model quality, snapshot 3 s old" in text and figures(text)["AUC live"] == ["0.780"]
