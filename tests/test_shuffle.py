"""Shuffled batches (#16): a step samples many documents, the position stays exact and small, ranks
stay disjoint; the optimizer's betas and the tokenizer by name; a finite dataset says when it ends."""
import io
import random

import pytest
import torch

from conftest import write_jsonl_zst
from neurogen_tui.train.batches import BatchStream
from neurogen_tui.train.checkpoint import load_checkpoint
from neurogen_tui.cli.entry import main
from neurogen_tui.train.data import DocumentStream, open_local, pass_tokens
from neurogen_tui.run.files import read_jsonl
from neurogen_tui.train.tokenizer import ByteTokenizer

SEQ = 16


@pytest.fixture
def books(tmp_path):
    """Six long documents, each of one letter repeated: a block's letter says which it came from."""
    docs = [{"text": letter * 3000} for letter in "abcdef"]
    return write_jsonl_zst(tmp_path / "books.jsonl.zst", docs)


def stream(path, window, state=None, rank=0, world_size=1, batch=8, epochs=1):
    state = state or {}
    docs = DocumentStream(lambda: open_local([str(path)]), start=int(state.get("index", 0)), epochs=epochs,
                          epoch=int(state.get("epoch", 0)), rank=rank, world_size=world_size,
                          by_shard=state.get("by_shard") if state else None)
    return BatchStream(docs, ByteTokenizer(), SEQ, batch, window=window, seed=7, rank=rank, state=state)


def letters(x: torch.Tensor) -> set[str]:
    return {chr(int(v)) for v in x.flatten() if int(v) < 256}


def drain(s) -> list[tuple[int, ...]]:
    out = []
    while (batch := s.next_batch()) is not None:
        x, y = batch
        out += [tuple(row) for row in torch.cat([x, y[:, -1:]], dim=1).tolist()]
    return out


def test_a_shuffled_batch_holds_blocks_of_many_documents_and_a_sequential_one_of_one(books):
    x, _ = stream(books, window=1 << 16).next_batch()
    assert len({frozenset(letters(row)) for row in x}) >= 4  # blocks from all over the window
    x, _ = stream(books, window=0).next_batch()
    assert letters(x) == {"a"}  # the stream's order: one passage of one document


@pytest.fixture
def prose(tmp_path):
    """Documents of random letters, so a block's tokens say where in the stream it was cut."""
    rng = random.Random(3)
    docs = ["".join(rng.choice("abcdefghij ") for _ in range(rng.randrange(50, 900))) for _ in range(12)]
    return write_jsonl_zst(tmp_path / "prose.jsonl.zst", [{"text": d} for d in docs]), docs


def cuts(blocks, tokens) -> tuple[int, bool]:
    """The offset at which `blocks` tile `tokens` (each block seq_len + 1 tokens, one shared with the
    next), asserting that they do, each once, leaving out fewer than a block at either end; and
    whether they came in the stream's own order."""
    found = [next(i for i in range(len(tokens)) if tokens[i:i + SEQ + 1] == list(b)) for b in blocks]
    starts = sorted(found)
    offset = starts[0]
    assert starts == list(range(offset, offset + SEQ * len(starts), SEQ)) and offset < SEQ
    assert len(tokens) - (starts[-1] + SEQ + 1) < SEQ
    return offset, found == starts


