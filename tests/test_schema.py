import xml.etree.ElementTree as ET

from training.schema import BIO_TAGS, ID2LABEL, LABEL2ID, LABEL_NAMES, labeling_config_xml


def test_thirteen_labels_give_27_bio_tags():
    assert len(LABEL_NAMES) == 13
    assert len(BIO_TAGS) == 27
    assert BIO_TAGS[0] == "O"
    assert {t[2:] for t in BIO_TAGS[1:]} == set(LABEL_NAMES)


def test_id2label_and_label2id_are_inverse():
    assert all(LABEL2ID[tag] == i for i, tag in ID2LABEL.items())
    assert list(ID2LABEL) == list(range(27))


def test_labeling_config_lists_every_label_once():
    root = ET.fromstring(labeling_config_xml())
    labels = root.find("Labels")
    assert labels.get("name") == "label" and labels.get("toName") == "text"
    assert [label.get("value") for label in labels.findall("Label")] == list(LABEL_NAMES)
    assert root.find("Text").get("value") == "$text"
