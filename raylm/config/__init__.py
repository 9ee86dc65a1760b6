"""The one typed config of raylm: a section per stage, loaded from YAML plus ``key=value`` overrides.

Everything is validated here, on the driver, before Ray starts, so a typo costs a second and not
a cluster launch. Every leaf is a plain value so that a Tune search space can address it by its
dotted path (``train.lr``, ``data.validation_fraction``).

One module per section (``data``, ``train``, ``augment``, ``compress``, ``serve``, ``tune``) and the
whole config in ``root``; every name is importable from ``raylm.config``.
"""

from raylm.config.section import ConfigError, PlainName, Section, plain_name
from raylm.config.data import (AudioDataConfig, DataConfig, ImageDataConfig, InputLimits, Modality, TaskConfig,
                               TextDataConfig)
from raylm.config.train import ModelConfig, TrainConfig
from raylm.config.augment import AudioAugmentConfig, AugmentConfig, ImageAugmentConfig, TextAugmentConfig
from raylm.config.compress import CompressConfig, PruneConfig, QuantizeConfig
from raylm.config.serve import ServeConfig
from raylm.config.tracking import MlflowConfig, TrackingConfig
from raylm.config.tune import OBJECTIVE_MODES, Objective, PipelineConfig, SearchDimension, TuneConfig
from raylm.config.root import (RaylmConfig, _set_dotted, format_validation_error, load_config, merge, parse_overrides,
                               validate_config)

__all__ = ["AudioAugmentConfig", "AudioDataConfig", "AugmentConfig", "CompressConfig", "ConfigError",
           "DataConfig", "ImageAugmentConfig", "ImageDataConfig", "InputLimits", "Modality", "ModelConfig",
           "OBJECTIVE_MODES", "Objective", "PipelineConfig", "PlainName", "PruneConfig", "QuantizeConfig",
           "RaylmConfig", "SearchDimension", "Section", "ServeConfig", "TaskConfig", "TextAugmentConfig",
           "TextDataConfig", "TrainConfig", "TuneConfig", "_set_dotted", "format_validation_error",
           "load_config", "merge", "MlflowConfig", "TrackingConfig", "parse_overrides", "plain_name", "validate_config"]
