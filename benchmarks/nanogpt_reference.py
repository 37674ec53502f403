"""A faithful, minimal re-implementation of nanoGPT's CPU recipe (model.py + train.py), for benchmarks.

Written from nanoGPT's published design, not copied. What it keeps, because it is what the recipe
measures: LayerNorm with optional bias, fused q/k/v projection, `scaled_dot_product_attention` with
`is_causal=True`, GELU MLP, tied input/output embeddings, GPT-2 init with the scaled `c_proj` init,
the loss computed inside `forward`, AdamW with weight decay on matrices only, linear warmup then
cosine decay to `min_lr`, gradient clipping, `get_batch` drawing random offsets from a memory-mapped
token file (re-opened per batch, as nanoGPT does), `estimate_loss` over `eval_iters` random batches
of both splits every `eval_interval` iterations (iteration 0 included), a checkpoint whenever the
validation loss improves, one log line per iteration, and the loop running iterations 0..max_iters
inclusive. What it drops, because it does nothing on a CPU: DDP, gradient scaling (nanoGPT's
GradScaler disables itself without CUDA), autocast (a null context on CPU), torch.compile (the
recipe passes --compile=False), MFU estimates and wandb.

The recipe, from nanoGPT's README ("I only have a macbook"):
    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0
Here the text is the bundled sample (English prose) as UTF-8 bytes instead of Shakespeare's
characters, so vocab_size is 256.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- model.py ------------------------------------------------------------------------------------
@dataclass
class GPTConfig:
    block_size: int = 64
    vocab_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # train.py's default, which the shakespeare_char config keeps


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (torch's own had no bias=False when nanoGPT was written)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head, self.n_embd, self.dropout = cfg.n_head, cfg.n_embd, cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg.n_embd, cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=LayerNorm(cfg.n_embd, cfg.bias)))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        tr = self.transformer
        x = tr.drop(tr.wte(idx) + tr.wpe(pos))
        for block in tr.h:
            x = block(x)
        x = tr.ln_f(x)
        if targets is None:  # inference: only the last position's logits
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas, device_type: str):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        extra = {"fused": True} if device_type == "cuda" else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)


# ---- train.py -----------------------------------------------------------------------------------
@dataclass
class RecipeConfig:
    """train.py's globals after config/train_shakespeare_char.py and the CPU command line."""

    out_dir: str = "out-shakespeare-char"
    eval_interval: int = 250
    log_interval: int = 1
    eval_iters: int = 20
    always_save_checkpoint: bool = False
    gradient_accumulation_steps: int = 1
    batch_size: int = 12
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    learning_rate: float = 1e-3
    max_iters: int = 2000
    weight_decay: float = 1e-1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    decay_lr: bool = True
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    min_lr: float = 1e-4
    seed: int = 1337
    vocab_size: int = 256


@dataclass
class RecipeResult:
    iterations: int  # optimizer steps taken (max_iters + 1: nanoGPT's loop is inclusive)
    loop_seconds: float  # wall time of the loop, evaluations and checkpoints included
    step_times: list[float] = field(default_factory=list)  # nanoGPT's per-iteration `dt`
    evals: list[dict] = field(default_factory=list)  # {"iter", "train", "val"}
    final_train_loss: float = float("nan")
    model: GPT | None = None


