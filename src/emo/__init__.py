"""emo: fine-tune Hugging Face encoders on the CARER emotion dataset, tracked in MLflow."""

__version__ = "0.1.0"
