//! `cargo xtask attention`: what every head of a trained MiniGPT looks at, for one prompt.
//!
//! The attention weights are recomputed in f64 from the checkpoint's parameters (the checks'
//! reference code), layer by layer, and drawn as a grid of heatmaps: one row per layer, one
//! column per head, the prompt's characters on both axes.

use crate::models::Tracer;
use crate::{checkpoint, models};
use kit::{GptConfig, SeededVarMap};
use std::fmt::Write as _;
use std::process::ExitCode;
use workbook::cli::AttentionArgs;
use workbook::tasks::{self, ModelCommand, TaskList};

/// `[layer][head]` → (T × T) attention weights, row = query position.
pub type Maps = Vec<Vec<Vec<f64>>>;

/// Runs the model on `ids` (one sequence) and returns every head's attention weights, from
/// the checks' reference forward pass.
pub fn attention_maps(params: &SeededVarMap, cfg: &GptConfig, ids: &[u32], trace: &Tracer) -> Maps {
    let mut maps: Maps = vec![vec![Vec::new(); cfg.num_heads]; cfg.num_layers];
    trace(params, cfg, ids, &mut |layer, head, _, weights| {
        maps[layer][head] = weights.to_vec();
    });
    maps
}

fn escape(ch: char) -> String {
    match ch {
        '\n' => "⏎".into(),
        ' ' => "␣".into(),
        '<' => "&lt;".into(),
        '>' => "&gt;".into(),
        '&' => "&amp;".into(),
        '"' => "&quot;".into(),
        c => c.to_string(),
    }
}

/// The grid of heatmaps as SVG.
pub fn render(maps: &Maps, chars: &[char], title: &str) -> String {
    let t = chars.len();
    let layers = maps.len();
    let heads = maps.first().map_or(0, |l| l.len());
    let cell = (360.0 / t as f64).clamp(6.0, 22.0);
    let side = cell * t as f64;
    let (margin, gap, head_h) = (24.0, 36.0, 22.0);
    let panel_w = side + margin + gap;
    let panel_h = side + margin + head_h + gap;
    let (w, h) = (panel_w * heads as f64 + gap, panel_h * layers as f64 + 50.0);
    let font = (cell * 0.7).clamp(6.0, 13.0);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" font-family="monospace" font-size="{font:.1}">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.0}" y="26" font-size="16" font-family="sans-serif" text-anchor="middle">{}</text>"#,
        w / 2.0,
        escape_str(title)
    );
    for (l, layer) in maps.iter().enumerate() {
        for (hd, a) in layer.iter().enumerate() {
            let x0 = gap + panel_w * hd as f64 + margin;
            let y0 = 50.0 + panel_h * l as f64 + head_h + margin;
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="12">layer {l}, head {hd}</text>"#,
                x0,
                y0 - margin - 6.0
            );
            for i in 0..t {
                for j in 0..=i {
                    let v = a[i * t + j].clamp(0.0, 1.0);
                    // White (0) to dark blue (1).
                    let (r, g, b) = (
                        255.0 * (1.0 - v),
                        255.0 * (1.0 - 0.8 * v),
                        255.0 * (1.0 - 0.4 * v),
                    );
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{:.1}" y="{:.1}" width="{cell:.1}" height="{cell:.1}" fill="rgb({r:.0},{g:.0},{b:.0})"><title>{} → {}: {v:.3}</title></rect>"#,
                        x0 + cell * j as f64,
                        y0 + cell * i as f64,
                        escape(chars[i]),
                        escape(chars[j])
                    );
                }
            }
            let _ = writeln!(
                svg,
                r##"<rect x="{x0:.1}" y="{y0:.1}" width="{side:.1}" height="{side:.1}" fill="none" stroke="#999"/>"##
            );
            for (k, &ch) in chars.iter().enumerate() {
                let c = escape(ch);
                let mid = cell * k as f64 + cell / 2.0;
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{c}</text>"#,
                    x0 - 3.0,
                    y0 + mid + font / 3.0
                );
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{c}</text>"#,
                    x0 + mid,
                    y0 - 4.0
                );
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// XML-escaped text (spaces kept).
fn escape_str(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn run(args: AttentionArgs) -> anyhow::Result<ExitCode> {
    let loaded = checkpoint::load(&args.checkpoint)?;
    let task = &loaded.meta.task;
    let Some(trace) = models::attention_tracer(task) else {
        let list = TaskList::here()?;
        let drawn = list
            .tasks
            .iter()
            .filter(|t| t.allows(ModelCommand::Attention));
        anyhow::bail!(
            "the {task} model has no attention heads to draw: use a checkpoint of {}",
            tasks::or_list(drawn.map(|t| t.name.as_str()))
        )
    };
    let ids = loaded.tokenizer.encode_text(&args.prompt)?;
    anyhow::ensure!(
        !ids.is_empty(),
        "the prompt is empty: give at least one character"
    );
    let block = loaded.meta.model.block_size;
    if ids.len() > block {
        println!(
            "The prompt has {} characters and the model sees at most {block}: drawing the last {block}.",
            ids.len()
        );
    }
    let ids = &ids[ids.len().saturating_sub(block)..];
    let chars: Vec<char> = ids
        .iter()
        .filter_map(|&i| loaded.tokenizer.decode_text(&[i]).chars().next())
        .collect();
    let maps = attention_maps(&loaded.params, &loaded.meta.model, ids, &trace);
    let shown: String = chars
        .iter()
        .map(|&c| if c == '\n' { '⏎' } else { c })
        .collect();
    let title = format!("What each head attends to: \"{shown}\" (row: query, column: key)");
    let out = args.out.unwrap_or_else(|| loaded.dir.join("attention.svg"));
    workbook::files::write_atomically(&out, render(&maps, &chars, &title).as_bytes())?;
    println!(
        "Attention of {} layers × {} heads over {} characters: {}",
        maps.len(),
        maps[0].len(),
        chars.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_every_map_is_a_causal_distribution() {
        let cfg = GptConfig {
            vocab_size: 10,
            hidden: 8,
            block_size: 6,
            num_layers: 2,
            num_heads: 2,
        };
        let params = SeededVarMap::new(3);
        // Build the parameters with Task 1's names through the reference model.
        let vb = params.var_builder(&candle_core::Device::Cpu);
        let _model = solutions::task1::MiniGPT::new(cfg, vb).unwrap();
        let trace = crate::models::attention_tracer("task1").expect("Task 1's heads");
        let maps = attention_maps(&params, &cfg, &[1, 2, 3, 4, 5], &trace);
        assert_eq!((maps.len(), maps[0].len()), (2, 2));
        for a in maps.iter().flatten() {
            for i in 0..5 {
                let row = &a[i * 5..(i + 1) * 5];
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-9);
                assert!(row[i + 1..].iter().all(|&v| v == 0.0));
            }
        }
        let svg = render(&maps, &['a', 'b', '<', ' ', '\n'], "t");
        assert!(svg.contains("layer 1, head 1") && svg.contains("&lt;") && svg.contains("⏎"));
    }
}