def test_shuffling_trains_every_block_of_an_epoch_once_and_each_epoch_is_cut_afresh(prose):
    """A window larger than the data ends with its epoch; each epoch's blocks tile the stream once,
    cut at an offset of its own, so a second pass trains on other blocks than the first."""
    path, docs = prose
    tokens = [t for d in docs for t in [*ByteTokenizer().encode(d).tolist(), ByteTokenizer().eot_id]]
    for window in (4096, 1 << 20):
        runs = [drain(stream(path, window=window, batch=1, epochs=n)) for n in (1, 2, 3)]
        assert runs[2][:len(runs[1])] == runs[1] and runs[1][:len(runs[0])] == runs[0]  # deterministic
        ends = [0, *map(len, runs)]
        epochs = [runs[2][a:b] for a, b in zip(ends, ends[1:])]
        cut = [cuts(e, tokens) for e in epochs]
        assert all(len(e) >= len(tokens) // SEQ - 1 for e in epochs) and not any(ordered for _, ordered in cut)
        assert len({offset for offset, _ in cut}) > 1  # the epochs are cut apart (seeded: the same in every run)
    sequential = drain(stream(path, window=0, batch=1))
    assert cuts(sequential, tokens) == (0, True)  # the stream's own order, cut at its start


def test_the_position_survives_a_checkpoint_and_resumes_the_same_blocks(books, tmp_path):
    """Across window boundaries (small windows), with blocks given back by a step that did not happen."""
    first = stream(books, window=2048)
    for _ in range(11):
        first.next_batch()
    taken = [first.next_batch(), first.next_batch()]
    first.unread(taken)  # a pause: the step's batches go back
    saved = tmp_path / "position.pt"
    torch.save(first.state(), saved)
    state = torch.load(saved, weights_only=True)
    assert set(state["shuffle"]) == {"window", "taken", "tokens", "offset", "after_epoch"} and len(state["leftover"]) <= SEQ
    assert drain(stream(books, window=2048, state=state)) == drain(first)


def test_a_resume_anywhere_in_a_second_epoch_goes_on_with_the_same_blocks(prose, tmp_path):
    """Around the epoch boundary too, where the next epoch's own cut begins."""
    path, _ = prose
    whole = drain(stream(path, window=1024, batch=1, epochs=2))
    first_epoch = len(drain(stream(path, window=1024, batch=1)))
    for n in (1, 70, first_epoch - 1, first_epoch, first_epoch + 1, first_epoch + 60):
        run = stream(path, window=1024, batch=1, epochs=2)
        for _ in range(n):
            run.next_batch()
        torch.save(run.state(), tmp_path / "position.pt")
        state = torch.load(tmp_path / "position.pt", weights_only=True)
        assert drain(stream(path, window=1024, batch=1, epochs=2, state=state)) == whole[n:], n


def test_ranks_shuffle_disjoint_shares_of_the_documents(books):
    ranks = [drain(stream(books, window=1 << 16, rank=r, world_size=2)) for r in range(2)]
    seen = [set().union(*(set(chr(v) for v in block if v < 256) for block in blocks)) for blocks in ranks]
    assert seen[0] == {"a", "c", "e"} and seen[1] == {"b", "d", "f"}  # every other document, each rank its own


def test_the_betas_and_the_shuffle_window_are_flags_kept_in_checkpoints(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--test", "--headless", "--run-dir", str(run), "--beta1", "0.8", "--beta2", "0.99",
                 "--tokenizer", "byte", "--shuffle-buffer", "4096"]) == 0
    state = load_checkpoint(run / "checkpoints" / "checkpoint_step_000005.pt")
    assert (state["config"]["beta1"], state["config"]["beta2"]) == (0.8, 0.99)
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.99)
    assert state["data"]["shuffle"]["tokens"] == 4096 and state["tokenizer"]["kind"] == "byte"
    for bad, needle in ((["--beta2", "1.0"], "--beta2 must be in [0, 1)"),
                        (["--tokenizer", "bpe"], "--tokenizer: file not found: bpe (nor a name: byte)")):
        assert main(["--test", "--headless", "--run-dir", str(tmp_path / "bad"), *bad]) == 2
        assert needle in capsys.readouterr().err


def test_help_names_the_tokenizers():
    from neurogen_tui.cli.entry import build_parser

    out = io.StringIO()
    build_parser().print_help(out)
    assert "byte (UTF-8 bytes and an end-of-text token)" in out.getvalue() and "(default: byte)" in out.getvalue()


def test_a_finite_dataset_says_at_the_start_when_it_will_run_out_and_at_the_end_where(books, tmp_path, capsys):
    tokens = pass_tokens([str(books)], ByteTokenizer())
    assert tokens == pytest.approx(6 * 3001, rel=0.1)  # the documents' bytes and end-of-text tokens
    run = tmp_path / "run"
    assert main(["--headless", "--model", "tiny", "--data-files", str(books), "--tokens-per-chunk", "512",
                 "--eval-iters", "1", "--max-chunks", "1000", "--run-dir", str(run)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    steps = len(read_jsonl(run / "training_viz" / "metrics.jsonl")[0])
    assert "of the 1,000 asked for; --epochs 0 goes round the data until then" in out
    assert f"data exhausted at step {steps} of 1000" in out and steps < 1000
    estimate = int(out.split("near step ")[1].split()[0].replace(",", ""))
    assert estimate == pytest.approx(steps, rel=0.25)  # an estimate, but a fair one


def test_the_app_says_where_a_finite_dataset_ran_out(books, tmp_path):
    """The log pane of the real app over a tiny run on six documents."""
    from test_app import live_app, log_text, make_cfg, run, stop_and_wait_exit, wait_for

    cfg = make_cfg(tmp_path, data_files=str(books), val_data_files=str(books), epochs=1, max_chunks=500,
                   tokens_per_chunk=512, eval_iters=1)

    async def scenario():
        app, parts = live_app(cfg)
        async with app.run_test(size=(140, 45)) as pilot:
            await wait_for(pilot, lambda: "data exhausted" in log_text(app), "the early end in the log")
            log = log_text(app)
            await stop_and_wait_exit(pilot, app)
        return log, parts.trainer.step

    log, steps = run(scenario())
    assert f"data exhausted at step {steps} of 500" in log and steps < 500
    assert "--epochs 0 goes round the data until then" in " ".join(log.split())  # said at the start too
