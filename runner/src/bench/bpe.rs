//! `bench bpe`: Task 8's trainer and encoder against Hugging Face's tokenizers and tiktoken.

use super::{machine, median};
use anyhow::Context as _;
use kit::bpe::{self, END_OF_TEXT, Pair};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, Model, NormalizerWrapper, PostProcessorWrapper, Tokenizer,
    TokenizerImpl,
};
use workbook::cli::BenchBpeArgs;

/// The vocabulary trained, before `<|endoftext|>`: the 256 bytes and 256 merges.
const VOCAB: usize = 512;

/// The Python packages `benches/bpe_peers.py` imports.
const PEER_MODULES: &str = "tiktoken, tokenizers, transformers, regex";

/// What `bench bpe` needs of a Task 8 file: the learner's or the reference solution's.
trait Task8: Sized {
    fn train(text: &str, vocab_size: usize) -> Self;
    fn encode(&self, text: &str) -> Vec<u32>;
    fn merges(&self) -> Vec<Pair>;
    /// The merges of a trainer that counts every pair again after each merge, built from the
    /// file's own `words`, `pair_counts`, `best_pair` and `merge`.
    fn recounting_train(text: &str, vocab_size: usize) -> Vec<Pair>;
}

macro_rules! task8 {
    ($file:ident) => {
        impl Task8 for $file::task8::Bpe {
            fn train(text: &str, vocab_size: usize) -> Self {
                Self::train(text, vocab_size)
            }
            fn encode(&self, text: &str) -> Vec<u32> {
                Self::encode(self, text)
            }
            fn merges(&self) -> Vec<Pair> {
                Self::merges(self)
            }
            fn recounting_train(text: &str, vocab_size: usize) -> Vec<Pair> {
                use $file::task8::{best_pair, merge, pair_counts, words};
                let mut words = words(text);
                let mut merges = Vec::new();
                while 256 + merges.len() < vocab_size {
                    let Some(pair) = best_pair(&pair_counts(&words)) else {
                        break;
                    };
                    let id = (256 + merges.len()) as u32;
                    for word in &mut words {
                        word.tokens = merge(&word.tokens, pair, id);
                    }
                    merges.push(pair);
                }
                merges
            }
        }
    };
}

task8!(solutions);
task8!(exercises);

