"""The scanner benchmark's corpus (``benchmarks/scan_corpus.py``) and its scoring.

Labels must match the files (a sample's span holds its value, notebooks' cell ranges hold the
cell), nothing may be fetched, and the committed sources must hold nothing a scanner flags.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import bench_scan
from benchmarks.bench_scan import Hit, score
from benchmarks.scan_corpus import NOTEBOOK_PLACES, PROVIDERS, SYNTAXES, Corpus, Sample, build
from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "benchmarks" / "scan_corpus.py", ROOT / "benchmarks" / "bench_scan.py"]


@pytest.fixture(scope="module")
def bench_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build(tmp_path_factory.mktemp("bench-corpus"), seed=25, every=3)


def _lines(corpus: Corpus, s: Sample) -> list[str]:
    return (corpus.root / s.path).read_text(encoding="utf-8").splitlines()


def test_every_span_holds_its_value(bench_corpus: Corpus) -> None:
    positives = [s for s in bench_corpus.samples if s.set != "negative"]
    assert positives
    for s in positives:
        lines = _lines(bench_corpus, s)
        first, last = s.span
        value = s.values[0].strip().splitlines()
        assert 1 <= first <= last <= len(lines), s.path
        assert value[0].strip() in lines[first - 1], s.path
        assert value[-1].strip() in lines[last - 1], s.path


def test_every_provider_and_syntax_is_sampled_with_distinct_values(bench_corpus: Corpus) -> None:
    names = {p.name for p in PROVIDERS}
    assert len(names) == len(PROVIDERS) >= 60
    assert {s.group for s in bench_corpus.of("set1")} == names
    assert {s.group for s in bench_corpus.of("set2")} == names
    assert {s.syntax for s in bench_corpus.of("set2")} == {syn for syn, *_ in SYNTAXES}
    values = [s.values[0] for s in bench_corpus.samples if s.values]
    assert len(values) == len(set(values))  # a value found in one file never scores another


def test_negatives_hold_no_positive_value(bench_corpus: Corpus) -> None:
    negatives = bench_corpus.of("negative")
    assert len(negatives) > 300
    assert all(not s.values and s.span == (0, 0) for s in negatives)
    texts = "\n".join((bench_corpus.root / s.path).read_text() for s in negatives)
    for s in bench_corpus.samples:
        for v in s.values:
            assert v.strip() not in texts, s.path


def test_notebooks_are_valid_and_their_cells_located(bench_corpus: Corpus) -> None:
    notebooks = bench_corpus.of("notebook")
    assert len(notebooks) == 50
    assert Counter(s.syntax for s in notebooks).keys() == set(NOTEBOOK_PLACES)
    for s in notebooks:
        doc = json.loads((bench_corpus.root / s.path).read_text())
        assert len(s.cell_lines) == len(doc["cells"])
        lo, hi = s.meta_lines if s.cell is None else s.cell_lines[s.cell - 1]
        assert lo <= s.span[0] <= s.span[1] <= hi, s.path
        where = doc["metadata"] if s.cell is None else doc["cells"][s.cell - 1]
        assert s.values[0] in json.dumps(where), s.path


def test_building_fetches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the corpus builder opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    corpus = build(tmp_path, notebooks=7, every=10)
    assert corpus.of("set1") and corpus.of("set2") and corpus.of("notebook")


def test_a_seed_repeats_the_values_and_another_does_not(tmp_path: Path) -> None:
    def values(seed: int, folder: str) -> list[str]:
        return [
            s.values[0] for s in build(tmp_path / folder, seed=seed, every=20).samples if s.values
        ]

    assert values(1, "a") == values(1, "b")
    assert not set(values(1, "c")) & set(values(2, "d"))


def test_scoring_counts_a_find_on_the_values_line_or_by_value() -> None:
    s = Sample("set2", "p", "f.py", "python", (3, 3), ("v" * 20,))
    neg = Sample("negative", "hash", "n.py")
    nb = Sample(
        "notebook",
        "p",
        "n.ipynb",
        "stream output",
        (12, 12),
        ("w" * 20,),
        2,
        ((3, 8), (9, 20)),
        (21, 25),
    )
    meta = Sample(
        "notebook",
        "p",
        "m.ipynb",
        "notebook metadata",
        (30, 30),
        ("m" * 20,),
        None,
        ((3, 8),),
        (28, 33),
    )
    corpus = Corpus(Path("."), 0, [s, neg, nb, meta])

    def scored(*hits: Hit) -> tuple[int, int, int]:
        sc = score(corpus, list(hits))
        return len(sc.found["set2"]), len(sc.flagged), len(sc.located)

    assert scored(Hit("f.py", 3, "r")) == (1, 0, 0)
    assert scored(Hit("f.py", 2, "r")) == (0, 0, 0)  # another line of the same file
    assert scored(Hit("g.py", 3, "r")) == (0, 0, 0)  # another file
    assert scored(Hit("f.py", 9, "r", value="v" * 20)) == (1, 0, 0)  # a peer's reported value
    assert scored(Hit("f.py", 9, "r", sha1=next(iter(s.sha1s)))) == (1, 0, 0)  # leaseline's
    assert scored(Hit("n.py", 1, "r")) == (0, 1, 0)
    assert scored(Hit("n.ipynb", 12, "r", "cell 2 output 1 (stdout)")) == (0, 0, 1)
    assert scored(Hit("n.ipynb", 12, "r", "cell 1 output 1 (stdout)")) == (0, 0, 0)
    assert scored(Hit("n.ipynb", 12, "r")) == (0, 0, 1)  # no location: the line is in cell 2
    assert scored(Hit("m.ipynb", 30, "r", "notebook metadata")) == (0, 0, 1)
    assert scored(Hit("m.ipynb", 30, "r", "cell 1 metadata")) == (0, 0, 0)


def test_the_committed_sources_hold_nothing_a_scanner_flags(tmp_path: Path) -> None:
    """The values are generated; the prefixes are written in parts: leaseline and Kingfisher
    find nothing in the two modules."""
    folder = tmp_path / "src"
    folder.mkdir()
    for src in SOURCES:
        shutil.copy(src, folder / src.name)
    proc = subprocess.run(
        [sys.executable, "-m", "leaseline.scan", "--format", "json", "--no-managed", "."],
        cwd=folder,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("LEASELINE_")},
    )
    assert proc.returncode == 0, [
        (f["path"], f["line"], f["rule"]) for f in json.loads(proc.stdout)["findings"]
    ]
    try:
        kf = bench_scan.kingfisher_binary()
    except bench_scan.Missing as exc:
        require("kingfisher (the test extra's kingfisher-bin)", str(exc))
    hits = bench_scan.run_kingfisher(folder, ["."], tmp_path / "rules")
    assert kf and not hits, [(h.path, h.line, h.rule) for h in hits]
