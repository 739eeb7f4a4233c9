"""OfflineRLConfig: TRL's documented form (docstring = --help), choices in metadata, one validation."""

import ast
import dataclasses
import inspect
import math
import re

import pytest
from transformers import HfArgumentParser, TrainingArguments

import trainers
from trainers.losses import OfflineRLLossConfig
from trainers.offline_rl_config import OfflineRLConfig

ENTRY = re.compile(r"^ {8}(\w+) \((.*)\):$")
DEFAULT = re.compile(r"defaults to `(.*)`\)?$")


def documented_parameters(config_class) -> dict[str, tuple[str, str, str]]:
    """``name -> (group, type line, text)`` from the ``Parameters:`` section of the class docstring."""
    lines = inspect.getdoc(config_class).splitlines()
    lines = ["    " + line for line in lines]  # getdoc strips 4 spaces of class-body indentation
    start = lines.index("    Parameters:")
    entries, group, current = {}, None, None
    for line in lines[start + 1 :]:
        if line.startswith("        > "):
            group, current = line.strip()[2:], None
        elif match := ENTRY.match(line):
            current = match.group(1)
            entries[current] = [group, match.group(2), []]
        elif line.startswith(" " * 12) and current is not None:
            entries[current][2].append(line.strip())
        elif line.strip():
            raise AssertionError(f"unexpected line in {config_class.__name__}'s Parameters: {line!r}")
    return {name: (g, kind, " ".join(text)) for name, (g, kind, text) in entries.items()}


def own_fields(config_class) -> dict[str, dataclasses.Field]:
    """The fields declared in the class body (including TrainingArguments fields it re-declares), in order."""
    by_name = {f.name: f for f in dataclasses.fields(config_class)}
    return {name: by_name[name] for name in vars(config_class).get("__annotations__", {}) if name in by_name}


def test_docstring_documents_exactly_the_declared_fields_in_groups():
    documented = documented_parameters(OfflineRLConfig)
    assert list(documented) == list(own_fields(OfflineRLConfig))  # same names, same order
    assert all(group for group, _, _ in documented.values())


@pytest.mark.parametrize("name", list(own_fields(OfflineRLConfig)))
def test_help_is_the_docstring_text_and_the_default_is_the_documented_one(name):
    field = own_fields(OfflineRLConfig)[name]
    _, kind, text = documented_parameters(OfflineRLConfig)[name]
    assert " ".join(field.metadata["help"].split()) == text
    match = DEFAULT.search(kind)
    assert match, f"{name}: the type line {kind!r} names no default"
    assert ast.literal_eval(match.group(1)) == field.default


def test_allowed_values_are_choices_in_metadata_and_the_parser_enforces_them(capsys):
    choices = {
        f.name: tuple(f.metadata["choices"]) for f in own_fields(OfflineRLConfig).values() if "choices" in f.metadata
    }
    assert choices == {
        "loss_type": ("mc", "ilql"),
        "cql_implementation": ("chunked", "naive"),
        "q_head_type": ("linear", "mlp"),
    }
    parser = HfArgumentParser(OfflineRLConfig)
    assert "BOOST (appendix D): 10 in every setting" in " ".join(parser.format_help().split())
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", "x", "--loss_type", "sarsa"])
    assert "invalid choice: 'sarsa'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "values,message",
    [
        ({"cql_weight": math.nan}, "cql_weight must be a finite number, got nan"),
        ({"beta": math.nan}, "beta must be a finite number, got nan"),
        ({"beta": math.inf}, "beta must be a finite number, got inf"),
        ({"eval_rollout_temperature": math.nan}, "eval_rollout_temperature must be a finite number"),
        ({"max_length": 0}, "max_length must be >= 1, got 0"),
        ({"max_length": -5}, "max_length must be >= 1, got -5"),
        ({"loss_type": "sarsa"}, "loss_type must be one of 'mc', 'ilql', got 'sarsa'"),
        ({"q_head_type": "conv"}, "q_head_type must be one of 'linear', 'mlp', got 'conv'"),
        ({"cql_implementation": "fast"}, "cql_implementation must be one of 'chunked', 'naive'"),
        ({"gamma": 1.01}, r"gamma must be in \[0, 1\], got 1.01"),
        ({"tau": 1.0}, r"tau must be in \(0, 1\), got 1.0"),
        ({"polyak_rate": 2.0}, r"polyak_rate must be in \[0, 1\], got 2.0"),
        ({"bc_weight": -1.0}, "bc_weight must be >= 0, got -1.0"),
        ({"cql_chunk_size": 0}, "cql_chunk_size must be >= 1, got 0"),
        ({"mlp_hidden_size": 0}, "mlp_hidden_size must be >= 1, got 0"),
        ({"eval_rollout_episodes": 0}, "eval_rollout_episodes must be >= 1, got 0"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be >= 1, got 0"),
        ({"learning_rate": math.nan}, "learning_rate must be a finite number, got nan"),
    ],
)
def test_out_of_range_values_are_rejected_naming_the_field(values, message, tmp_path):
    with pytest.raises(ValueError, match="OfflineRLConfig: " + message):
        OfflineRLConfig(output_dir=str(tmp_path), **values)


def test_optional_fields_accept_none_and_range_edges(tmp_path):
    config = OfflineRLConfig(
        output_dir=str(tmp_path), max_length=None, mlp_hidden_size=None, gamma=1.0, cql_weight=0.0, polyak_rate=0.0
    )
    assert config.max_length is None and config.gamma == 1.0
    assert OfflineRLConfig(output_dir=str(tmp_path), max_length=1, dataset_num_proc=1).max_length == 1


@pytest.mark.parametrize("values", [{"gamma": 2.0}, {"tau": 0.0}, {"cql_weight": math.nan}, {"loss_type": "td"}])
def test_the_trainer_config_and_the_loss_config_share_one_check(values, tmp_path):
    # the same rule, the same message: the loss fields' choices and ranges are declared once
    with pytest.raises(ValueError) as from_trainer:
        OfflineRLConfig(output_dir=str(tmp_path), **values)
    with pytest.raises(ValueError) as from_loss:
        OfflineRLLossConfig(**values)
    assert str(from_trainer.value).split(": ", 1)[1] == str(from_loss.value).split(": ", 1)[1]


def test_subclasses_inherit_the_check(tmp_path):
    with pytest.raises(ValueError, match="BilevelReweightConfig: cql_weight must be a finite number"):
        trainers.BilevelReweightConfig(output_dir=str(tmp_path), cql_weight=math.nan)


def test_training_arguments_fields_keep_their_own_checks(tmp_path):
    # fields OfflineRLConfig does not re-declare are TrainingArguments' business (None is fine there)
    config = OfflineRLConfig(output_dir=str(tmp_path), ddp_backend=None, max_grad_norm=1.0)
    assert config.ddp_backend is None
    assert {f.name for f in dataclasses.fields(TrainingArguments)} < {f.name for f in dataclasses.fields(config)}


def test_the_loss_config_is_the_trainer_config_s_loss_fields():
    trainer_fields = {f.name: f for f in dataclasses.fields(OfflineRLConfig)}
    for field in dataclasses.fields(OfflineRLLossConfig):
        twin = trainer_fields[field.name]
        assert field.default == twin.default, field.name
        assert field.metadata.get("choices") == twin.metadata.get("choices"), field.name
