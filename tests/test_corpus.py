"""The bundled corpus: sources and export agree, it validates clean, and it meets its targets."""

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from training.config import DataConfig
from training.data.checks import validate_documents
from training.data.corpus import (
    REGISTERS,
    build_export,
    check_articles,
    load_articles,
    parse_article,
    parse_markup,
    render_article,
    render_sources,
)
from training.data.export import convert_tasks
from training.errors import DataError
from training.schema import LABEL_NAMES
from training.text import Span

ROOT = Path(__file__).parent.parent
ARTICLES = ROOT / "data" / "corpus" / "articles"
EXPORT = ROOT / "data" / "corpus.json"
SHARED_SEED = ROOT.parent / "shared" / "seeds" / "000_bbc883e8098a2335.txt"


@pytest.fixture(scope="module")
def articles():
    return load_articles(ARTICLES)


@pytest.fixture(scope="module")
def documents():
    docs, report = convert_tasks(json.loads(EXPORT.read_text(encoding="utf-8")), DataConfig(source=EXPORT))
    assert not report.excluded and not report.adjustments
    return docs


def test_markup_parsing_and_errors():
    text, spans = parse_markup("[Seoul](GPE) met [KAI](COMPANY) ([Korea](GPE)).")
    assert text == "Seoul met KAI (Korea)."
    assert spans == [Span(0, 5, "GPE"), Span(10, 13, "COMPANY"), Span(15, 20, "GPE")]
    with pytest.raises(DataError, match="unknown label 'CITY'"):
        parse_markup("[Seoul](CITY)")
    with pytest.raises(DataError, match="stray"):
        parse_markup("a [bracket] here")


def test_every_article_round_trips_through_its_markup(articles):
    for article in articles:
        again = parse_article(ARTICLES / f"{article.doc_id}.md")
        assert render_article(again) == render_article(article)
        assert (ARTICLES / f"{article.doc_id}.md").read_text(encoding="utf-8") == render_article(article)


def test_export_is_generated_from_the_article_files(articles):
    assert json.loads(EXPORT.read_text(encoding="utf-8")) == build_export(articles)


def test_corpus_validates_with_zero_unexplained_inconsistencies(documents):
    explained = yaml.safe_load((ROOT / "data" / "corpus" / "consistency.yaml").read_text())
    summary = validate_documents(documents, explained)
    assert summary.problems == []
    assert summary.inconsistencies == []


def test_corpus_size_and_label_targets(articles, documents):
    assert len(documents) >= 370
    counts = Counter(span.label for doc in documents for span in doc.spans)
    assert sum(counts.values()) >= 6000
    assert set(counts) == set(LABEL_NAMES)
    assert min(counts.values()) >= 150, counts
    test_counts = Counter(s.label for d in documents if d.split == "test" for s in d.spans)
    assert min(test_counts[label] for label in LABEL_NAMES) >= 30, test_counts
    assert check_articles(articles) == []  # spans clean, lengths within each register's bounds


def test_splits_are_about_70_15_15_and_cover_every_region(articles):
    house_style = [a for a in articles if "register" not in a.meta]
    splits = Counter(a.meta["split"] for a in house_style)
    total = sum(splits.values())
    assert abs(splits["train"] / total - 0.70) < 0.05
    assert abs(splits["validation"] / total - 0.15) < 0.04
    assert abs(splits["test"] / total - 0.15) < 0.04
    regions = {a.meta["region"] for a in house_style}
    for split in ("train", "validation", "test"):
        assert {a.meta["region"] for a in house_style if a.meta["split"] == split} == regions
    # Articles from real reports: a fifth of the training ones select the model (validation);
    # the test split stays the house-style one, and realnews is the real-world test.
    real = Counter(a.meta["split"] for a in articles if "register" in a.meta)
    assert real["test"] == 0 and real["realnews"] >= 40
    assert 0.15 < real["validation"] / (real["train"] + real["validation"]) < 0.25


def test_articles_from_real_reports_mix_registers_and_record_their_sources(articles):
    real = [a for a in articles if "register" in a.meta]
    assert len(real) >= 200
    registers = Counter(a.meta["register"] for a in real)
    assert set(registers) == set(REGISTERS) and min(registers.values()) >= 8, registers
    assert sum(len(a.text) < 600 for a in real) >= 20 and sum(len(a.text) > 6000 for a in real) >= 10
    urls = Counter(a.meta["source_url"] for a in real)
    # One report per article; the one report two writers both chose feeds two training articles.
    assert [url for url, n in urls.items() if n > 1] == [
        a.meta["source_url"] for a in real if a.doc_id == "rw-na-016"
    ]
    assert (ARTICLES.parent / "SOURCES.md").read_text(encoding="utf-8") == render_sources(articles)
    # Real-news typography is there: curly quotes, em dashes, dotted abbreviations.
    text = "".join(a.text for a in real)
    assert all(mark in text for mark in ("“", "’", "—", "U.S.", "Jr.", "Mr"))


def test_realnews_uses_sources_and_regions_no_training_article_uses(articles):
    held_out = [a for a in articles if a.meta.get("split") == "realnews"]
    used = [a for a in articles if a.meta.get("split") != "realnews"]
    assert len(held_out) >= 40
    assert not {a.meta["source_url"] for a in held_out} & {a.meta.get("source_url") for a in used}
    trained_regions = {a.meta["region"] for a in used if "register" in a.meta}
    assert not {a.meta["region"] for a in held_out} & trained_regions


def test_at_least_40_countries_from_every_continent(documents):
    gpe = {doc.text[s.start : s.end] for doc in documents for s in doc.spans if s.label == "GPE"}
    continents = {
        "Asia": ["Malaysia", "Indonesia", "Philippines", "Vietnam", "Japan", "India", "Pakistan", "Mongolia"],
        "Europe": ["Poland", "France", "Germany", "Sweden", "Norway", "Greece", "Romania", "Italy"],
        "Africa": ["Nigeria", "Kenya", "South Africa", "Ethiopia", "Ghana", "Senegal", "Angola", "Egypt"],
        "Americas": ["Brazil", "Canada", "Mexico", "Argentina", "Chile", "Colombia", "Peru", "Uruguay"],
        "Middle East": ["Saudi Arabia", "Qatar", "Oman", "Jordan", "Israel", "Iraq", "Kuwait", "Bahrain"],
        "Oceania": ["Australia", "New Zealand", "Papua New Guinea"],
    }
    for continent, countries in continents.items():
        missing = [c for c in countries if c not in gpe]
        assert not missing, f"{continent}: {missing}"
    assert sum(len(c) for c in continents.values()) >= 40


def test_topics_are_varied(articles):
    assert len({a.meta["topic"] for a in articles}) >= 18


def test_seed_annotation_keeps_the_text_byte_exact():
    seed = parse_article(ROOT / "seeds" / "000_bbc883e8098a2335.md")
    original = (ROOT / "seeds" / "000_bbc883e8098a2335.txt").read_bytes()
    assert seed.text.encode("utf-8") == original
    if SHARED_SEED.is_file():
        assert SHARED_SEED.read_bytes() == original
    export = json.loads((ROOT / "seeds" / "000_bbc883e8098a2335.json").read_text(encoding="utf-8"))
    assert export == build_export([seed])
    (doc,), _ = convert_tasks(export, DataConfig())
    assert validate_documents([doc]).problems == []
    assert {"Yeo Seung-Bae", "Korea Aerospace Industries", "KASI"} <= {
        doc.text[s.start : s.end] for s in doc.spans
    }
