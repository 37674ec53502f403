"""What the trainer measures besides the step itself: the loss on fixed validation batches, and the
model's own greedy continuation of a text next to the real one."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..core.events import TextSample


@torch.no_grad()
def validation(forward, batches, device: torch.device, autocast, interrupted: Callable[[], bool]) -> tuple[float, float] | None:
    """(mean loss, token accuracy) over `batches`; None when `interrupted()` says so first."""
    losses, correct, count = [], 0, 0
    for x, y in batches:
        if interrupted():
            return None
        x, y = x.to(device), y.to(device)
        with autocast:
            logits = forward(x)
            losses.append(F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)).float())
        correct += (logits.argmax(-1) == y).sum()
        count += y.numel()
    return torch.stack(losses).mean().item(), float(correct) / count


@torch.no_grad()
def block_sample(model, tokenizer, batch, tokens: int, step: int, device: torch.device, autocast,
                 whole_model) -> TextSample:
    """The model's greedy continuation of the first block of `batch` after its first len - `tokens`
    tokens, next to the block's real last `tokens`. `whole_model`: a context in which the model's
    parameters are whole (a sharded model gathers them)."""
    x, y = batch
    seq = torch.cat([x[0], y[0, -1:]])
    prompt, target = seq[:-tokens], seq[-tokens:]
    with autocast, whole_model:
        out = model.generate(prompt.unsqueeze(0).to(device), tokens)[0, -tokens:].cpu()
    decode = tokenizer.decode
    return TextSample(step=step, input=decode(prompt.tolist()), target=decode(target.tolist()),
                      output=decode(out.tolist()), accuracy=float((out == target).float().mean()))


@torch.no_grad()
def prompt_answer(model, tokenizer, text: str, tokens: int, step: int, device: torch.device, autocast, whole_model,
                  temperature: float = 0.0, top_k: int | None = None, seed: int = 0) -> TextSample:
    """The model as it is now continues `text`: greedy, or sampled (its own generator, seeded by
    `seed`, so the training's random state is not touched)."""
    block = model.cfg.block_size
    tokens = max(1, min(tokens, block - 1))
    ids = [int(i) for i in tokenizer.encode(text)[-(block - tokens):]] or [0]
    generator = None
    if temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    with autocast, whole_model:
        out = model.generate(torch.tensor([ids], device=device), tokens, temperature, top_k, generator)[0, len(ids):]
    return TextSample(step=step, input=text, target="", output=tokenizer.decode(out.cpu().tolist()), accuracy=None,
                      kind="prompt")
