"""seglab: from a folder of images and masks to a trained segmentation model, evaluation, predictions and measurements."""
from .models import create_model, list_models, register_model

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "register_model", "__version__"]
