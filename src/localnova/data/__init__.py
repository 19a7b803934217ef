"""Data sets: the evaluation set, training pairs and their formats (chat JSONL, Nova JSONL)."""
