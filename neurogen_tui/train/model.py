"""A GPT-style decoder: pre-norm blocks, causal self-attention, tied embeddings. Nothing else."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 257
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    # LayerNorm biases: off, as in nanoGPT's recipes (a few % of a CPU step for no measurable gain);
    # checkpoints written before this setting existed had them, and resume with them (trainer.py).
    bias: bool = False


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, kv: list | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv is not None:  # generation: keys and values of earlier positions are reused, not recomputed
            if kv:
                k, v = torch.cat([kv[0], k], dim=2), torch.cat([kv[1], v], dim=2)
            kv[:] = [k, v]
        # SDPA picks the fused (flash / memory-efficient) kernel where the device has one.
        # One new query attends to every cached key, so it needs no causal mask.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, kv: list | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), kv)  # pre-norm: the residual stream stays un-normalised
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # Tied embeddings: input and output share one matrix (fewer parameters, better small models)
        self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init keeps the residual stream's variance from growing with depth
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, cache: list[list] | None = None, start: int = 0) -> torch.Tensor:
        """Logits of shape (B, T, vocab) for token ids of shape (B, T). With `cache` (one list per
        block), positions start at `start` and keys/values are kept for the next call."""
        T = idx.shape[1]
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for i, block in enumerate(self.blocks):
            x = block(x, cache[i] if cache is not None else None)
        return self.lm_head(self.ln_f(x))

    @torch.inference_mode()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """The model's continuation, one token at a time: greedy (its most likely next tokens) by
        default, or sampled at `temperature` from the `top_k` most likely (with `generator`, so
        sampling never moves the training's random state).

        A key/value cache makes each new token cost one position, not the whole context: a sample
        every few steps then costs about 1% of training instead of a large fraction of a step."""
        def pick(logits: torch.Tensor) -> torch.Tensor:
            if temperature <= 0:
                return logits.argmax(dim=-1, keepdim=True)
            logits = logits.float() / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)

        idx = idx[:, -self.cfg.block_size:]
        if idx.shape[1] + max_new_tokens - 1 > self.cfg.block_size:  # no room to cache: slide the window
            for _ in range(max_new_tokens):
                logits = self(idx[:, -self.cfg.block_size:])[:, -1, :]
                idx = torch.cat([idx, pick(logits)], dim=1)
            return idx
        cache: list[list] = [[] for _ in self.blocks]
        logits = self(idx, cache)[:, -1, :]
        for i in range(max_new_tokens):
            nxt = pick(logits)
            idx = torch.cat([idx, nxt], dim=1)
            if i + 1 < max_new_tokens:
                logits = self(nxt, cache, start=idx.shape[1] - 1)[:, -1, :]
        return idx

    def configure_optimizer(self, lr: float, weight_decay: float, device_type: str,
                            betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
        # Decoupled weight decay on matrices only; norms and biases are not decayed
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # The fused kernel does the whole update in one pass per parameter group: on a CPU it cut
        # AdamW from ~4.8 to ~1.6 ms of a 70 ms step (benchmarks/results/trainer.md). CPU support
        # came in torch 2.4; where it is missing (older torch, other devices) the loop version runs.
        if device_type in ("cuda", "cpu"):
            try:
                return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
            except (RuntimeError, ValueError):
                pass
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
