"""ResNet Zoo: see, compare, fine-tune and fetch residual networks (ResNet and ResNeXt, via timm)."""

from zoo.errors import ConfigError as ConfigError
from zoo.errors import InvalidArgumentError as InvalidArgumentError
from zoo.errors import UnknownModelError as UnknownModelError
from zoo.errors import ZooError as ZooError
from zoo.registry import ModelEntry as ModelEntry
from zoo.registry import get as get
from zoo.registry import list_models as list_models
from zoo.settings import Settings as Settings
from zoo.settings import get_settings as get_settings

__version__ = "0.1.0"
