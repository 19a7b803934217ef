"""localnova: fine-tune, retrieve, or both? The study, on Bedrock and on open models."""

__version__ = "0.1.0"