def write_bins(data_dir: str | os.PathLike, train_text: str, val_text: str) -> Path:
    """The prepare.py step: the text as one token per byte, in train.bin and val.bin."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train_text), ("val", val_text)):
        np.frombuffer(text.encode("utf-8"), dtype=np.uint8).tofile(data_dir / f"{split}.bin")
    (data_dir / "meta.json").write_text(json.dumps({"vocab_size": 256, "tokenizer": "utf-8 bytes"}))
    return data_dir


def lr_at(it: int, c: RecipeConfig) -> float:
    if it < c.warmup_iters:
        return c.learning_rate * (it + 1) / (c.warmup_iters + 1)
    if it > c.lr_decay_iters:
        return c.min_lr
    ratio = (it - c.warmup_iters) / (c.lr_decay_iters - c.warmup_iters)
    return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (c.learning_rate - c.min_lr)


def train(c: RecipeConfig, data_dir: str | os.PathLike, log: Callable[[str], None] = print) -> RecipeResult:
    """The whole recipe: 2001 iterations, as `python train.py ...` runs them."""
    result = RecipeResult(iterations=0, loop_seconds=0.0)
    for _ in iterations(c, data_dir, result, log):
        pass
    return result


def iterations(c: RecipeConfig, data_dir: str | os.PathLike, result: RecipeResult,
               log: Callable[[str], None] = print) -> Iterator[float]:
    """nanoGPT's training loop on CPU, top to bottom. It yields once when set up (0.0) and then after
    each iteration (its `dt`), so a benchmark can interleave it with another loop; `result` is
    filled in as it goes."""
    data_dir = Path(data_dir)
    device = "cpu"
    os.makedirs(c.out_dir, exist_ok=True)
    torch.manual_seed(c.seed)

    def get_batch(split: str):
        # re-created every batch, as nanoGPT does (a memmap kept open leaks memory)
        data = np.memmap(data_dir / f"{split}.bin", dtype=np.uint8, mode="r")
        ix = torch.randint(len(data) - c.block_size, (c.batch_size,))
        x = torch.stack([torch.from_numpy(data[i:i + c.block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + c.block_size].astype(np.int64)) for i in ix])
        return x.to(device), y.to(device)

    model_args = dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.block_size,
                      bias=c.bias, vocab_size=c.vocab_size, dropout=c.dropout)
    model = GPT(GPTConfig(**model_args)).to(device)
    optimizer = model.configure_optimizers(c.weight_decay, c.learning_rate, (c.beta1, c.beta2), device)
    result.model = model

    @torch.no_grad()
    def estimate_loss() -> dict:
        out = {}
        model.eval()
        for split in ("train", "val"):
            losses = torch.zeros(c.eval_iters)
            for k in range(c.eval_iters):
                X, Y = get_batch(split)
                _, loss = model(X, Y)
                losses[k] = loss.item()
            out[split] = losses.mean().item()
        model.train()
        return out

    iter_num, best_val_loss = 0, 1e9
    yield 0.0
    X, Y = get_batch("train")
    t0 = time.time()
    while True:
        lr = lr_at(iter_num, c) if c.decay_lr else c.learning_rate
        for group in optimizer.param_groups:
            group["lr"] = lr
        if iter_num % c.eval_interval == 0:
            losses = estimate_loss()
            result.evals.append({"iter": iter_num, **losses})
            log(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            if losses["val"] < best_val_loss or c.always_save_checkpoint:
                best_val_loss = losses["val"]
                if iter_num > 0:
                    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "model_args": model_args, "iter_num": iter_num,
                                "best_val_loss": best_val_loss, "config": asdict(c)},
                               os.path.join(c.out_dir, "ckpt.pt"))
        for _ in range(c.gradient_accumulation_steps):
            _, loss = model(X, Y)
            loss = loss / c.gradient_accumulation_steps
            X, Y = get_batch("train")  # fetched while (on a GPU) the forward pass runs
            loss.backward()
        if c.grad_clip != 0.0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t1 = time.time()
        dt, t0 = t1 - t0, t1
        if iter_num % c.log_interval == 0:
            lossf = loss.item() * c.gradient_accumulation_steps
            result.final_train_loss = lossf
            log(f"iter {iter_num}: loss {lossf:.4f}, time {dt * 1000:.2f}ms")
        iter_num += 1
        result.iterations = iter_num
        result.step_times.append(dt)
        result.loop_seconds += dt
        yield dt
        if iter_num > c.max_iters:
            return
        t0 = time.time()  # time spent outside this loop (in another contestant) is not ours
