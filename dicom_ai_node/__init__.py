"""dicom-ai-node: a DICOM AI node that receives studies, runs models and sends results back."""

__version__ = "0.1.0"
__all__ = ["__version__"]
