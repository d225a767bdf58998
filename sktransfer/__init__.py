"""sktransfer: frozen pretrained encoders as scikit-learn transformers.

>>> from sktransfer import ImageEncoder, TextEncoder
"""

from ._content import IdentityError
from ._folders import UnsafeFolderError
from ._identity import EncoderIdentity, ModelMismatchError
from ._registry import model_registry
from .base import BaseEncoder
from .cache import CacheCorruptError, CacheError, EmbeddingCache
from .clip import ClipEncoder
from .fewshot import FewShotClassifier
from .finetune import FineTuningClassifier
from .image import ImageEncoder
from .model_store import ModelNotFoundError, models_dir, resolve_text_model
from .tables import make_table_encoder
from .text import TextEncoder
from .zeroshot import ZeroShotClassifier

__version__ = "0.1.0.dev0"

__all__ = [
    "BaseEncoder",
    "CacheCorruptError",
    "CacheError",
    "ClipEncoder",
    "EmbeddingCache",
    "EncoderIdentity",
    "FewShotClassifier",
    "FineTuningClassifier",
    "IdentityError",
    "ImageEncoder",
    "ModelMismatchError",
    "ModelNotFoundError",
    "TextEncoder",
    "UnsafeFolderError",
    "ZeroShotClassifier",
    "make_table_encoder",
    "model_registry",
    "models_dir",
    "resolve_text_model",
]
