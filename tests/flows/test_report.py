"""`talktime report`: a self-contained HTML page over a whole output (no Prefect needed to build one)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from flows.emulator.synthetic import synthetic_responses
from flows.storage.reader import read_table
from tests.conftest import SAMPLES
from tests.crash_driver import ingest_without_prefect

SECTIONS = (
    "talk-share",
    "ratio",
    "wpm",
    "silence-overlap",
    "opening",
    "response-gap",
    "outcomes",
    "rejected",
    "timeline",
)
EXTERNAL = re.compile(
    r"""(?:src|href|xlink:href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I
)


class Sections(HTMLParser):
    """How many <svg> elements and drawn marks (bars, rules, items with a size) each section of the page holds."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: dict[str, int] = {}
        self.marks: dict[str, int] = {}
        self.current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "section":
            self.current = attributes.get("id")
            self.svgs[self.current or ""] = 0
            self.marks[self.current or ""] = 0
        elif self.current and tag == "svg":
            self.svgs[self.current] += 1
        elif self.current and attributes.get("role") == "graphics-symbol" and _drawn(attributes.get("d") or ""):
            self.marks[self.current] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.current = None


def _drawn(path: str) -> bool:
    """A mark's SVG path that has an area or a length (not a zero-height bar: `h28v0h-28Z`)."""
    return bool(path) and not re.search(r"[hv]-?0(?![.\d])", path)


def sections(page: str) -> Sections:
    parser = Sections()
    parser.feed(page)
    return parser


def external_references(page: str) -> list[str]:
    return EXTERNAL.findall(page)


def section_html(page: str, key: str) -> str:
    match = re.search(rf'<section class="chart" id="{key}">(.*?)</section>', page, re.S)
    assert match, key
    return match.group(1)


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("report") / "out")
    ingest_without_prefect(out, 25, [str(SAMPLES / "responses")])
    return out


@pytest.fixture(scope="module")
def sample_page(sample_out: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    html = tmp_path_factory.mktemp("page") / "report.html"
    assert main(["report", "--out", sample_out, "--html", str(html)]) == 0
    return html.read_text(encoding="utf-8")


def test_every_chart_section_has_an_svg_with_marks(sample_page: str) -> None:
    found = sections(sample_page)
    for key in SECTIONS:
        assert found.svgs.get(key, 0) >= 1, key
        assert found.marks[key] >= 1, key
    assert "<script" not in sample_page.lower()


def test_header_counts(sample_out: str, sample_page: str) -> None:
    transcriptions = read_table(sample_out, "transcriptions")
    header = sample_page[: sample_page.index("</header>")]
    assert sample_out in header
    assert f"{transcriptions.height:,} (" in header
    for status, n in transcriptions.group_by("status").len().iter_rows():
        assert f"{status} {n:,}" in header
    assert f"{read_table(sample_out, 'rejected_items').height:,}" in header
    assert "schema version" in header


def test_no_external_resource(sample_page: str) -> None:
    assert external_references(sample_page) == []
    # the check itself finds what it must
    for bad in (
        '<img src="https://cdn.example/x.png">',
        "<link href='http://x/y.css'>",
        '<a href="//x">',
        "url(https://f)",
    ):
        assert external_references(sample_page.replace("</body>", bad + "</body>")), bad


def test_no_transcript_text(sample_out: str, sample_page: str) -> None:
    texts = read_table(sample_out, "transcript_items")["text"].drop_nulls()
    long = texts.filter(texts.str.len_chars() >= 25).unique().sort().to_list()
    assert len(long) >= 10
    for text in long[:: max(1, len(long) // 40)]:
        assert text not in sample_page
    raw = read_table(sample_out, "rejected_items")["raw_item"].drop_nulls().to_list()
    for item in raw:
        value = json.loads(item)
        if isinstance(value, dict) and isinstance(value.get("text"), str) and len(value["text"]) > 8:
            assert value["text"] not in sample_page


def test_default_timelines_are_the_10th_50th_90th_percentile_of_doctor_share(sample_out: str, sample_page: str) -> None:
    doctor = (
        read_table(sample_out, "speaker_metrics")
        .filter((pl.col("speaker") == "doctor") & pl.col("talk_share").is_not_null())
        .sort("talk_share", "transcription_id")
    )
    expected = [doctor["transcription_id"][round(q * (doctor.height - 1))] for q in (0.1, 0.5, 0.9)]
    timeline = section_html(sample_page, "timeline")
    assert timeline.count("<svg") == len(set(expected)) == 3
    positions = [timeline.index(tid) for tid in expected]
    assert positions == sorted(positions)


def test_timeline_of_chosen_ids(sample_out: str, tmp_path: Path) -> None:
    ids = read_table(sample_out, "transcriptions").filter(pl.col("status") == "succeeded")["transcription_id"]
    chosen, other = ids[5], ids[7]
    html = tmp_path / "r.html"
    assert main(["report", "--out", sample_out, "--html", str(html), "--timeline", chosen.upper()]) == 0
    timeline = section_html(html.read_text(encoding="utf-8"), "timeline")
    assert timeline.count("<svg") == 1
    assert chosen in timeline and other not in timeline
    assert main(["report", "--out", sample_out, "--html", str(html), "--timeline", chosen, "--timeline", other]) == 0
    assert section_html(html.read_text(encoding="utf-8"), "timeline").count("<svg") == 2


def test_exit_2_with_one_line(sample_out: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html = tmp_path / "r.html"
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    cases = [
        ["--out", str(tmp_path / "missing")],
        ["--out", str(tmp_path / "empty")],
        ["--out", str(tmp_path / "file")],
        ["--out", sample_out, "--timeline", "00000000-0000-4000-8000-000000000000"],
    ]
    cases_html = [["--out", sample_out, "--html", str(tmp_path)]]  # a directory
    for case in [["--html", str(html), *case] for case in cases] + cases_html:
        capsys.readouterr()
        assert main(["report", *case]) == 2, case
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("talktime: error: "), err
    assert not html.exists()


def test_an_output_without_succeeded_transcriptions(tmp_path: Path) -> None:
    lines = (SAMPLES / "responses" / "demo_extra.ndjson").read_text(encoding="utf-8").splitlines()
    failed = [line for line in lines if json.loads(line).get("status") == "failed"]
    assert failed
    (tmp_path / "in.ndjson").write_text("\n".join(failed) + "\n", encoding="utf-8")
    out = str(tmp_path / "out")
    ingest_without_prefect(out, 10, [str(tmp_path / "in.ndjson")])
    html = tmp_path / "r.html"
    assert main(["report", "--out", out, "--html", str(html)]) == 0
    page = html.read_text(encoding="utf-8")
    assert 'id="no-succeeded"' in page
    assert sections(page).svgs["outcomes"] == 1
    assert external_references(page) == []


def test_a_few_thousand_transcriptions_make_a_small_page(tmp_path: Path) -> None:
    responses = synthetic_responses(3000, seed=5)
    source = tmp_path / "synthetic.ndjson"
    source.write_text("".join(json.dumps(body) + "\n" for body in responses.values()), encoding="utf-8")
    out = str(tmp_path / "out")
    ingest_without_prefect(out, 500, [str(source)])
    html = tmp_path / "r.html"
    assert main(["report", "--out", out, "--html", str(html)]) == 0
    page = html.read_text(encoding="utf-8")
    assert html.stat().st_size < 2 * 1024 * 1024
    found = sections(page)
    assert all(found.svgs.get(key, 0) >= 1 for key in SECTIONS if key != "rejected")
    assert "3,000" in page
