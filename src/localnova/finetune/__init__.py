"""Fine-tuning: local LoRA/QLoRA (lora.py) and its hyperparameter presets (presets.py)."""
