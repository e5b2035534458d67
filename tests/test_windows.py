from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.modeling.encoder import load_tokenizer
from training.modeling.windows import IGNORE, encode_documents, owned_predictions
from training.schema import ID2LABEL, LABEL2ID
from training.text import tokenize_words


def _long_document(n=60):
    text = " ".join(f"Minister Ahmad{i} visited Seoul and Ankara." for i in range(n))
    words, _ = tokenize_words(text)
    tags = [LABEL2ID["B-GPE"] if w in ("Seoul", "Ankara") else LABEL2ID["O"] for w in words]
    return words, tags


def test_windows_cover_every_word_and_each_word_is_owned_once(tiny_encoder_dir):
    tokenizer = load_tokenizer(str(tiny_encoder_dir), True)
    words, tags = _long_document()
    windows = encode_documents(tokenizer, [words, words[:5]], [tags, tags[:5]], max_length=32, stride=8)
    assert len(windows) > 5
    assert all(len(ids) <= 32 for ids in windows.input_ids)
    owners = Counter((windows.doc_index[b], w) for b, owned in enumerate(windows.owned) for _, w in owned)
    assert set(owners) == {(0, i) for i in range(len(words))} | {(1, i) for i in range(5)}
    assert set(owners.values()) == {1}


def test_labels_on_leading_subwords_only_or_on_all(tiny_encoder_dir):
    tokenizer = load_tokenizer(str(tiny_encoder_dir), True)
    words, tags = ["Seoul", "Ankara"], [LABEL2ID["B-GPE"], LABEL2ID["B-GPE"]]
    first = encode_documents(tokenizer, [words], [tags], max_length=32, stride=8)
    labels = first.labels[0]
    # With case markers each capitalised word starts with "^": that token carries the label.
    assert tokenizer.convert_ids_to_tokens(first.input_ids[0])[1] == "^"
    assert labels[1] == LABEL2ID["B-GPE"] and labels[0] == IGNORE
    assert labels.count(LABEL2ID["B-GPE"]) == 2 and LABEL2ID["I-GPE"] not in labels
    every = encode_documents(
        tokenizer, [words], [tags], max_length=32, stride=8, label_all_subwords=True, id2label=ID2LABEL
    )
    assert LABEL2ID["I-GPE"] in every.labels[0]
    assert every.labels[0][0] == IGNORE and every.labels[0][-1] == IGNORE


def test_owned_only_labels_each_word_once(tiny_encoder_dir):
    tokenizer = load_tokenizer(str(tiny_encoder_dir), True)
    words, tags = _long_document()
    windows = encode_documents(tokenizer, [words], [tags], max_length=32, stride=8, label_owned_only=True)
    labelled = sum(sum(1 for x in labels if x != IGNORE) for labels in windows.labels)
    assert labelled == len(words)
    merged = owned_predictions(windows, windows.labels, [len(words)])
    assert merged[0] == tags


WORDS = st.lists(
    st.sampled_from(
        ["Seoul", "met", "Ankara", "F", "-", "16s", "US", "$", "1.2", "bn", "😀", "ambassador", "x"]
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents=st.lists(WORDS, min_size=1, max_size=4), max_length=st.integers(16, 64), data=st.data())
def test_any_documents_split_and_merge_back_exactly(tiny_encoder_dir, documents, max_length, data):
    tokenizer = _tokenizer(tiny_encoder_dir)
    stride = data.draw(st.integers(0, max_length // 2 - 2))
    tags = [[data.draw(st.integers(0, 26)) for _ in words] for words in documents]
    windows = encode_documents(
        tokenizer, documents, tags, max_length=max_length, stride=stride, label_owned_only=True
    )
    assert all(len(ids) <= max_length for ids in windows.input_ids)
    merged = owned_predictions(windows, windows.labels, [len(w) for w in documents])
    assert merged == tags


_TOKENIZERS = {}


def _tokenizer(directory):
    if directory not in _TOKENIZERS:
        _TOKENIZERS[directory] = load_tokenizer(str(directory), True)
    return _TOKENIZERS[directory]