/// Training 512 ids on tiny Shakespeare and encoding it, one thread: Task 8's `Bpe` (the
/// learner's with `--yours`, else the reference solution's), two trainers that count every
/// pair again after each merge, and Hugging Face's tokenizers as built here; beside them, when
/// a Python with tiktoken is found, `benches/bpe_peers.py`'s figures of tiktoken and of
/// tokenizers' Python package.
pub(super) fn run(args: BenchBpeArgs, json: bool) -> anyhow::Result<ExitCode> {
    // tokenizers spreads its work over rayon's threads unless told not to: one thread, as
    // Task 8's code and tiktoken's `encode`.
    tokenizers::parallelism::set_parallelism(false);
    let (path, _) = workbook::corpus::configured_path()?;
    let text = workbook::corpus::load()?;
    let whose = if args.yours {
        "yours (exercises/src/task8.rs)"
    } else {
        "the reference solution's (--yours times your own)"
    };
    println!(
        "Byte-level BPE on tiny Shakespeare ({:.2} MB): {VOCAB} ids and {END_OF_TEXT}, one \
         thread; median of {} runs after one untimed. Bpe::train and Bpe::encode timed: {whose}",
        text.len() as f64 / 1e6,
        args.repeats
    );
    println!("Machine: {}", machine());
    let ours = if args.yours {
        measure::<exercises::task8::Bpe>(&text, &path, args.repeats)?
    } else {
        measure::<solutions::task8::Bpe>(&text, &path, args.repeats)?
    };
    let peers = python_peers(&path);
    print_table(&ours, peers.as_ref().ok());
    if let Err(why) = &peers {
        println!("Python's figures: {why}");
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "train_s": ours.train_s,
                "plain_train_s": ours.plain_train_s,
                "recounting_train_s": ours.recounting_train_s,
                "hf_rust_train_s": ours.hf_train_s,
                "encode_mb_s": ours.encode_mb_s,
                "hf_rust_encode_mb_s": ours.hf_encode_mb_s,
                "merges_as_plain_trainer": ours.same_merges_as_plain,
                "hf_rust_train_merges_agreeing": ours.hf_merges_agreeing,
                "python": peers.ok(),
                "repeats": args.repeats,
                "tokenizer": if args.yours { "yours" } else { "reference" },
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What `bench bpe` measured in this process.
struct Figures {
    /// Median seconds to train 512 ids: Task 8's `Bpe::train`; the checks' plain trainer and
    /// the same loop over Task 8's own functions, both counting every pair again after each
    /// merge; tokenizers'.
    train_s: f64,
    plain_train_s: f64,
    recounting_train_s: f64,
    hf_train_s: f64,
    /// Median MB/s (10^6 bytes of the corpus a second) encoding the corpus: `Bpe::encode`, and
    /// tokenizers reading the same merges.
    encode_mb_s: f64,
    hf_encode_mb_s: f64,
    /// Whether `Bpe::train` and the recounting loop learnt the plain trainer's merges, and how
    /// many of tokenizers'
    /// first merges are theirs (tokenizers cuts the text at every newline before GPT-2's
    /// pattern, so a few runs of blank lines count otherwise).
    same_merges_as_plain: bool,
    hf_merges_agreeing: usize,
}

/// The four trainers and the two encoders, timed.
fn measure<B: Task8>(text: &str, path: &Path, repeats: u64) -> anyhow::Result<Figures> {
    let (train_s, bpe) = seconds(repeats, || (), |()| B::train(text, VOCAB));
    let merges = bpe.merges();
    let (plain_train_s, plain) = seconds(repeats, || (), |()| reference::bpe::train(text, VOCAB));
    let (recounting_train_s, recounted) =
        seconds(repeats, || (), |()| B::recounting_train(text, VOCAB));

    let corpus = path.to_str().context("the corpus's path is not UTF-8")?;
    let (hf_train_s, hf) = seconds(repeats, hf_trainee, |mut hf| {
        hf_train(&mut hf, corpus).expect("tokenizers trains on the corpus");
        hf
    });
    let hf_merges_agreeing = hf_merges_agreeing(hf.get_model(), &merges)?;

    // tokenizers reads the merges Bpe::train learnt, written as GPT-2's files by the reference
    // solution (so that `--yours` needs only train and encode).
    let dir = tempfile::tempdir()?;
    solutions::task8::Bpe::from_merges(&merges).save(dir.path())?;
    // The same ids first.
    let ids = bpe.encode(text);
    let theirs = hf_encoder(dir.path())?
        .encode(text, true)
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        theirs.get_ids() == ids,
        "Bpe::encode and Hugging Face's tokenizers, with the same merges, write the corpus \
         as different ids: `cargo xtask check task8` finds where"
    );
    let megabytes = text.len() as f64 / 1e6;
    let (encode_s, _) = seconds(repeats, || (), |()| bpe.encode(text));
    // A fresh tokenizer each run, made outside the timing: its BPE keeps a cache of the words
    // it encoded, which would make every run after the first a run of look-ups.
    let (hf_encode_s, _) = seconds(
        repeats,
        || hf_encoder(dir.path()).expect("tokenizers reads the files it read before"),
        |hf| {
            hf.encode(text, true)
                .expect("tokenizers encodes the corpus")
        },
    );
    Ok(Figures {
        train_s,
        plain_train_s,
        recounting_train_s,
        hf_train_s,
        encode_mb_s: megabytes / encode_s,
        hf_encode_mb_s: megabytes / hf_encode_s,
        same_merges_as_plain: merges == plain && recounted == plain,
        hf_merges_agreeing,
    })
}

/// Median seconds of `f(fresh())` over `repeats` runs after one untimed, `fresh()` outside the
/// timing, and what the untimed run returned.
fn seconds<S, T>(
    repeats: u64,
    mut fresh: impl FnMut() -> S,
    mut f: impl FnMut(S) -> T,
) -> (f64, T) {
    let first = f(fresh());
    let mut times = Vec::with_capacity(repeats as usize);
    for _ in 0..repeats {
        let state = fresh();
        let start = Instant::now();
        let out = f(state);
        times.push(start.elapsed().as_secs_f64());
        // Freed after the clock stops.
        drop(out);
    }
    (median(&mut times), first)
}

type HfTrainee =
    TokenizerImpl<BPE, NormalizerWrapper, ByteLevel, PostProcessorWrapper, DecoderWrapper>;

/// An untrained tokenizers BPE with GPT-2's pre-tokenizer, no space added before the text.
fn hf_trainee() -> HfTrainee {
    let mut hf = TokenizerImpl::new(BPE::default());
    hf.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    hf
}

/// tokenizers' trainer on the corpus file, as `benches/bpe_peers.py` runs it from Python:
/// 512 ids and `<|endoftext|>`, every byte in the alphabet from the start.
fn hf_train(hf: &mut HfTrainee, corpus: &str) -> anyhow::Result<()> {
    let mut trainer = BpeTrainer::builder()
        .vocab_size(VOCAB + 1)
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .show_progress(false)
        .build();
    hf.train_from_files(&mut trainer, vec![corpus.to_string()])
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

/// How many of the first merges tokenizers learnt are `merges`, in order.
fn hf_merges_agreeing(model: &BPE, merges: &[Pair]) -> anyhow::Result<usize> {
    let dir = tempfile::tempdir()?;
    model.save(dir.path(), None).map_err(anyhow::Error::msg)?;
    let theirs = bpe::read_merges(&dir.path().join("merges.txt"))?;
    let ours = solutions::task8::Bpe::from_merges(merges);
    let text = |id: u32| -> String {
        let bytes = ours.token(id).expect("a merge's token");
        bytes.iter().map(|&b| bpe::byte_char(b)).collect()
    };
    Ok(merges
        .iter()
        .zip(&theirs)
        .take_while(|&(&(l, r), (tl, tr))| text(l) == *tl && text(r) == *tr)
        .count())
}

/// tokenizers' BPE read from GPT-2's files in `dir`, set up as GPT-2's tokenizer.
fn hf_encoder(dir: &Path) -> anyhow::Result<Tokenizer> {
    let file = |name: &str| -> anyhow::Result<String> {
        Ok(dir
            .join(name)
            .to_str()
            .context("a temporary path in UTF-8")?
            .to_string())
    };
    let model = BPE::from_file(&file("vocab.json")?, &file("merges.txt")?)
        .build()
        .map_err(anyhow::Error::msg)?;
    let mut hf = Tokenizer::new(model);
    hf.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    hf.add_special_tokens([AddedToken::from(END_OF_TEXT, true)])
        .map_err(anyhow::Error::msg)?;
    Ok(hf)
}

/// `benches/bpe_peers.py`'s JSON line; why not, if it could not run.
fn python_peers(corpus: &Path) -> Result<serde_json::Value, String> {
    let fixture = workbook::workspace_root().join("data/fixtures/task8_bpe.json");
    let args = [
        "--corpus".to_string(),
        corpus.display().to_string(),
        "--fixture".to_string(),
        fixture.display().to_string(),
    ];
    super::python_peer("bpe_peers.py", PEER_MODULES, &args)
}

/// The table, Python's figures beside this process's when there are some, and the ratios the
/// targets are about.
fn print_table(ours: &Figures, python: Option<&serde_json::Value>) {
    let field = |name: &str| python.and_then(|p| p[name].as_f64());
    let (py_train, tiktoken, py_encode) = (
        field("hf_train_s"),
        field("tiktoken_encode_mb_s"),
        field("hf_encode_mb_s"),
    );
    let row = |name: &str, value: Option<f64>, unit: &str| match value {
        Some(v) => println!("  {name:<66} {v:>8.3} {unit}"),
        None => println!("  {name:<66} {:>8} {unit}", "-"),
    };
    println!("Training {VOCAB} ids");
    row("Bpe::train", Some(ours.train_s), "s");
    row(
        "counting every pair again after each merge: the checks' trainer",
        Some(ours.plain_train_s),
        "s",
    );
    row(
        "  the same loop over Task 8's words, pair_counts, best_pair, merge",
        Some(ours.recounting_train_s),
        "s",
    );
    row("Hugging Face tokenizers, Python", py_train, "s");
    row(
        "Hugging Face tokenizers, Rust, built unoptimised here",
        Some(ours.hf_train_s),
        "s",
    );
    println!("Encoding the corpus");
    row("Bpe::encode", Some(ours.encode_mb_s), "MB/s");
    row("tiktoken, Python", tiktoken, "MB/s");
    row("Hugging Face tokenizers, Python", py_encode, "MB/s");
    row(
        "Hugging Face tokenizers, Rust, built unoptimised here",
        Some(ours.hf_encode_mb_s),
        "MB/s",
    );
    let ratio =
        |r: Option<f64>| r.map_or("- (no Python figures)".to_string(), |r| format!("{r:.2}"));
    println!(
        "Bpe::train's time / tokenizers' trainer's, Python (target: 1 or less): {}",
        ratio(py_train.map(|t| ours.train_s / t))
    );
    println!(
        "Bpe::encode's MB/s / tiktoken's (target: 0.5 or more): {}",
        ratio(tiktoken.map(|t| ours.encode_mb_s / t))
    );
    println!(
        "Counting every pair again after each merge takes {:.0}x (the checks' trainer) and \
         {:.0}x (Task 8's functions) Bpe::train's time.",
        ours.plain_train_s / ours.train_s,
        ours.recounting_train_s / ours.train_s
    );
    println!(
        "The workbook builds the tokenizers crate without optimisation (candle brings it in); \
         its Python package is the same Rust, optimised: the targets are against it and \
         tiktoken."
    );
    println!(
        "Bpe::train and both recounting trainers learnt the same merges: {}; tokenizers' first \
         {} merges are these (it cuts the text at every newline first).",
        if ours.same_merges_as_plain {
            "yes"
        } else {
            "NO"
        },
        ours.hf_merges_agreeing
    );
}
