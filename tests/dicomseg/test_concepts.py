"""Label config: shipped SNOMED CT concepts, name matching, user files, messages for unknown classes."""

from __future__ import annotations

import json

import pytest
from pydicom.sr.coding import Code

from medmrcnn.dicomseg import load_label_config
from medmrcnn.errors import LabelConfigError

SCT = "SCT"


@pytest.mark.parametrize("name, category, type_", [
    ("tumour", ("49755003", "Morphologically Altered Structure"), ("108369006", "Neoplasm")),
    ("liver", ("91723000", "Anatomical Structure"), ("10200004", "Liver")),
    ("kidney", ("91723000", "Anatomical Structure"), ("64033007", "Kidney")),
    ("nucleus", ("91723000", "Anatomical Structure"), ("84640000", "Nucleus")),
    ("cell", ("91723000", "Anatomical Structure"), ("4421005", "Cell")),
])
def test_shipped_concepts(name, category, type_):
    concept = load_label_config().concept_for(name)
    assert (concept.category.scheme_designator, concept.category.value, concept.category.meaning) == (SCT, *category)
    assert (concept.type.scheme_designator, concept.type.value, concept.type.meaning) == (SCT, *type_)
    assert all(0 <= c <= 255 for c in concept.colour)


def test_every_phantom_and_microscopy_class_has_a_concept():
    from medmrcnn.synthetic import CT_LABELS, MICROSCOPY_LABELS

    config = load_label_config()
    for name in CT_LABELS.names + MICROSCOPY_LABELS.names:
        assert config.concept_for(name).name


def test_names_match_case_separators_and_aliases():
    config = load_label_config()
    assert config.concept_for("Tumor").name == config.concept_for("TUMOUR").name == "tumour"
    assert config.concept_for("Left Kidney").name == config.concept_for("kidney-left").name == "kidney_left"
    assert config.concept_for("nuclei").name == "nucleus"


def test_unknown_class_says_how_to_add_it():
    with pytest.raises(LabelConfigError) as e:
        load_label_config().concept_for("Hepatic Vein")
    message = str(e.value)
    assert "'Hepatic Vein'" in message and '"hepatic_vein"' in message and "--label-config" in message
    assert "\n" not in message


def test_user_file_adds_and_overrides(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"classes": {
        "hepatic_vein": {"category": {"scheme": "SCT", "code": "91723000", "meaning": "Anatomical Structure"},
                         "type": {"scheme": "SCT", "code": "8993003", "meaning": "Hepatic vein"},
                         "colour": [0, 151, 206]},
        "tumour": {"category": {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"},
                   "type": {"scheme": "SCT", "code": "108369006", "meaning": "Neoplasm"}, "colour": [10, 20, 30]},
    }}))
    config = load_label_config(path)
    assert config.concept_for("hepatic vein").type.value == "8993003"
    assert config.concept_for("tumor").colour == (10, 20, 30)
    assert config.concept_for("liver").type.value == "10200004"  # defaults stay
    assert str(path) in config.source


def test_codes_map_back_to_names_including_legacy_srt():
    config = load_label_config()
    assert config.name_for_codes(None, Code("T-62000", "SRT", "Liver"), None) == "liver"
    assert config.name_for_codes(None, Code("64033007", "SCT", "Kidney"), Code("7771000", "SCT", "Left")) == (
        "kidney_left")
    assert config.name_for_codes(None, Code("64033007", "SCT", "Kidney"), None) == "kidney"
    assert config.name_for_codes(None, Code("1234", "99X", "Other"), None) is None


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"classes": {"x": {"category": {"scheme": "SCT", "code": "1", "meaning": "a"}}}}', "missing 'type'"),
    ('{"classes": {"x": {"category": {"scheme": "SCT", "code": "1", "meaning": "a"}, '
     '"type": {"scheme": "SCT", "code": "1", "meaning": "a"}, "colur": [1, 2, 3]}}}', "unknown keys"),
    ('{"classes": {"x": {"category": {"scheme": "SCT", "code": "1", "meaning": "a"}, '
     '"type": {"scheme": "SCT", "code": "1", "meaning": "a"}, "colour": [1, 2, 300]}}}', "colour"),
    ('{"classes": {"x": {"category": {"scheme": "SCT", "code": "1"}, '
     '"type": {"scheme": "SCT", "code": "1", "meaning": "a"}}}}', "exactly the keys"),
    ('{"classes": {"background": {}}}', "not allowed"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LabelConfigError, match=message) as e:
        load_label_config(path)
    assert str(path) in str(e.value)
    with pytest.raises(LabelConfigError, match="cannot read"):
        load_label_config(tmp_path / "missing.json")
