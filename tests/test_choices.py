"""One source of truth: each setting's allowed values are written once (seglab/choices.py), and defaults.yaml
documents the same keys, defaults and choices as the Config dataclass."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from seglab import choices, config
from seglab.data import transforms
from seglab.engine import loggers
from seglab.inference import predict, tta
from seglab.runtime import precision

SRC = Path(__file__).resolve().parents[1] / "src" / "seglab"
DEFAULTS = SRC / "defaults.yaml"
NAMED_LISTS = {name: value for name, value in vars(choices).items()
               if name.isupper() and isinstance(value, tuple) and all(isinstance(v, str) for v in value)}


def test_the_modules_that_act_on_a_setting_use_the_same_list_object():
    assert config.CHOICES is choices.CHOICES
    assert tta.tta_modes() is choices.TTA_MODES is config.CHOICES["tta"]
    assert precision.PRECISIONS is choices.PRECISIONS is config.CHOICES["precision"]
    assert transforms.AUGMENTS is choices.AUGMENTS and transforms.PRESETS is choices.AUGMENT_PRESETS
    assert loggers.LOGGER_NAMES is choices.LOGGERS
    assert predict.OUTPUTS is choices.SAVE_OUTPUTS


def test_the_tables_keyed_by_a_value_cover_exactly_the_allowed_values():
    assert tuple(tta.VIEWS) == choices.TTA_VIEWS
    assert tuple(transforms._TTA_TRANSFORMS) == choices.TTA_VIEWS
    assert set(precision.AUTOCAST_DTYPES) == set(choices.PRECISIONS) - {"auto"}
    for preset in choices.AUGMENT_PRESETS.values():
        assert set(preset) <= set(choices.AUGMENTS)


def string_literals(path: Path):
    """(line, set of strings) of every tuple/list/set literal made only of two or more strings."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2 \
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            yield node.lineno, {e.value for e in node.elts}


def test_no_second_literal_list_of_a_settings_values():
    """A literal holding (all but at most one of) a choice list is a second copy that will drift; import it."""
    copies = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "choices.py":
            continue
        for line, values in string_literals(path):
            for name, allowed in NAMED_LISTS.items():
                if values <= set(allowed) and len(values) >= max(2, len(allowed) - 1):
                    copies.append(f"{path.relative_to(SRC)}:{line} repeats choices.{name}: {sorted(values)}")
    assert not copies, "\n".join(copies)


def test_the_scan_finds_a_copy(tmp_path):
    path = tmp_path / "copy.py"
    path.write_text('if p not in ("fp32", "bf16", "fp16"):\n    pass\n')
    assert [values for _, values in string_literals(path)] == [{"fp32", "bf16", "fp16"}]


def defaults_yaml() -> tuple[dict, dict[str, str]]:
    """The defaults file's values, and the comment on each key's line."""
    text = DEFAULTS.read_text(encoding="utf-8")
    comments = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+):[^#\n]*#\s*(.*)$", text, re.M)}
    return yaml.safe_load(text), comments


def test_defaults_yaml_has_the_config_keys_with_the_same_defaults():
    values, _ = defaults_yaml()
    fields = config.Config().to_dict()
    assert not set(fields) - set(values), f"keys missing from defaults.yaml: {sorted(set(fields) - set(values))}"
    assert not set(values) - set(fields), f"defaults.yaml keys Config lacks: {sorted(set(values) - set(fields))}"
    differ = {k: (values[k], fields[k]) for k in fields if values[k] != fields[k] or type(values[k]) is not type(fields[k])}
    assert not differ, f"defaults.yaml vs Config defaults: {differ}"
    assert config.build_config({}) == config.Config()


@pytest.mark.parametrize("key", sorted(choices.CHOICES))
def test_defaults_yaml_documents_each_keys_choices(key):
    _, comments = defaults_yaml()
    documented = re.match(r"(?:\w+: )?([\w+-]+(?: \| [\w+-]+)+)", comments.get(key, ""))
    assert documented, f"defaults.yaml: document {key}'s values as `a | b | c`"
    names = tuple(documented.group(1).split(" | "))
    # tta lists its view sets and explains +shift in words
    assert names == (choices.TTA_VIEWS if key == "tta" else choices.CHOICES[key])


def test_defaults_yaml_documents_the_augmentations_loggers_and_outputs():
    _, comments = defaults_yaml()
    presets, _, augments = comments["augment"].partition("| comma list of: ")
    assert tuple(presets.strip(" |").split(" | ")) == tuple(choices.AUGMENT_PRESETS)
    assert tuple(augments.split(",")) == choices.AUGMENTS
    assert tuple(comments["logger"].split(" | ")[:2]) == choices.LOGGERS
    assert tuple(comments["save"].partition("any of ")[2].split(", ")) == choices.SAVE_OUTPUTS



@pytest.mark.parametrize("fmt", choices.FORMATS)
def test_every_format_has_a_detector(fmt, tmp_path):
    """``discover`` keys its layout detectors by these names: a missing one would be a KeyError, not this DataError."""
    from seglab.data.formats import discover
    from seglab.errors import DataError

    with pytest.raises(DataError, match=f"format={fmt}"):
        discover(tmp_path, fmt)
