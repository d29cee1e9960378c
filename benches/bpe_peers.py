#!/usr/bin/env python3
"""Reference timings of byte-level BPE in tiktoken and Hugging Face `tokenizers`, on one thread.

This is the peers' side of the Task 8 benchmark: training a 512-token vocabulary on tiny
Shakespeare (GPT-2's split pattern, ids 0..255 the bytes, 256 merges, then the special token
`<|endoftext|>`) and encoding the whole corpus with it, so that the learner's Rust tokenizer
can be compared with them on one machine.

Method:
  * everything runs on one thread: RAYON_NUM_THREADS=1 and TOKENIZERS_PARALLELISM=false are
    set before either library is imported (a single `encode` call is single-threaded anyway);
  * training: `tokenizers`' BpeTrainer (vocab_size 513 with the special token, the ByteLevel
    alphabet as its initial alphabet, ByteLevel pre-tokenizer with GPT-2's regex and no prefix
    space) on the corpus file, timed from `train` to its return; 3 runs, median seconds;
  * encoding: the Shakespeare-512 tokenizer of `task8_bpe.json` (its merges rebuilt into
    bytes, and saved as GPT-2's vocab.json / merges.txt for `tokenizers`), given the whole
    corpus as one string: tiktoken's `encode_ordinary` and `tokenizers`' `Tokenizer.encode`
    (the model's word cache is made fresh, outside the timed region, before each run); one
    untimed run, then 5 timed runs, median; MB/s counts 10^6 bytes of UTF-8 corpus a second;
  * before timing, both encoders must give the same ids on the whole corpus, and the first
    ids must match the fixture's `corpus_prefix`.

Requirements: tiktoken, tokenizers, transformers and regex (those of
`data/fixtures/make_task8_fixture.py`, whose tokenizer code this script reuses).

Usage (from the repository root):

    python3 benches/bpe_peers.py --corpus PATH --fixture data/fixtures/task8_bpe.json

It prints one JSON line: hf_train_s, tiktoken_encode_mb_s, hf_encode_mb_s, the runs behind
each median, the corpus size, the number of leading merges on which `tokenizers`' training
agrees with the fixture's, and the package versions.
"""

import os

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data" / "fixtures"))
import make_task8_fixture as task8  # noqa: E402

TRAIN_RUNS = 3
ENCODE_RUNS = 5


def hf_train(corpus, vocab_size):
    """Train tokenizers' BPE on the corpus file: (seconds, tokenizer)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + 1,
        special_tokens=[task8.SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    start = time.perf_counter()
    tokenizer.train([str(corpus)], trainer)
    return time.perf_counter() - start, tokenizer


def hf_merges_as_bytes(tokenizer):
    """tokenizers' trained merges as pairs of token bytes, in order."""
    to_byte = {c: b for b, c in task8.BYTE_CHAR.items()}
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    pairs = []
    for merge in merges:
        left, right = merge if isinstance(merge, list) else merge.split(" ")
        pairs.append((bytes(to_byte[c] for c in left), bytes(to_byte[c] for c in right)))
    return pairs


def hf_encoder(directory):
    """tokenizers' BPE read from GPT-2's files, as GPT-2's tokenizer sets it up."""
    tokenizer = Tokenizer(
        models.BPE.from_file(f"{directory}/vocab.json", f"{directory}/merges.txt")
    )
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([task8.SPECIAL])
    return tokenizer


def timed(encode, runs, fresh=lambda: None):
    """Median and all seconds of `encode(state)` with `state = fresh()` made outside the timing."""
    encode(fresh())
    seconds = []
    for _ in range(runs):
        state = fresh()
        start = time.perf_counter()
        encode(state)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--corpus", type=Path, required=True, help="tiny Shakespeare's input.txt")
    ap.add_argument("--fixture", type=Path, required=True, help="data/fixtures/task8_bpe.json")
    args = ap.parse_args(argv)

    raw = args.corpus.read_bytes()
    corpus = raw.decode("utf-8")
    fixture = json.loads(args.fixture.read_text(encoding="utf-8"))
    shakespeare = fixture["shakespeare"]
    if hashlib.sha256(raw).hexdigest() != shakespeare["sha256"]:
        sys.exit("the corpus is not the one the fixture was made from")
    merges = [tuple(m) for m in shakespeare["merges"]]
    vocab_size = shakespeare["vocab_size"]
    megabytes = len(raw) / 1e6

    # Training.
    train_seconds = []
    for _ in range(TRAIN_RUNS):
        seconds, trained = hf_train(args.corpus, vocab_size)
        train_seconds.append(seconds)
    vocab = task8.token_bytes(merges)
    ours = [(vocab[l], vocab[r]) for l, r in merges]
    theirs = hf_merges_as_bytes(trained)
    agree = min(len(ours), len(theirs))
    agree = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), agree)

    # Encoding: the same ids first.
    encoding = task8.tiktoken_encoding(merges)
    with tempfile.TemporaryDirectory() as tmp:
        task8.save(tmp, merges)
        ids = encoding.encode_ordinary(corpus)
        if hf_encoder(tmp).encode(corpus).ids != ids:
            sys.exit("tiktoken and tokenizers disagree on the corpus")
        prefix = fixture["corpus_prefix"]["ids"]
        if encoding.encode_ordinary(corpus[: fixture["corpus_prefix"]["chars"]]) != prefix:
            sys.exit("the rebuilt tokenizer does not reproduce the fixture's corpus_prefix")

        tiktoken_s, tiktoken_runs = timed(lambda _: encoding.encode_ordinary(corpus), ENCODE_RUNS)
        hf_s, hf_runs = timed(lambda t: t.encode(corpus), ENCODE_RUNS, lambda: hf_encoder(tmp))

    packages = ["tiktoken", "tokenizers", "transformers", "regex"]
    result = {
        "hf_train_s": statistics.median(train_seconds),
        "tiktoken_encode_mb_s": megabytes / tiktoken_s,
        "hf_encode_mb_s": megabytes / hf_s,
        "hf_train_runs_s": train_seconds,
        "tiktoken_encode_runs_s": tiktoken_runs,
        "hf_encode_runs_s": hf_runs,
        "corpus_bytes": len(raw),
        "corpus_tokens": len(ids),
        "hf_train_merges_agreeing": agree,
        "threads": 1,
        "cpu_count": os.cpu_count(),
        "versions": {"python": platform.python_version()}
        | {p: metadata.version(p) for p in packages},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
