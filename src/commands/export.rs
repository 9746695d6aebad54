//! `aon export DIR -o model.onnx`: an ALBERT checkpoint as an ONNX opset-17 graph, weights
//! stored once, optimized by a named pipeline.

use anyhow::Context;
use ava_core::Checkpoint;
use ava_passes::{albert, onnx, Pipeline, PipelineReport};
use serde::Serialize;

use crate::args::ExportArgs;
use crate::ui::{human_bytes, Ui};

/// What `export --json` prints.
#[derive(Serialize)]
struct ExportReport<'a> {
    path: &'a std::path::Path,
    file_bytes: u64,
    checkpoint_weight_bytes: u64,
    inputs: Vec<String>,
    outputs: Vec<String>,
    optimize: PipelineReport,
}

/// Runs `export`.
pub fn run(args: &ExportArgs, ui: &Ui) -> anyhow::Result<()> {
    crate::output::claim(&args.output, crate::output::Expect::Onnx, args.force)?;
    let ckpt = Checkpoint::open(&args.dir)
        .with_context(|| format!("reading checkpoint {}", args.dir.display()))?;
    let pipeline = Pipeline::parse(&args.passes)?;
    let mut graph = albert::build(&ckpt).context("building the ALBERT graph")?;
    let optimize = pipeline.run(&mut graph).context("optimizing the graph")?;
    crate::output::write_file(&args.output, &onnx::to_bytes(&graph))?;
    let file_bytes = std::fs::metadata(&args.output)?.len();
    let report = ExportReport {
        path: &args.output,
        file_bytes,
        checkpoint_weight_bytes: ckpt.weights_bytes(),
        inputs: graph.inputs.iter().map(|i| i.name.clone()).collect(),
        outputs: graph.outputs.iter().map(|o| o.name.clone()).collect(),
        optimize,
    };
    ui.result(&report, || {
        format!(
            "wrote {} ({}; checkpoint weights {}), {} -> {} nodes ({})\n",
            report.path.display(),
            human_bytes(file_bytes),
            human_bytes(report.checkpoint_weight_bytes),
            report.optimize.nodes_before,
            report.optimize.nodes_after,
            report.optimize.pipeline
        )
    })
}
