from training.inference.tagger import Tagger

LONG = " ".join(
    f"KUALA LUMPUR: Defence Minister Ahmad{i} said Malaysia's US$1.{i} billion deal with Hanwha’s unit "
    "will close next year. 😀 Emoji and \r\nline breaks stay in place."
    for i in range(40)
)


def test_entities_point_into_the_input_for_long_texts(tiny_tagger):
    entities = tiny_tagger(LONG)
    assert len(tiny_tagger.tokenizer(LONG)["input_ids"]) > 10 * tiny_tagger.max_length
    assert entities, "a random head predicts some entities"
    for e in entities:
        assert LONG[e.start : e.end] == e.text
        assert e.label in {t[2:] for t in tiny_tagger.labels if t != "O"}
        assert 0.0 < e.score <= 1.0


def test_batches_match_single_calls(tiny_tagger):
    texts = ["Seoul and Ankara.", LONG[:500], "", "Malaysia"]
    batch = tiny_tagger(texts)
    assert len(batch) == 4 and batch[2] == []
    for text, entities in zip(texts, batch):
        assert entities == tiny_tagger(text)


def test_windows_do_not_change_short_text_predictions(tiny_tagger):
    text = "Defence Minister Ahmad met Hanwha in Seoul."
    wide = Tagger(tiny_tagger.model, tiny_tagger.tokenizer, max_length=128, stride=16)
    assert wide(text) == tiny_tagger(text)


def test_predict_words_returns_a_tag_per_word(tiny_tagger):
    out = tiny_tagger.predict_words([["Seoul", "met", "Ankara"], ["x"] * 100])
    assert [len(d) for d in out] == [3, 100]
    assert all(tag in tiny_tagger.labels for doc in out for tag, _ in doc)


def test_decoding_is_viterbi_by_default_and_greedy_on_request(tiny_tagger):
    import pytest

    from training.errors import ModelError

    assert tiny_tagger.decoding == "viterbi"
    greedy = Tagger(tiny_tagger.model, tiny_tagger.tokenizer, max_length=64, stride=16, decoding="greedy")
    words = LONG[:2000].split()
    viterbi_tags = [t for t, _ in tiny_tagger.predict_words([words])[0]]
    greedy_tags = [t for t, _ in greedy.predict_words([words])[0]]
    invalid = sum(
        t.startswith("I-") and (i == 0 or tags[i - 1][2:] != t[2:] or tags[i - 1] == "O")
        for tags in [greedy_tags]
        for i, t in enumerate(tags)
    )
    assert invalid > 0, "a random head makes invalid I- starts under greedy decoding"
    assert all(
        not t.startswith("I-") or (i > 0 and viterbi_tags[i - 1] != "O" and viterbi_tags[i - 1][2:] == t[2:])
        for i, t in enumerate(viterbi_tags)
    )
    with pytest.raises(ModelError, match="decoding='beam'"):
        Tagger(tiny_tagger.model, tiny_tagger.tokenizer, decoding="beam")


def test_entities_never_cross_a_line_break(tiny_tagger):
    text = "Defence Minister Ahmad\nKuala Lumpur Seoul\n\nHanwha Ocean Co.\r\nAnkara " * 20
    for entity in tiny_tagger(text):
        assert "\n" not in entity.text and "\r" not in entity.text
        assert any(ch.isalnum() or ch in "$€£" for ch in entity.text)
