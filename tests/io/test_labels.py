"""labels: one reader for label tables (JSON, dataset.json, colour table), one id map per dataset, one
check for integer label maps and for maps whose ids their table lacks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mqsm_nnunet.io.labels import (LabelIdMap, LabelTable, as_label_map, check_label_ids, check_label_map_ids,
                                read_labels)


def test_reads_a_mapping_or_a_dataset_json_sorted_by_id(tmp_path):
    plain = tmp_path / "labels.json"
    plain.write_text(json.dumps({"csf": 3, "background": 0, "caudate": 1}))
    assert list(read_labels(plain).ids.items()) == [("background", 0), ("caudate", 1), ("csf", 3)]
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"channel_names": {"0": "T1"}, "labels": {"background": 0, "a": 1}}))
    assert read_labels(dataset).ids == {"background": 0, "a": 1}


@pytest.mark.parametrize("name, text, words", [
    ("labels.json", '{"background": 0, "caudate": 1, "caudate": 2}', "'caudate' appears twice"),
    ("labels.json", '{"background": 0, "a": 1, "b": 1}', "more than one name"),
    ("labels.json", '{"a": 1, "b": 2}', "no id 0"),
    ("labels.json", '{"background": 0, "whole": [1, 2]}', "region-based"),
    ("labels.json", '{"background": 0, "a": 1.5}', "non-negative integers"),
    ("labels.json", '{"background": 0, "a": true}', "non-negative integers"),
    ("labels.json", '{"background": 0, "a": -1}', "non-negative integers"),
    ("labels.json", '{"background": 0,', "not valid JSON"),
    ("labels.json", '[0, 1]', "JSON object"),
    ("labels.json", '{}', "JSON object"),
    # a FreeSurferColorLUT-style table (any name not ending in .json): the line is named too
    ("lut.txt", "0 Unknown 0 0 0 0\n12 Left-Putamen 236 13\n",
     "line 2: '12 Left-Putamen 236 13' is not 'id name R G B A'"),
    ("lut.txt", "0 Unknown 0 0 0 0\n12 Putamen 1 1 1 0\n13 Putamen 1 1 1 0\n",
     "line 3: the name 'Putamen' appears twice"),
    ("lut.txt", "0 Unknown 0 0 0 0\n12 A 1 1 1 0\n12 B 1 1 1 0\n", "more than one name"),
    ("lut.txt", "12 Left-Putamen 1 1 1 0\n", "no id 0"),
    ("lut.txt", "# only comments\n", "no entries"),
])
def test_refuses_what_breaks_a_rule_naming_the_file(tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=str(path)) as error:
        read_labels(path)
    assert words in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such labels file"):
        read_labels(tmp_path / "nowhere.json")


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


FREESURFER_LUT = """\
#$Id: FreeSurferColorLUT.txt (an excerpt, same layout)
#No. Label Name:                            R   G   B   A

0   Unknown                                 0   0   0   0
2   Left-Cerebral-White-Matter              245 245 245 0
12  Left-Putamen                            236 13  176 0
13  Left-Pallidum                           12  48  255 0   # iron-rich
28  Left-VentralDC                          165 42  42  0
"""


def test_reads_a_freesurfer_colour_table_as_a_catalogue(tmp_path):
    path = tmp_path / "FreeSurferColorLUT.txt"
    path.write_text(FREESURFER_LUT)
    table = read_labels(path)
    assert table.catalogue and table.source == str(path)
    assert table.ids == {"Unknown": 0, "Left-Cerebral-White-Matter": 2, "Left-Putamen": 12, "Left-Pallidum": 13,
                         "Left-VentralDC": 28}
    assert table.found_in([0, 13, 12]).ids == {"Unknown": 0, "Left-Putamen": 12, "Left-Pallidum": 13}
    assert not table.found_in([12]).catalogue


def test_a_dataset_json_gives_the_users_ids_where_mqsm_convert_renumbered_them(tmp_path):
    user = {"background": 0, "Left-Putamen": 12, "Left-Pallidum": 13}
    dataset = {"labels": {"background": 0, "Left-Putamen": 1, "Left-Pallidum": 2},
               "mqsm": {"label_ids_original": user}}
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(dataset))
    assert read_labels(path).ids == user
    ids = LabelIdMap.from_dataset_json(dataset)
    assert ids.remapped and ids.nnunet == dataset["labels"] and ids.user == user


def test_the_id_map_translates_both_ways_and_refuses_unknown_ids():
    ids = LabelIdMap.numbered({"background": 0, "Left-Putamen": 12, "Left-Pallidum": 13, "Brain-Stem": 16})
    assert ids.nnunet == {"background": 0, "Left-Putamen": 1, "Left-Pallidum": 2, "Brain-Stem": 3}
    user = np.array([[0, 12], [13, 16]])
    nnunet = ids.to_nnunet(user)
    np.testing.assert_array_equal(nnunet, [[0, 1], [2, 3]])
    np.testing.assert_array_equal(ids.to_user(nnunet), user)
    assert ids.user_dtype() is np.uint8
    with pytest.raises(ValueError, match=r"label values \[14, 300\] are not in labels"):
        ids.to_nnunet(np.array([0, 14, 300]))
    with pytest.raises(ValueError, match=r"nnU-Net label values beyond 0..3"):
        ids.to_user(np.array([0, 4]))
    assert not LabelIdMap.numbered({"background": 0, "a": 1}).remapped
    assert LabelIdMap.numbered({"background": 0, "ctx-lh-insula": 1035}).user_dtype() is np.uint16


def test_nnunet_gets_background_for_id_0_whatever_the_user_calls_it():
    """FreeSurfer names id 0 "Unknown"; nnU-Net's preprocessing refuses a table without "background"."""
    ids = LabelIdMap.numbered({"Unknown": 0, "Left-Putamen": 12})
    assert ids.nnunet == {"background": 0, "Left-Putamen": 1} and ids.remapped and not ids.consecutive
    dataset = {"labels": ids.nnunet, "mqsm": {"label_ids_original": ids.user}}
    assert LabelIdMap.from_dataset_json(dataset).user == {"Unknown": 0, "Left-Putamen": 12}
    renamed_only = LabelIdMap.numbered({"Unknown": 0, "a": 1})
    assert renamed_only.remapped and renamed_only.consecutive
    with pytest.raises(ValueError, match="'background' has id 3; nnU-Net reserves it for id 0"):
        LabelIdMap.numbered({"Unknown": 0, "background": 3})
    with pytest.raises(ValueError, match="does not pair up"):
        LabelIdMap.from_dataset_json({"labels": {"background": 0, "a": 1}, "mqsm": {"label_ids_original":
                                                                                    {"Unknown": 0, "b": 7}}})


def test_a_map_with_ids_its_table_lacks_is_refused_naming_both_files():
    table = LabelTable({"background": 0, "Left-Putamen": 12}, "cohort/labels.json")
    check_label_map_ids([0, 12], table, "pred/sub-001.nii.gz")
    with pytest.raises(ValueError, match=r"pred/sub-001.nii.gz: label values \[1, 2\] are not in cohort/labels.json"):
        check_label_map_ids([0, 1, 2, 12], table, "pred/sub-001.nii.gz")
