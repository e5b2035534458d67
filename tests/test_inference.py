from training.inference import Tagger

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
