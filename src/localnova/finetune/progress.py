"""The Trainer's output on our console: a progress bar over the training steps with the current
loss, while the per-step dicts that the Trainer would print go to the run log."""

from __future__ import annotations

import json
import logging

from localnova.console import progress

log = logging.getLogger("localnova.finetune")


def console_callback():
    """A TrainerCallback that shows steps, rate, ETA and loss, and logs each step's record."""
    from transformers import TrainerCallback

    class ConsoleCallback(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = progress(state.max_steps, "training", unit="step")
            self.bar.update(state.global_step)  # a resumed run starts part-way

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            log.info("step %d of %d: %s", state.global_step, state.max_steps, json.dumps(logs or {}, default=str))
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return ConsoleCallback()
