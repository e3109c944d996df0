"""Parameter checks: declared types, ranges by name, structured strings, layer indices."""

import pytest

from tagelib import params as P

INT = {"inferred_type_name": "int", "help": "a count"}
FLOAT = {"inferred_type_name": "float"}
STR = {"inferred_type_name": "str"}
BOOL = {"inferred_type_name": "bool"}


@pytest.mark.parametrize("name, value, spec", [
    ("seed", 0, INT), ("train_steps", 0, INT), ("threads", 2, INT), ("lr", 1, FLOAT), ("lr", 0.002, FLOAT),
    ("alpha", -1.5, FLOAT), ("overwrite", True, BOOL), ("edit_layers", "0,1,2", STR),
    ("age_groups", "0,1|2", STR), ("gen_widths", "32,32,16,16", STR), ("image_size", 64, INT),
])
def test_valid_values_pass(name, value, spec):
    P.check_value("NB", name, value, spec)


@pytest.mark.parametrize("name, value, spec, message", [
    ("seed", "abc", INT, r"NB: seed='abc' is a str; seed must be an int >= 0 \(a count\)"),
    ("seed", True, INT, "is a bool"),
    ("seed", 1.5, INT, "is a float"),
    ("train_steps", -5, INT, r"train_steps=-5 is not valid; train_steps must be an int >= 0"),
    ("threads", 0, INT, ">= 1"),
    ("lr", 0.0, FLOAT, "> 0"),
    ("lambda_cross", -1.0, FLOAT, "finite and >= 0"),
    ("lambda_cross", float("nan"), FLOAT, "finite and >= 0"),
    ("overwrite", "yes", BOOL, "is a str"),
    ("edit_layers", "0,,2", STR, "comma-separated integers"),
    ("edit_layers", "0,1,1", STR, "no repeats"),
    ("gen_widths", "32,32,16", STR, "4 comma-separated"),
    ("age_groups", "0,1|", STR, "groups"),
    ("image_size", 48, INT, r"one of \[32, 64\]"),
    ("checkpoint", "", STR, "non-empty path"),
])
def test_invalid_values_name_notebook_parameter_value_and_rule(name, value, spec, message):
    with pytest.raises(P.ParameterError, match=message):
        P.check_value("NB", name, value, spec)


def test_set_values_are_read_as_the_declared_type():
    assert P.parse_value("3", "int") == 3 and P.parse_value("true", "bool") is True
    assert P.parse_value("0,1,2", "str") == "0,1,2" and P.parse_value("007", "str") == "007"
    assert P.parse_value('"quoted"', "str") == "quoted"
    assert P.parse_value("abc", "int") == "abc"  # left as text: the type check then refuses it


def test_layers_are_checked_against_the_latent_space():
    P.check_layers("NB", {"edit_layers": "0,7", "layer_sets": "0,1|6,7"}, 8, "ckpt")
    with pytest.raises(P.ParameterError, match=r"edit_layers='0,9' names layer\(s\) \[9\].*8 W\+ layers"):
        P.check_layers("NB", {"edit_layers": "0,9"}, 8, "ckpt")


def test_age_groups_must_partition_edit_layers():
    P.check_relations("NB", {"edit_layers": "0,1,2,3", "age_groups": "0,1|2,3"})
    with pytest.raises(P.ParameterError, match="every edited layer in exactly one group"):
        P.check_relations("NB", {"edit_layers": "0,1,2,3", "age_groups": "0,1|3"})
