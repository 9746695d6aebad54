//! `aon quantize IN.onnx --calib FILE -o OUT.onnx`: the aon quantize stage
//! ([`ava_malbert::quantize`]) on one ONNX file.

use anyhow::Context;
use ava_malbert::data;
use ava_malbert::QuantizeOptions;
use ava_passes::onnx;

use crate::args::aon_int8::QuantizeOnnxArgs;
use crate::ui::{human_bytes, Ui};

/// Runs `aon quantize`.
pub fn run(args: &QuantizeOnnxArgs, ui: &Ui) -> anyhow::Result<()> {
    crate::output::claim(&args.output, crate::output::Expect::Onnx, args.force)?;
    let mut g =
        onnx::load(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let tokenizer = args
        .tokenizer
        .clone()
        .unwrap_or_else(|| data::tokenizer_next_to(&args.input));
    let gate = match args.max_accuracy_drop {
        Some(p) => Some((p, data::labels_next_to(&args.input)?)),
        None => None,
    };
    let settings = QuantizeOptions {
        calib: &args.calib,
        tokenizer: &tokenizer,
        samples: args.samples,
        method: args.method.into(),
        per_tensor: !args.per_channel,
        exclude: args.exclude.iter().cloned().collect(),
        gate,
        gate_samples: args.gate_samples,
    };
    let report = ava_malbert::quantize(&mut g, &settings, args.format.into())?;
    crate::output::write_file(&args.output, &onnx::to_bytes(&g))?;
    ui.result(&report, || {
        let q = &report.quant;
        let mut s = format!(
            "wrote {} ({:?}): {} linear nodes int8 ({} kept float), {} weights quantized once each, {} activations calibrated ({} on {} utterances); weights {} -> {}\n",
            args.output.display(),
            report.format,
            q.nodes_quantized.len(),
            q.nodes_float.len(),
            q.weights_quantized,
            q.activations_quantized,
            report.method,
            report.calibration_samples,
            human_bytes(q.weight_bytes_before as u64),
            human_bytes(q.weight_bytes_after as u64),
        );
        if let Some(gr) = &report.gate {
            s += &format!(
                "accuracy gate ({} utterances): float {:.2}%, int8 {:.2}% (all nodes int8: {:.2}%), kept float: {}\n",
                gr.samples,
                100.0 * gr.float_accuracy,
                100.0 * gr.int8_accuracy,
                100.0 * gr.int8_accuracy_all,
                if gr.kept_float.is_empty() { "none".to_string() } else { gr.kept_float.join(", ") }
            );
        }
        s
    })
}
