#!/usr/bin/env python3
"""Reference timing of GPT-2 generation in Hugging Face transformers, with its KV cache.

This is the peer's side of `cargo xtask bench gpt2`: GPT-2 small's shape (12 blocks of 12
heads, width 768, 50257 tokens, 1024 positions: `GPT2Config()`'s defaults) with random weights,
greedy generation of `--new` tokens after a prompt of `--prompt` random ids, so that the
learner's Rust GPT-2 can be compared with it on one machine and the same number of threads.

Method:
  * PyTorch eager on the CPU, float32, `torch.set_num_threads(--threads)` (1 by default), the
    model `GPT2LMHeadModel(GPT2Config())` in eval mode, its attention transformers' default;
  * `model.generate(ids, max_new_tokens=N, min_new_tokens=N, do_sample=False, use_cache=True)`
    under `torch.inference_mode()`: `min_new_tokens` keeps a random model from stopping at
    `<|endoftext|>`;
  * one untimed run, then `--repeats` timed runs of the whole call (the prompt's pass and every
    new token); tokens/s = N / the median seconds.

Requirements: torch and transformers (a CPU build of torch is enough).

    python3 benches/gpt2_peers.py [--threads 1] [--prompt 16] [--new 64] [--repeats 3]

It prints one JSON line: tokens_per_s, ms_per_token, the runs' seconds, the settings, the
process's peak resident memory (MB) and the package versions.
"""

import argparse
import json
import platform
import resource
import statistics
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    parser.add_argument("--new", type=int, default=64, help="new tokens")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, args.prompt))
    mask = torch.ones_like(ids)

    def run():
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=args.new,
                min_new_tokens=args.new,
                do_sample=False,
                use_cache=True,
                pad_token_id=model.config.eos_token_id,
            )
        seconds = time.perf_counter() - start
        assert out.shape[1] == args.prompt + args.new, out.shape
        return seconds

    run()
    runs = [run() for _ in range(args.repeats)]
    median = statistics.median(runs)
    print(
        json.dumps(
            {
                "tokens_per_s": args.new / median,
                "ms_per_token": 1e3 * median / args.new,
                "runs_s": runs,
                "threads": torch.get_num_threads(),
                "prompt": args.prompt,
                "new": args.new,
                "attention": model.config._attn_implementation,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
