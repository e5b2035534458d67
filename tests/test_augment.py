"""Augmentation moves every span with its text, is seeded, and touches the training split only."""

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from training.config import AugmentConfig, DataConfig
from training.data.augment import Augmenter, Edit, apply_edits
from training.data.checks import span_problems
from training.data.corpus import load_articles
from training.data.dataset import build_dataset
from training.data.export import ConversionReport, Document
from training.text import Span, spans_to_tags, tokenize_words

ARTICLES = load_articles(Path(__file__).parent.parent / "data" / "corpus" / "articles")[:40]


@st.composite
def text_spans_edits(draw):
    text = draw(st.text(alphabet="ab .", min_size=1, max_size=40))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=8))))
    spans = [Span(a, b, "GPE") for a, b in zip(cuts[::2], cuts[1::2]) if a < b]
    edits = []
    for _ in range(draw(st.integers(0, 6))):
        a = draw(st.integers(0, len(text)))
        b = draw(st.integers(a, len(text)))
        edits.append(Edit(a, b, draw(st.text(alphabet="XYZ", max_size=4))))
    return text, spans, edits


@settings(max_examples=300, deadline=None)
@given(text_spans_edits())
def test_apply_edits_keeps_every_span_on_its_text(case):
    text, spans, edits = case
    new_text, new_spans = apply_edits(text, spans, edits)
    assert len(new_spans) == len(spans)
    for old, new in zip(spans, new_spans):
        assert 0 <= new.start <= new.end <= len(new_text) and new.label == old.label
        covering = [e for e in edits if (e.start, e.end) == (old.start, old.end)]
        inside = [e for e in edits if old.start <= e.start < e.end <= old.end]
        if not inside and not covering:
            assert new_text[new.start : new.end] == text[old.start : old.end]
    # Order and non-overlap survive.
    assert all(a.end <= b.start for a, b in zip(new_spans, new_spans[1:]))


def test_augmented_articles_stay_aligned_and_clean():
    augment = Augmenter(AugmentConfig(copies=1, mentions=0.8, honorifics=0.5, typography=1.0, case=1.0))
    changed = 0
    for article in ARTICLES:
        text, spans = augment(article.text, article.spans)
        changed += text != article.text
        assert [s.label for s in spans] == [s.label for s in article.spans]
        _, word_spans = tokenize_words(text)
        assert spans_to_tags(word_spans, spans)[1] == [], article.doc_id
        assert span_problems(text, spans, article.doc_id) == [], article.doc_id
    assert changed == len(ARTICLES)


def test_augmentation_changes_what_it_says():
    article = next(a for a in ARTICLES if '"' in a.text and any(s.label == "PERSON" for s in a.spans))
    text, spans = Augmenter(AugmentConfig(copies=1, mentions=1.0, typography=1.0, case=0.0, seed=3))(
        article.text, article.spans
    )
    people = {article.text[s.start : s.end] for s in article.spans if s.label == "PERSON"}
    people = {p for p in people if " " in p}
    renamed = {text[s.start : s.end] for s in spans if s.label == "PERSON"}
    assert people and not people & renamed  # every full name replaced
    # Typography goes one way per copy: curly quotes and em dashes, or straight ones back.
    assert ('"' not in text and "“" in text) or text.count('"') == article.text.count('"')


def test_augmentation_is_seeded():
    article = ARTICLES[0]
    one = Augmenter(AugmentConfig(copies=1, seed=5))(article.text, article.spans)
    two = Augmenter(AugmentConfig(copies=1, seed=5))(article.text, article.spans)
    other = Augmenter(AugmentConfig(copies=1, seed=6, mentions=1.0))(article.text, article.spans)
    assert one == two and other != one


def test_only_the_training_split_is_augmented():
    docs = [
        Document(id=a.doc_id, text=a.text, spans=a.spans, split=split)
        for a, split in zip(ARTICLES[:6], ["train", "train", "validation", "test", "train", "realnews"])
    ]
    options = DataConfig(augment=AugmentConfig(copies=2))
    dataset = build_dataset(docs, options, ConversionReport())
    assert len(dataset["train"]) == 9
    first = docs[0].id
    assert sorted(dataset["train"]["id"])[:3] == [first, f"{first}#aug1", f"{first}#aug2"]
    assert dataset["validation"]["id"] == [docs[2].id] and dataset["test"]["id"] == [docs[3].id]
    assert dataset["realnews"]["id"] == [docs[5].id]
    options = DataConfig(augment=AugmentConfig(copies=1, keep_original=False))
    replaced = build_dataset(docs, options, ConversionReport())
    assert sorted(replaced["train"]["id"]) == sorted(f"{d.id}#aug1" for d in docs if d.split == "train")
