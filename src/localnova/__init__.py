"""localnova: fine-tune, retrieve, or both? The study, on Bedrock and on open models."""

from localnova import threads as _threads

__version__ = "0.1.0"

# Before any module of the package imports torch or faiss: their OpenMP runtime reads the wait
# policy once, when it loads (threads.py says why the study sets it).
_threads.WAIT_POLICY = _threads.set_wait_policy()
