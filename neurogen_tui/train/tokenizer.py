"""Tokenizers: byte-level by default (no files needed), adapters for tokenizer.json and SentencePiece."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .flags import ConfigError


class ByteTokenizer:
    """UTF-8 bytes are tokens 0..255; 256 is end-of-text. Every string round-trips exactly."""

    name = "byte"
    vocab_size = 257
    eot_id = 256

    def encode(self, text: str) -> np.ndarray:
        # uint8 keeps a packed buffer at one byte per token, even for a document of hundreds of MB
        return np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8)

    def decode(self, ids) -> str:
        data = bytes(int(i) for i in ids if 0 <= int(i) < 256)
        return data.decode("utf-8", errors="replace")

    def identity(self) -> dict:
        return {"kind": self.name, "vocab_size": self.vocab_size, "eot_id": self.eot_id}


class HFTokenizer:
    """A Hugging Face `tokenizer.json`, through the `tokenizers` package (extra: hf)."""

    def __init__(self, path: str):
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise ConfigError("--tokenizer tokenizer.json needs `pip install neurogen-tui[hf]`") from exc
        self.path = path
        self._tok = Tokenizer.from_file(path)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        eot = None
        for candidate in ("<|endoftext|>", "</s>", "<eos>", "[SEP]", "<|end_of_text|>"):
            eot = self._tok.token_to_id(candidate)
            if eot is not None:
                break
        if eot is None:  # no end-of-text token: add one past the vocabulary
            eot = self.vocab_size
            self.vocab_size += 1
        self.eot_id = eot
        self.name = "tokenizer.json"

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def decode(self, ids) -> str:
        known = self._tok.get_vocab_size(with_added_tokens=True)
        return self._tok.decode([int(i) for i in ids if int(i) < known])

    def identity(self) -> dict:
        return {"kind": self.name, "vocab_size": self.vocab_size, "eot_id": self.eot_id,
                "sha256": _sha256(self.path)}


class SentencePieceTokenizer:
    """A SentencePiece `.model` file (extra: spm)."""

    def __init__(self, path: str):
        try:
            import sentencepiece as spm
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise ConfigError("--tokenizer *.model needs `pip install neurogen-tui[spm]`") from exc
        self.path = path
        self._sp = spm.SentencePieceProcessor(model_file=path)
        self.vocab_size = self._sp.get_piece_size()
        eos = self._sp.eos_id()
        if eos < 0:
            eos = self.vocab_size
            self.vocab_size += 1
        self.eot_id = eos
        self.name = "sentencepiece"

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text), dtype=np.int32)

    def decode(self, ids) -> str:
        return self._sp.decode([int(i) for i in ids if int(i) < self._sp.get_piece_size()])

    def identity(self) -> dict:
        return {"kind": self.name, "vocab_size": self.vocab_size, "eot_id": self.eot_id,
                "sha256": _sha256(self.path)}


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


NAMES = {"byte": ByteTokenizer}  # tokenizers --tokenizer takes by name; anything else is a file


def load_tokenizer(path: str | None):
    """None or `byte`: the byte tokenizer; a .json file a HF tokenizer; a .model file SentencePiece."""
    if not path or path in NAMES:
        return NAMES.get(path or "byte")()
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".json":
            return HFTokenizer(path)
        if suffix == ".model":
            return SentencePieceTokenizer(path)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"--tokenizer: cannot load {path}: {exc}") from exc
    raise ConfigError(f"--tokenizer: expected a tokenizer.json or a SentencePiece .model file, got {path}")
