#!/usr/bin/env python3
"""Reference timing of one MiniGPT training step in JAX/Flax (linen).

This is the JAX side of `cargo xtask bench train`: the same Task 1 model
(per-head attention, 4 layers, 4 heads, hidden 128, block 32), the same
batch size (16), the same optimiser (Adam, lr 1e-3) and the same timing
method, so the two figures can be compared on one machine.

Method:
  * batches are sampled outside the timed region;
  * each timed step covers the jitted train step plus `block_until_ready()`
    on the loss, so asynchronous dispatch cannot hide any work;
  * `--warmup` untimed steps run first (they include the jit compile),
    then `--steps` timed steps; we report the median and mean ms/step and
    tokens/s = 16 * 32 / median seconds.

Requirements: jax, flax, optax (CPU builds are fine).

    python3 benches/jax_train_step.py                 # 20 warm-up + 300 timed steps
    python3 benches/jax_train_step.py --json          # also print one JSON line
    python3 benches/jax_train_step.py --eval --steps 500   # sanity check the loss

The corpus is read from $MINIGPT_CORPUS, else
data/tinyshakespeare/input.txt under the repository root.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

BATCH_SIZE = 16
BLOCK_SIZE = 32
HIDDEN = 128
NUM_LAYERS = 4
NUM_HEADS = 4
LEARNING_RATE = 1e-3
EVAL_BATCHES = 100


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------

def corpus_path() -> Path:
    env = os.environ.get("MINIGPT_CORPUS")
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parent.parent
    return repo_root / "data" / "tinyshakespeare" / "input.txt"


def load_data():
    """Character-level encoding; returns (train, val, vocab_size)."""
    text = corpus_path().read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = jnp.array([stoi[c] for c in text], dtype=jnp.int32)
    n = int(0.9 * len(data))
    return data[:n], data[n:], len(chars)


def get_batch(key, data, batch_size, block_size):
    """Random windows: x = data[i:i+T], y = data[i+1:i+T+1]."""
    ix = jax.random.randint(key, (batch_size,), 0, len(data) - block_size)
    offsets = ix[:, None] + jnp.arange(block_size)[None, :]
    return data[offsets], data[offsets + 1]


# ----------------------------------------------------------------------------
# Model (Task 1: one module per attention head)
# ----------------------------------------------------------------------------

class AttentionTask1(nn.Module):
    """Single causal attention head."""
    head_dim: int

    @nn.compact
    def __call__(self, x):
        q = nn.Dense(self.head_dim, use_bias=False, name="query")(x)
        k = nn.Dense(self.head_dim, use_bias=False, name="key")(x)
        v = nn.Dense(self.head_dim, use_bias=False, name="value")(x)
        t = x.shape[-2]
        scores = q @ jnp.swapaxes(k, -1, -2) / jnp.sqrt(self.head_dim)
        mask = jnp.tril(jnp.ones((t, t), dtype=bool))
        scores = jnp.where(mask, scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)
        return weights @ v


class MultiHeadAttention(nn.Module):
    num_heads: int
    head_dim: int

    @nn.compact
    def __call__(self, x):
        heads = [AttentionTask1(self.head_dim)(x) for _ in range(self.num_heads)]
        out = jnp.concatenate(heads, axis=-1)
        return nn.Dense(self.num_heads * self.head_dim)(out)


class FeedForward(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4 * self.hidden)(x)
        x = nn.relu(x)
        return nn.Dense(self.hidden)(x)


class DecoderBlock(nn.Module):
    hidden: int
    num_heads: int

    @nn.compact
    def __call__(self, x):
        head_dim = self.hidden // self.num_heads
        x = x + MultiHeadAttention(self.num_heads, head_dim)(nn.LayerNorm()(x))
        x = x + FeedForward(self.hidden)(nn.LayerNorm()(x))
        return x


class MiniGPT(nn.Module):
    vocab_size: int
    hidden: int = HIDDEN
    block_size: int = BLOCK_SIZE
    num_layers: int = NUM_LAYERS
    num_heads: int = NUM_HEADS

    @nn.compact
    def __call__(self, idx):
        t = idx.shape[-1]
        tok = nn.Embed(self.vocab_size, self.hidden)(idx)
        pos = nn.Embed(self.block_size, self.hidden)(jnp.arange(t))
        x = tok + pos
        for _ in range(self.num_layers):
            x = DecoderBlock(self.hidden, self.num_heads)(x)
        x = nn.LayerNorm()(x)
        return nn.Dense(self.vocab_size)(x)


# ----------------------------------------------------------------------------
# Training step
# ----------------------------------------------------------------------------

def build(vocab_size, seed=0):
    model = MiniGPT(vocab_size)
    dummy = jnp.zeros((BATCH_SIZE, BLOCK_SIZE), dtype=jnp.int32)
    params = model.init(jax.random.PRNGKey(seed), dummy)
    optimizer = optax.adam(LEARNING_RATE)
    opt_state = optimizer.init(params)

    def loss_fn(params, x, y):
        logits = model.apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss

    eval_loss = jax.jit(loss_fn)
    return params, opt_state, train_step, eval_loss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps (include jit compile)")
    ap.add_argument("--steps", type=int, default=300, help="timed steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one final JSON line")
    ap.add_argument("--eval", action="store_true",
                    help=f"after training, print the mean loss over {EVAL_BATCHES} random eval batches")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be at least 1")

    train_data, val_data, vocab_size = load_data()
    params, opt_state, train_step, eval_loss = build(vocab_size, args.seed)
    key = jax.random.PRNGKey(args.seed)

    times_ms = []
    loss = None
    for i in range(args.warmup + args.steps):
        # Sample the batch outside the timed region and make sure it is ready.
        key, sub = jax.random.split(key)
        x, y = get_batch(sub, train_data, BATCH_SIZE, BLOCK_SIZE)
        x.block_until_ready()
        y.block_until_ready()

        start = time.perf_counter()
        params, opt_state, loss = train_step(params, opt_state, x, y)
        loss.block_until_ready()
        elapsed = time.perf_counter() - start
        if i >= args.warmup:
            times_ms.append(elapsed * 1e3)

    median_ms = statistics.median(times_ms)
    mean_ms = statistics.fmean(times_ms)
    tokens_per_s = BATCH_SIZE * BLOCK_SIZE / (median_ms / 1e3)
    last_loss = float(loss)

    print(f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}, "
          f"backend {jax.default_backend()}")
    print(f"os.cpu_count() = {os.cpu_count()}, XLA_FLAGS = {os.environ.get('XLA_FLAGS', '(unset)')!r}")
    print(f"MiniGPT ({NUM_LAYERS} layers, {NUM_HEADS} heads, hidden {HIDDEN}), batch {BATCH_SIZE}, "
          f"block {BLOCK_SIZE}, Adam {LEARNING_RATE}: per-head attention")
    print(f"{args.steps} steps after {args.warmup} warm-up: median {median_ms:.2f} ms/step "
          f"(mean {mean_ms:.2f}), {tokens_per_s:.0f} tokens/s, last loss {last_loss:.3f}")

    result = {
        "ms_per_step": median_ms,
        "mean_ms_per_step": mean_ms,
        "tokens_per_s": tokens_per_s,
        "steps": args.steps,
        "warmup": args.warmup,
        "last_loss": last_loss,
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "backend": jax.default_backend(),
    }

    if args.eval:
        # The challenge's graded measure: mean loss over random validation batches.
        losses = []
        for _ in range(EVAL_BATCHES):
            key, sub = jax.random.split(key)
            x, y = get_batch(sub, val_data, BATCH_SIZE, BLOCK_SIZE)
            losses.append(float(eval_loss(params, x, y)))
        mean_eval = float(np.mean(losses))
        total = args.warmup + args.steps
        print(f"eval loss after {total} training steps: {mean_eval:.4f} "
              f"(mean of {EVAL_BATCHES} batches)")
        result["eval_loss"] = mean_eval
        result["train_steps_total"] = total

    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
