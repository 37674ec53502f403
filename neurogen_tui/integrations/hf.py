"""Hugging Face `transformers`: a TrainerCallback that writes the Trainer's run to a neurogen-tui run
directory and lets `attach` and `ctl` steer it.

    from neurogen_tui.integrations.hf import NeurogenCallback
    trainer = Trainer(model, args, ..., callbacks=[NeurogenCallback(project="finetune")])

Metrics come from `on_log` and `on_evaluate` (HF's names: loss, learning_rate, grad_norm, eval_loss,
...), the config from the TrainingArguments (and the model's config). Steering, at each step's
end: a pause waits there; stop sets `control.should_training_stop` (and saves first); a checkpoint
sets `control.should_save` (HF writes output_dir/checkpoint-N at the end of that step); `set lr=` and
`weight_decay=` change the optimizer's groups and the scheduler's base rates; a prompt is answered
by the model with the Trainer's tokenizer. Only the main process (rank 0) writes.
"""
from __future__ import annotations

import os

from transformers import TrainerCallback

from .. import init


class NeurogenCallback(TrainerCallback):
    def __init__(self, run_dir=None, project=None, name=None, config: dict | None = None, prompt_tokens: int = 48,
                 **init_kwargs):
        self.kwargs = {"run_dir": run_dir, "project": project, "name": name, **init_kwargs}  # notify=..., stall_after=...
        self.extra_config = config or {}
        self.prompt_tokens = prompt_tokens
        self.run = None
        self._save_now = False

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None,
                       processing_class=None, **kwargs):
        if not state.is_world_process_zero or self.run is not None:
            return
        config = {k: v for k, v in args.to_dict().items() if isinstance(v, (int, float, str, bool)) or v is None}
        model_config = getattr(getattr(model, "config", None), "to_dict", None)
        if model_config is not None:
            config["model"] = {k: v for k, v in model_config().items() if isinstance(v, (int, float, str, bool))}
        self.run = init(config={**config, **self.extra_config}, total_steps=state.max_steps or None,
                        resume=bool(state.global_step) or None, **self.kwargs)
        if optimizer is not None:
            self.run.steer_optimizer(optimizer, lr_scheduler)
        self.run.on_checkpoint(lambda: self._ask_save(args, state))
        if model is not None and processing_class is not None and hasattr(model, "generate"):
            self.run.on_prompt(lambda text: self._answer(model, processing_class, text))

    def _ask_save(self, args, state) -> str:
        self._save_now = True  # HF writes it at the end of this step, as checkpoint-<global_step>
        return os.path.join(args.output_dir, f"checkpoint-{state.global_step}")

    def _answer(self, model, tokenizer, text: str) -> str:
        import torch

        inputs = tokenizer(text, return_tensors="pt").to(model.device)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=self.prompt_tokens, do_sample=False,
                                 pad_token_id=getattr(tokenizer, "pad_token_id", None) or getattr(tokenizer, "eos_token_id", 0))
        model.train(was_training)
        return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def on_step_end(self, args, state, control, **kwargs):
        run = self.run
        if run is None:
            return control
        if run.control.waiting:  # the step's boundary: a pause waits here, settings and prompts apply
            run.control.boundary(state.global_step)
        if self._save_now:
            control.should_save, self._save_now = True, False
        if run.should_stop:
            control.should_training_stop = True
            control.should_save = True  # a stop from ctl keeps the model as it is
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is not None and logs:
            self.run.log({k: v for k, v in logs.items() if k not in ("total_flos",)}, step=state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.run is not None and metrics:
            self.run.log(dict(metrics), step=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.run is not None:
            self.run.summary.update({"global_step": state.global_step})
            self.run.finish()
