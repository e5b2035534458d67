"""Words, spans <-> BIO tags, abbreviations and constrained (Viterbi) decoding."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from training.schema import BIO_TAGS
from training.text import (
    BioConstraints,
    Span,
    decode,
    is_symbol_word,
    line_starts,
    python_index,
    spans_to_tags,
    tags_to_spans,
    tags_to_word_ranges,
    tokenize_words,
    viterbi,
    widen_to_abbreviations,
)


def test_word_tokenizer_splits_punctuation_hyphens_and_possessives():
    words, spans = tokenize_words("South Korea’s F-16s cost US$1.2 billion, Seung-Bae's.")
    assert words == [
        "South",
        "Korea",
        "’s",
        "F",
        "-",
        "16s",
        "cost",
        "US",
        "$",
        "1.2",
        "billion",
        ",",
        "Seung",
        "-",
        "Bae",
        "'s",
        ".",
    ]
    text = "South Korea’s F-16s cost US$1.2 billion, Seung-Bae's."
    assert all(text[s:e] == w for w, (s, e) in zip(words, spans))


def test_spans_to_tags_and_back():
    text = "Yeo Seung-Bae met KAI in Seoul."
    words, word_spans = tokenize_words(text)
    spans = [Span(0, 13, "PERSON"), Span(18, 21, "COMPANY"), Span(25, 30, "GPE")]
    tags, misaligned = spans_to_tags(word_spans, spans)
    assert tags == ["B-PERSON", "I-PERSON", "I-PERSON", "I-PERSON", "O", "B-COMPANY", "O", "B-GPE", "O"]
    assert misaligned == []
    assert tags_to_spans(word_spans, tags) == spans


def test_boundary_inside_a_word_is_reported_not_widened():
    _, word_spans = tokenize_words("The F-16s flew.")
    tags, misaligned = spans_to_tags(word_spans, [Span(4, 8, "EQUIPMENT")])  # "F-16" inside "16s"
    assert misaligned == [Span(4, 8, "EQUIPMENT")]
    assert set(tags) == {"O"}


def test_lenient_decoding_of_invalid_i_tags():
    spans = tags_to_spans([(0, 1), (2, 3), (4, 5)], ["I-GPE", "I-GPE", "B-ROLE"])
    assert spans == [Span(0, 3, "GPE"), Span(4, 5, "ROLE")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["O", "B-GPE", "I-GPE", "B-ORG", "I-ORG"]), max_size=12))
def test_entities_of_a_tag_sequence_are_seqeval_get_entities(tags):
    from seqeval.metrics.sequence_labeling import get_entities

    assert [(label, first, last) for first, last, label in tags_to_word_ranges(tags)] == get_entities(tags)


def test_offsets_convert_between_python_and_utf16():
    text = "Talks \U0001f600 in Seoul."
    start = text.index("Seoul")
    assert python_index(text, start + 1) == start  # the emoji is two UTF-16 code units
    assert python_index(text, 7) is None  # inside the surrogate pair


def test_abbreviations_and_dotted_initialisms_stay_whole():
    text = (
        "WASHINGTON (Reuters) — U.S. Defense Secretary Lloyd Austin Jr. met Mr. Lee and Dr Kim of "
        "Hanwha Ocean Co. and Lockheed Martin Corp. on Feb. 3 at No. 10 for U.S.-Korea talks; "
        "Gen. Park's U.N. plan. No. It ended in the U.K."
    )
    words, spans = tokenize_words(text)
    for whole in ("U.S.", "Jr.", "Mr.", "Co.", "Corp.", "Feb.", "No.", "Gen.", "U.N.", "U.K."):
        assert whole in words, whole
    assert "Dr" in words  # no stop: the word alone
    # "No." only before a number; at a sentence end "No" and "." are two words.
    assert words[words.index("plan") + 1 : words.index("plan") + 4] == [".", "No", "."]
    # A sentence-ending abbreviation keeps its one full stop (the documented rule).
    assert words[-1] == "U.K."
    second = words.index("U.S.", 6)
    assert words[second + 1 : second + 3] == ["-", "Korea"]
    assert all(text[s:e] == w for w, (s, e) in zip(words, spans))


def test_abbreviation_rule_does_not_swallow_ordinary_words():
    words, _ = tokenize_words("The Co-op and Inco. Mrs. Smith, Decoy etc. and Nov 5.")
    assert "Co" in words and "Inco" in words and "Decoy" in words
    assert "Mrs." in words and "etc." in words and "Nov" in words


def test_spans_that_leave_out_an_abbreviations_stop_are_widened():
    text = "Talks with the U.S. ended."
    spans, changed = widen_to_abbreviations(text, [Span(15, 18, "GPE")])  # "U.S" without its stop
    assert spans == [Span(15, 19, "GPE")] and changed == [(Span(15, 18, "GPE"), Span(15, 19, "GPE"))]
    _, word_spans = tokenize_words(text)
    assert spans_to_tags(word_spans, spans)[1] == []
    # A span that already ends on a word boundary is left alone.
    assert widen_to_abbreviations("Seoul. Then", [Span(0, 5, "GPE")])[1] == []


def test_symbol_words_and_line_starts():
    assert is_symbol_word("-") and is_symbol_word("“") and is_symbol_word("👨🏻‍🚒") and is_symbol_word("🇯🇵")
    assert not is_symbol_word("$") and not is_symbol_word("€") and not is_symbol_word("U.S.")
    text = "Bernama\n\nHe said\r\nit"
    _, spans = tokenize_words(text)
    assert line_starts(text, spans) == [False, True, False, True]


CONSTRAINTS = BioConstraints(BIO_TAGS)


def _valid(tags, line_start, symbol):
    for i, tag in enumerate(tags):
        continues = i > 0 and not line_start[i] and tags[i - 1] != "O" and tags[i - 1][2:] == tag[2:]
        if tag.startswith("I-") and not continues:
            return False
        if tag.startswith("B-") and symbol[i]:
            return False
        ends_here = tag != "O" and (i + 1 == len(tags) or not tags[i + 1].startswith("I-"))
        if ends_here and symbol[i]:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda n: st.tuples(
            st.lists(
                st.lists(st.floats(1e-6, 1.0), min_size=len(BIO_TAGS), max_size=len(BIO_TAGS)),
                min_size=n,
                max_size=n,
            ),
            st.lists(st.booleans(), min_size=n, max_size=n),
            st.lists(st.booleans(), min_size=n, max_size=n),
        )
    )
)
def test_viterbi_never_emits_an_invalid_sequence(case):
    scores, line_start, symbol = case
    log_probs = np.log(np.array(scores))
    tags = [BIO_TAGS[t] for t in viterbi(log_probs, CONSTRAINTS, line_start=line_start, symbol=symbol)]
    assert _valid(tags, line_start, symbol)


def _probabilities(rows):
    """Word x tag probabilities from {tag: p} rows (the rest of the mass spread evenly)."""
    out = np.full((len(rows), len(BIO_TAGS)), 0.0)
    for i, row in enumerate(rows):
        rest = (1.0 - sum(row.values())) / (len(BIO_TAGS) - len(row))
        out[i] = rest
        for tag, p in row.items():
            out[i, BIO_TAGS.index(tag)] = p
    return out


def test_viterbi_repairs_an_invalid_start_that_greedy_keeps():
    words = ["White", "House", "said"]
    probabilities = _probabilities(
        [{"B-GOV_ORG": 0.5, "O": 0.3}, {"I-GOV_ORG": 0.45, "I-INTL_ORG": 0.5}, {"O": 0.9}]
    )
    greedy = [t for t, _ in decode(probabilities, BIO_TAGS, decoding="greedy", words=words)]
    assert greedy == ["B-GOV_ORG", "I-INTL_ORG", "O"]
    best = [t for t, _ in decode(probabilities, BIO_TAGS, words=words)]
    assert best == ["B-GOV_ORG", "I-GOV_ORG", "O"]


def test_no_entity_across_a_line_break_or_of_punctuation_only():
    text = "Bernama\n\nHe said - ok"
    words, spans = tokenize_words(text)
    probabilities = _probabilities(
        [{"B-ORG": 0.9}, {"I-ORG": 0.9}, {"O": 0.9}, {"B-PERSON": 0.9}, {"O": 0.9}]
    )
    tags = [t for t, _ in decode(probabilities, BIO_TAGS, words=words, line_start=line_starts(text, spans))]
    assert tags_to_spans(spans, tags) == [Span(0, 7, "ORG")]  # "Bernama" alone; "-" is no PERSON


def test_decoding_keeps_symbols_inside_an_entity():
    words = ["National", "Security", "(", "NATSEC", ")", "Asia"]
    probabilities = _probabilities([{"B-EVENT": 0.9}] + [{"I-EVENT": 0.9}] * 5)
    assert [t for t, _ in decode(probabilities, BIO_TAGS, words=words)] == ["B-EVENT"] + ["I-EVENT"] * 5
