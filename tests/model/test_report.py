import base64
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from model.report import MAX_BARS, REPORT_HTML, REPORT_PNG, Evaluation, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def synthetic_evaluation(version: str = "20261205T101500Z-ab12cd34ef", n: int = 4_000, seed: int = 1) -> Evaluation:
    rng = np.random.default_rng(seed)
    oracle = rng.uniform(0.02, 0.9, n)
    labels = (rng.random(n) < oracle).astype(int)
    model = np.clip(oracle + rng.normal(0, 0.05, n), 0, 1)
    return Evaluation(
        version=version,
        estimator="LogisticRegression",
        labels=labels,
        probabilities=model,
        oracle_probabilities=oracle,
        contributions=[(f"feature_{i}", (i - 12) / 5 + 0.01) for i in range(MAX_BARS + 5)],
        contributions_kind="coefficient",
        metrics={"roc_auc": 0.7712, "oracle_roc_auc": 0.7791, "brier_score": 0.1843, "test_rows": float(n)},
        gates={"max_auc_gap_to_oracle": (0.0079, 0.02, True), "max_ece": (0.0312, 0.02, False)},
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path]:
    return write_report(tmp_path_factory.mktemp("report"), synthetic_evaluation())


def test_both_files_are_written_and_nothing_else(report):
    png_path, html_path = report
    assert (png_path.name, html_path.name) == (REPORT_PNG, REPORT_HTML)
    assert png_path.parent == html_path.parent
    assert sorted(p.name for p in png_path.parent.iterdir()) == sorted([REPORT_HTML, REPORT_PNG])


def test_the_png_is_a_page_sized_image_that_decodes(report):
    png_path, _ = report
    data = png_path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) < 300_000
    pixels = image.imread(png_path)
    assert pixels.shape[:2] == (850, 1100)  # 11 x 8.5 in at 100 dpi
    assert pixels.std() > 0.05  # something was drawn, not a blank page


def test_the_html_embeds_exactly_that_png(report):
    png_path, html_path = report
    page = html_path.read_text(encoding="utf-8")
    assert f'src="data:image/png;base64,{base64.b64encode(png_path.read_bytes()).decode("ascii")}"' in page


def test_the_html_needs_no_other_file(report):
    _, html_path = report
    page = html_path.read_text(encoding="utf-8")
    references = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert references
    assert all(reference.startswith("data:") for reference in references)
    assert "<script" not in page and "<link" not in page


def test_the_html_names_the_version_estimator_and_every_metric(report):
    _, html_path = report
    page = html_path.read_text(encoding="utf-8")
    assert "20261205T101500Z-ab12cd34ef" in page
    assert "LogisticRegression" in page
    for name in ("roc_auc", "oracle_roc_auc", "brier_score", "test_rows"):
        assert f'<th scope="row">{name}</th>' in page
    assert '<th scope="row">test_rows</th><td>4,000</td>' in page


def test_the_html_marks_the_failed_gate_failed_and_the_passed_one_passed(report):
    _, html_path = report
    page = html_path.read_text(encoding="utf-8")
    assert re.search(r'<tr class="failed"><th scope="row">max_ece</th><td>0\.0312</td><td>0\.0200</td><td>failed</td></tr>', page)
    assert re.search(r'<tr class="passed"><th scope="row">max_auc_gap_to_oracle</th>.*<td>passed</td></tr>', page)
    assert "1 of 2 gates failed: max_ece." in page


def test_the_contributions_table_lists_every_feature_by_absolute_value(report):
    _, html_path = report
    page = html_path.read_text(encoding="utf-8")
    listed = re.findall(r'<tr><th scope="row">(feature_\d+)</th><td>(-?[\d.]+)</td></tr>', page)
    assert len(listed) == MAX_BARS + 5
    magnitudes = [abs(float(value)) for _, value in listed]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert listed[:2] == [("feature_24", "2.4100"), ("feature_0", "-2.3900")]


def test_strings_are_escaped_in_the_html(tmp_path):
    evaluation = synthetic_evaluation(version="v1<script>alert('x')</script>", n=500)
    _, html_path = write_report(tmp_path, evaluation)
    page = html_path.read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "v1&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_writing_again_replaces_the_report_and_leaves_no_temporary_file(tmp_path):
    write_report(tmp_path, synthetic_evaluation(version="first", n=500))
    png_path, html_path = write_report(tmp_path / ".", synthetic_evaluation(version="second", n=500))
    page = html_path.read_text(encoding="utf-8")
    assert "Model second" in page and "Model first" not in page
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([REPORT_HTML, REPORT_PNG])
    assert png_path.read_bytes().startswith(PNG_SIGNATURE)


def test_a_missing_directory_is_created(tmp_path):
    png_path, _ = write_report(tmp_path / "versions" / "new", synthetic_evaluation(n=500))
    assert png_path.is_file()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"probabilities": np.full(10, 0.5)}, "same rows"),
        ({"labels": np.zeros(4_000, dtype=int)}, "both classes"),
        ({"contributions_kind": "weight"}, "contributions_kind"),
    ],
)
def test_an_evaluation_that_cannot_be_drawn_is_refused(changes, message):
    fields = {name: getattr(synthetic_evaluation(), name) for name in Evaluation.__dataclass_fields__}
    with pytest.raises(ValueError, match=message):
        Evaluation(**{**fields, **changes})
