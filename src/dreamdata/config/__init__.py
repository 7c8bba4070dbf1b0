"""Typed experiment configuration: dataclass defaults, YAML presets, ``key=value`` overrides.

Every default lives in the dataclasses, in one place. A YAML file (a preset shipped in ``dreamdata/presets``
or any path) overrides some of them, and ``section.key=value`` arguments on the command line override those.
The resolved config is written into each run directory, so a run can always be traced back to exactly what
it was trained with.

* :mod:`~dreamdata.config.sections` - one dataclass per config section, with every default and its meaning.
* :mod:`~dreamdata.config.loading` - YAML files and presets, ``key=value`` overrides, type-checked building.
* :mod:`~dreamdata.config.validation` - ranges and combinations that are well-typed but meaningless.
"""

from dreamdata.config.loading import (
    build_dataclass,
    config_from_dict,
    config_tree,
    load_config,
    load_yaml,
    merge_overrides,
    merge_trees,
    parse_override,
    preset_names,
    read_config_file,
    set_dotted,
)
from dreamdata.config.sections import (
    DataConfig,
    EvaluationConfig,
    ModelConfig,
    ProcessConfig,
    RunConfig,
    TrainConfig,
    config_json,
)
from dreamdata.config.validation import validate

__all__ = [
    "DataConfig", "EvaluationConfig", "ModelConfig", "ProcessConfig", "RunConfig", "TrainConfig", "config_json",
    "build_dataclass", "config_from_dict", "config_tree", "load_config", "load_yaml", "merge_overrides",
    "merge_trees", "parse_override", "preset_names", "read_config_file", "set_dotted", "validate",
]
