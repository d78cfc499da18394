"""tools/live_quality.py, which ends the demo: how far the monitor's watermark must get, and the lines it prints from
snapshots of a real quality tracker fed predictions and the purchases that followed them."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

from sklearn.metrics import roc_auc_score

from config import Settings
from quality.snapshot import QualitySnapshot
from tests.quality.builders import at, prediction, purchase, tracker
from tools.live_quality import MIN_LABELLED, far_enough, quality_line, report_lines, watermark_wanted

WINDOW_S = 10
TRAINING_AUC = {"v1": 0.7311}


def labelled_snapshot(count: int, purchase_share: float, seed: int = 7) -> tuple[QualitySnapshot, list[int], list[float]]:
    """`count` predictions one second apart, each user buying within the window with the share given (more often the
    higher the probability, so the AUC is well above 0.5), and one last purchase moving the watermark past them all."""
    rng = random.Random(seed)
    t = tracker(window_s=WINDOW_S, window_size=10_000)
    labels, probabilities = [], []
    for n in range(count):
        probability = rng.random()
        bought = rng.random() < purchase_share * 2 * probability
        t.prediction(prediction(f"e{n}", n, n, probability), "serving")
        if bought:
            t.purchase(purchase(n, n + WINDOW_S / 2))
        labels.append(int(bought))
        probabilities.append(probability)
    t.purchase(purchase(10**6, count + 2 * WINDOW_S))
    return t.snapshot(at(count + 3 * WINDOW_S), training_auc=TRAINING_AUC.get), labels, probabilities


def test_the_watermark_wanted_is_the_end_of_the_streams_less_the_allowance_and_a_second():
    settings = Settings(label_late_allowance_s=2)
    ended = datetime(2026, 12, 5, 17, 0, 10, tzinfo=UTC)
    wanted = watermark_wanted(ended, settings)
    assert wanted == ended - timedelta(seconds=3)
    snapshot, _, _ = labelled_snapshot(10, 0.3)
    watermark = snapshot.watermark
    assert watermark is not None
    assert far_enough(snapshot, watermark) and not far_enough(snapshot, watermark + timedelta(microseconds=1))
    assert not far_enough(None, wanted)


def test_enough_labels_give_the_live_auc_beside_the_training_auc():
    snapshot, labels, probabilities = labelled_snapshot(400, 0.3)
    (model,) = snapshot.models
    line = quality_line(model)
    figures = re.fullmatch(r"live quality: model v1 AUC (\d\.\d{3}) over (\d+) labelled predictions \(training AUC 0\.731\),"
                           r" log loss \d\.\d{3}, positive rate (\d\.\d{3}) \(mean probability (\d\.\d{3})\)", line)
    assert figures, line
    assert float(figures[1]) == round(roc_auc_score(labels, probabilities), 3)
    assert int(figures[2]) == len(labels) == 400
    assert float(figures[3]) == round(sum(labels) / len(labels), 3)
    assert float(figures[4]) == round(sum(probabilities) / len(probabilities), 3)


def test_too_few_labels_are_said_to_be_too_few_rather_than_given_an_auc():
    snapshot, labels, _ = labelled_snapshot(MIN_LABELLED // 4, 0.3)
    line = quality_line(snapshot.models[0])
    assert f"only {len(labels)} labelled predictions ({sum(labels)} followed by a purchase), too few" in line
    assert re.findall(r"AUC \d", line) == ["AUC 0"] and line.endswith("(training AUC 0.731)"), "the training AUC only"


def test_one_class_only_says_that_no_auc_can_be_computed():
    snapshot, labels, _ = labelled_snapshot(300, 0.0)
    assert sum(labels) == 0 and snapshot.models[0].auc is None
    line = quality_line(snapshot.models[0])
    assert "no AUC over 300 labelled predictions, none followed by a purchase" in line


def test_a_version_asked_for_without_labels_gets_a_line_saying_so_after_the_labelling_line():
    snapshot, _, _ = labelled_snapshot(300, 0.3)
    assert snapshot.watermark is not None
    lines = report_lines(snapshot, Settings(label_window_s=WINDOW_S, label_late_allowance_s=0), ["v1", "v2"])
    assert lines[0].startswith(f"labelled up to event time {snapshot.watermark.isoformat(timespec='seconds')} (LABEL_WINDOW_S 10 s")
    assert f"{snapshot.pending} predictions still in their window" in lines[0]
    assert f"{snapshot.late_predictions} predictions arrived after their window had closed" in lines[0]
    assert lines[1].startswith("live quality: model v1 AUC ")
    assert lines[2] == "live quality: model v2: no prediction labelled yet (training AUC unknown)"
    assert len(report_lines(snapshot, Settings())) == 2, "without versions asked for, every model in the snapshot"


def test_a_window_reaching_back_before_the_run_is_said_to():
    """A monitor resumed from an earlier run's checkpoint keeps that run's labels in the window of a version that served both."""
    snapshot, _, _ = labelled_snapshot(300, 0.3)
    (model,) = snapshot.models
    assert model.window_start == at(0)
    assert "before this run" not in quality_line(model, run_started=at(0))
    line = quality_line(model, run_started=at(1))
    assert f"(training AUC 0.731; the window reaches back to {at(0).isoformat(timespec='seconds')}, before this run)," in line
