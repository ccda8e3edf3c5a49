"""labels: one reader for the labels JSON (every command) and one check for integer label maps."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mqsm_nnunet.labels import as_label_map, check_label_ids, read_labels_json


def test_reads_a_mapping_or_a_dataset_json_sorted_by_id(tmp_path):
    plain = tmp_path / "labels.json"
    plain.write_text(json.dumps({"csf": 3, "background": 0, "caudate": 1}))
    assert list(read_labels_json(plain).items()) == [("background", 0), ("caudate", 1), ("csf", 3)]
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"channel_names": {"0": "T1"}, "labels": {"background": 0, "a": 1}}))
    assert read_labels_json(dataset) == {"background": 0, "a": 1}


@pytest.mark.parametrize("text, words", [
    ('{"background": 0, "caudate": 1, "caudate": 2}', "'caudate' appears twice"),
    ('{"background": 0, "a": 1, "b": 1}', "more than one name"),
    ('{"a": 1, "b": 2}', "no id 0"),
    ('{"background": 0, "whole": [1, 2]}', "region-based"),
    ('{"background": 0, "a": 1.5}', "non-negative integers"),
    ('{"background": 0, "a": true}', "non-negative integers"),
    ('{"background": 0, "a": -1}', "non-negative integers"),
    ('{"background": 0,', "not valid JSON"),
    ('[0, 1]', "JSON object"),
    ('{}', "JSON object"),
])
def test_refuses_what_breaks_a_rule_naming_the_file(tmp_path, text, words):
    path = tmp_path / "labels.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=str(path)) as error:
        read_labels_json(path)
    assert words in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such labels JSON"):
        read_labels_json(tmp_path / "nowhere.json")


def test_in_memory_tables_need_no_background():
    assert check_label_ids({"b": 2, "a": 1}, "regions") == {"a": 1, "b": 2}


@pytest.mark.parametrize("data", [np.array([[0, 1], [2, 3]], np.uint8), np.array([0.0, 2.0, 7.0])])
def test_label_maps_of_integers_pass(data):
    labels = as_label_map(data, "seg")
    assert labels.dtype == np.int64 and np.array_equal(labels, data)


@pytest.mark.parametrize("data, words", [(np.array([0.0, 0.5]), "non-integer"), (np.array([0.0, np.nan]), "non-integer"),
                                         (np.array([0, -1]), "negative"), (np.array(["a"]), "non-integer")])
def test_label_maps_are_never_rounded(data, words):
    with pytest.raises(ValueError, match=f"seg.nii.gz: .*{words}"):
        as_label_map(data, "seg.nii.gz")
