"""The short variants' length lives in the plans (`mqsm_short_training`), checked and written atomically."""
import json

import pytest

from mqsm_nnunet.training.short_training import (DEFAULT, PLANS_KEY, ShortTraining, check_no_retired_variables,
                                                 write_short_training)


def test_configuration_without_the_entry_gets_the_default():
    assert ShortTraining.from_configuration({"batch_size": 2}) == DEFAULT == ShortTraining(3, 4, 0)


def test_written_length_is_read_back_from_the_plans(tmp_path):
    plans_file = tmp_path / "mQSMPlans.json"
    plans_file.write_text(json.dumps({"configurations": {"3d_fullres": {"batch_size": 2}, "2d": {}}}))
    write_short_training(plans_file, ShortTraining(8, 20, 2))
    plans = json.loads(plans_file.read_text())
    assert plans["configurations"]["3d_fullres"][PLANS_KEY] == {"epochs": 8, "iterations_per_epoch": 20,
                                                                "snapshot_every": 2, "cpu_bf16": False,
                                                                "initial_weights": None}
    assert PLANS_KEY not in plans["configurations"]["2d"]
    assert ShortTraining.from_configuration(plans["configurations"]["3d_fullres"]) == ShortTraining(8, 20, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["mQSMPlans.json"]      # no temporary file left


@pytest.mark.parametrize("entry, message", [({"epochs": 0}, "epochs"), ({"iterations_per_epoch": 2.5}, "iterations"),
                                            ({"snapshot_every": -1}, "snapshot_every"), ({"epoch": 3}, "unknown keys"),
                                            ({"cpu_bf16": 1}, "cpu_bf16"), ({"initial_weights": 3}, "initial_weights")])
def test_bad_entries_are_refused_by_name(entry, message):
    with pytest.raises(ValueError, match=message):
        ShortTraining.from_configuration({PLANS_KEY: entry})


def test_missing_plans_or_configuration_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="mqsm_plan_and_preprocess"):
        write_short_training(tmp_path / "nope.json", DEFAULT)
    plans_file = tmp_path / "plans.json"
    plans_file.write_text(json.dumps({"configurations": {"2d": {}}}))
    with pytest.raises(ValueError, match="3d_fullres"):
        write_short_training(plans_file, DEFAULT)


def test_the_retired_length_variables_are_refused_not_ignored():
    check_no_retired_variables({"PATH": "/bin"})
    with pytest.raises(RuntimeError, match="MQSM_TINY_EPOCHS.*write_short_training"):
        check_no_retired_variables({"MQSM_TINY_EPOCHS": "8"})
