"""Tokenizer round trips and packing: no token lost except a final partial block."""
import numpy as np
import pytest

from neurogen_tui.train.batches import BatchStream, Packer
from neurogen_tui.train.data import DocumentStream
from neurogen_tui.train.tokenizer import ByteTokenizer, load_tokenizer

TEXTS = ["plain ascii", "café naïve Zoë — “quotes”", "東京 and Kraków 🚀", "tab\tnewline\n\x00nul"]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_tokenizer_round_trips_non_ascii(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.max(initial=0) < 256
    assert tok.decode(ids) == text
    assert tok.decode(list(ids) + [tok.eot_id]) == text  # EOT is not text


def test_hf_tokenizer_json_round_trip(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers, decoders

    tk = tokenizers.Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(TEXTS * 20, trainer)
    path = tmp_path / "tokenizer.json"
    tk.save(str(path))
    tok = load_tokenizer(str(path))
    assert tok.eot_id == tk.token_to_id("<|endoftext|>")
    for text in TEXTS[:3]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.identity()["sha256"]


def test_sentencepiece_model_round_trip(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS[:3] * 50 + ["the quick brown fox jumps over the lazy dog"] * 50))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=300, hard_vocab_limit=False,
                                   character_coverage=1.0, byte_fallback=True)
    tok = load_tokenizer(str(tmp_path / "sp.model"))
    assert tok.decode(tok.encode("the quick brown fox")) == "the quick brown fox"
    assert tok.eot_id >= 0


def test_unknown_tokenizer_file_is_a_config_error(tmp_path):
    from neurogen_tui.train.config import ConfigError

    bad = tmp_path / "vocab.bin"
    bad.write_bytes(b"\x00")
    with pytest.raises(ConfigError, match="expected a tokenizer.json"):
        load_tokenizer(str(bad))


def test_packer_keeps_every_token_and_separates_documents():
    docs = [np.arange(10, 10 + n, dtype=np.int32) for n in (5, 17, 3, 40)]
    packer = Packer(seq_len=8, eot_id=999)
    stream = []
    for d in docs:
        packer.add(d)
        stream.extend(d.tolist() + [999])
    blocks = []
    while (b := packer.take()) is not None:
        blocks.append(b)
    # consecutive blocks overlap by one token, so together they cover the stream exactly
    covered = [t for b in blocks for t in b[:-1].tolist()] + packer.leftover().tolist()
    assert covered == stream
    assert all(len(b) == 9 for b in blocks)
    assert stream.count(999) == len(docs)
    assert len(packer.leftover()) < 9  # only a final partial block remains


def test_packer_state_round_trip_continues_identically():
    tok = ByteTokenizer()
    a = Packer(seq_len=16, eot_id=tok.eot_id)
    for text in ("héllo wörld " * 5, "second document"):
        a.add(tok.encode(text))
    a.take()
    b = Packer(seq_len=16, eot_id=tok.eot_id, leftover=a.leftover())
    while (x := a.take()) is not None:
        assert np.array_equal(x, b.take())
    assert b.take() is None


class ListDataset(list):
    def skip(self, n):
        return ListDataset(self[n:])


def test_empty_and_non_text_documents_are_skipped_and_counted():
    records = [{"text": "one"}, {"text": ""}, {"text": "   "}, {"text": 5}, {"other": "x"}, {"text": "two"}]
    docs = DocumentStream(lambda: ListDataset(records), on_warning=lambda m: None)
    assert list(docs) == ["one", "two"]
    assert docs.stats.skipped == 4 and docs.stats.documents == 2
    assert docs.index == len(records)


def test_batch_stream_shapes_and_targets_are_shifted_inputs():
    records = [{"text": "abcdefghij" * 20}] * 5
    docs = DocumentStream(lambda: ListDataset(records))
    stream = BatchStream(docs, ByteTokenizer(), seq_len=16, batch_size=4)
    x, y = stream.next_batch()
    assert x.shape == y.shape == (4, 16)
    assert (x[:, 1:] == y[:, :-1]).all()
    assert x[0, 0].item() == ord("a")
