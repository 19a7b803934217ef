"""The evaluation core shared by every path: arms and prompts, judges, metrics, statistics."""
