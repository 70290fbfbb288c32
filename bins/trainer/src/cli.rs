//! The command line of kiln-train: subcommands and flags, each explained in `--help`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Train neural networks with libtorch and package them for serving.
#[derive(Parser)]
#[command(name = "kiln-train", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines (epochs, warnings, errors) are written to stderr: human or json
    /// (one object per line, with every field). RUST_LOG filters. The progress bar stays.
    #[arg(long, global = true, env = "KILN_LOG_FORMAT", default_value = "human")]
    pub log_format: kiln_log::LogFormat,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a model from a config file (JSON or TOML) and write its package.
    Train(TrainArgs),
    /// Continue an interrupted run from the newest intact checkpoint in its folder.
    Resume(ResumeArgs),
    /// Redraw a run folder's curves.svg and confusion.svg from its metrics.jsonl.
    Plot(PlotArgs),
    /// Evaluate a package on a dataset split and print its metrics as JSON.
    Eval(EvalArgs),
    /// Predict the class of image (PNG/JPEG) or JSON input files with a package.
    Predict(PredictArgs),
    /// Make a package of weights trained elsewhere (e.g. PyTorch, saved as safetensors
    /// with the tensor names of the config's architecture).
    Import(ImportArgs),
    /// Make a package of a classifier trained elsewhere, saved as TorchScript
    /// (`torch.jit.script(model).save("model.pt")`): the module is run once on the declared
    /// input shape before the package is written. A pickled `state_dict` is refused.
    ImportTorchscript(ImportTorchscriptArgs),
    /// Write a package's model in another format: `--torchscript OUT.pt` gives a module
    /// that `torch.jit.load` runs in PyTorch (inputs as kiln takes them, the package's
    /// normalisation inside, logits out).
    Export(ExportArgs),
    /// Make a language-model package of a Llama-architecture model in a GGUF file
    /// (llama.cpp's format; F32, F16, Q8_0 and Q4_1 tensors), with its tokenizer and chat
    /// template.
    ImportGguf(ImportGgufArgs),
    /// Continue a prompt with a language-model package, writing the text to stdout as it
    /// is generated (figures to stderr at the end).
    Generate(GenerateArgs),
    /// Run `train` or `resume` on several ranks of this machine (data-parallel), as
    /// torchrun does: each rank is a kiln-train process with RANK, WORLD_SIZE, LOCAL_RANK,
    /// MASTER_ADDR and MASTER_PORT set. Signals are forwarded; when a rank fails, the
    /// others are stopped and the exit status names it. Example:
    /// `kiln-train launch --nproc 2 -- train --config configs/fashion-mlp.toml`
    Launch(LaunchArgs),
}

#[derive(clap::Args)]
pub struct LaunchArgs {
    /// Ranks to start on this machine.
    #[arg(long, alias = "nproc-per-node", default_value_t = 1)]
    pub nproc: usize,
    /// Machines in the job (each runs `kiln-train launch` with its own --node-rank).
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// This machine's index in the job, from 0.
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// Address of the machine of rank 0, which hosts the rendezvous store.
    #[arg(long, default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Port of the rendezvous store.
    #[arg(long, default_value_t = 29500)]
    pub master_port: u16,
    /// Seconds a rank waits for the others (rendezvous, collectives) before failing and
    /// naming the ranks that did not answer; a rank that dies is reported at once.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// The command each rank runs: `train ...` or `resume RUN`, after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[derive(clap::Args)]
pub struct ImportGgufArgs {
    /// The GGUF file.
    pub gguf: PathBuf,
    /// Where to write the package folder.
    #[arg(long, short)]
    pub out: PathBuf,
    /// The model's name in its package.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    pub name: String,
    /// The model's version in its package.
    #[arg(long, default_value_t = 1)]
    pub version: u64,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// The language-model package folder.
    #[arg(long, short)]
    pub package: PathBuf,
    /// The text to continue.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate at most [default: the package's].
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy [default: the package's].
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens whose probabilities add up to p.
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f64>,
    /// Above 1 makes tokens already in the text less likely.
    #[arg(long, allow_negative_numbers = true)]
    pub repetition_penalty: Option<f64>,
    /// The seed of the draws.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop at this text (left out of the output); may be given several times.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Recompute every token each step instead of keeping the KV cache (to see what the
    /// cache buys).
    #[arg(long)]
    pub no_cache: bool,
    /// Run with the weights quantized: `int4` keeps every projection as 4-bit integers in
    /// groups of 32 with bf16 scales (CPU only; about 7x fewer bytes to read per token;
    /// a GGUF Q4_1 model's own blocks are kept as they are); `int4-bf16` keeps a bf16
    /// copy of those weights too, for prompts and batches of 8 or more.
    #[arg(long, value_enum)]
    pub quantize: Option<Quantize>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "KILN_DEVICE", default_value = "auto")]
    pub device: String,
    /// libtorch threads, 0 for one per core.
    #[arg(long, env = "KILN_THREADS", default_value_t = 0)]
    pub threads: usize,
}

/// How `generate` keeps the weights.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Quantize {
    /// 4-bit integers in groups of 32 inputs, each group with a bf16 scale and zero.
    Int4,
    /// The same 4-bit weights, and a bf16 copy of them for products of 8 rows or more (a
    /// prompt, 8 sequences or more): prompts about twice as fast, 3.2x more memory than the 4-bit weights.
    #[value(name = "int4-bf16")]
    Int4Bf16,
}

#[derive(clap::Args)]
pub struct ImportTorchscriptArgs {
    /// The TorchScript file (from `torch.jit.script` or `torch.jit.trace`, then `.save`).
    #[arg(long)]
    pub module: PathBuf,
    /// Where to write the package folder.
    #[arg(long, short)]
    pub out: PathBuf,
    /// The model's name in its package (the name clients use).
    #[arg(long)]
    pub name: String,
    /// The model's version in its package.
    #[arg(long, default_value_t = 1)]
    pub version: u64,
    /// The shape of one input sample, without the batch: e.g. `--input 1,28,28` or `--input 784`.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present_any = ["input_tensor", "output_tensor"],
        allow_negative_numbers = true
    )]
    pub input: Vec<i64>,
    /// For a module of named tensors (several inputs or outputs, or other dtypes) instead
    /// of a classifier: one of its inputs as NAME:DTYPE:SHAPE, the shape of one sample
    /// without the batch, -1 for a size that varies (e.g. `--input-tensor image:FP32:1,28,28
    /// --input-tensor tokens:INT64:-1`). Repeat it for each input, in forward's order.
    #[arg(
        long,
        value_parser = kiln_model::TensorSpec::parse,
        requires = "output_tensor",
        conflicts_with_all = ["input", "labels", "labels_file", "classes", "image", "mean", "std"]
    )]
    pub input_tensor: Vec<kiln_model::TensorSpec>,
    /// One output of a module of named tensors as NAME:DTYPE:SHAPE (e.g.
    /// `--output-tensor logits:FP32:10`), in the order forward returns them (or a key of
    /// the dict it returns). Repeat it for each output.
    #[arg(long, value_parser = kiln_model::TensorSpec::parse, requires = "input_tensor")]
    pub output_tensor: Vec<kiln_model::TensorSpec>,
    /// The class names in order, comma-separated (their number is the width of the logits).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["labels_file", "classes"])]
    pub labels: Vec<String>,
    /// A file with one class name per line, in order.
    #[arg(long, conflicts_with = "classes")]
    pub labels_file: Option<PathBuf>,
    /// The number of classes, named 0, 1, ... (instead of --labels).
    #[arg(long)]
    pub classes: Option<usize>,
    /// The inputs are images `[channels, height, width]` (1 or 3 channels): requests may
    /// send PNG or JPEG files, decoded and resized to that, pixels scaled to 0..1.
    #[arg(long)]
    pub image: bool,
    /// Per-channel means subtracted from inputs before the module (with --std), when the
    /// module was trained on normalised inputs and does not normalise them itself.
    #[arg(long, value_delimiter = ',', requires = "std", allow_negative_numbers = true)]
    pub mean: Vec<f32>,
    /// Per-channel standard deviations inputs are divided by (with --mean).
    #[arg(long, value_delimiter = ',', requires = "mean")]
    pub std: Vec<f32>,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The package folder.
    #[arg(long, short)]
    pub package: PathBuf,
    /// Write the model as a TorchScript file here.
    #[arg(long, required = true)]
    pub torchscript: PathBuf,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Config naming the architecture (`model`), the data whose classes and input shape
    /// the model has (`data`; `normalize = false` for inputs in 0..1), `name` and `version`.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The weights: a safetensors file whose tensor names and shapes are the architecture's.
    #[arg(long)]
    pub weights: PathBuf,
    /// Where to write the package folder.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Config overrides, as for `train` (e.g. --set 'model={arch="mlp", hidden=[128]}').
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Config file (.json or .toml); without one, the defaults train a CNN on Fashion-MNIST.
    #[arg(long, short, env = "KILN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Run folder for config.json, metrics.jsonl and package/ [default: runs/<name>].
    #[arg(long, short, env = "KILN_OUT")]
    pub out: Option<PathBuf>,
    /// Passes over the training data (overrides `epochs`).
    #[arg(long, env = "KILN_EPOCHS")]
    pub epochs: Option<usize>,
    /// Samples per step (overrides `batch_size`).
    #[arg(long, env = "KILN_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Learning rate (overrides `optimizer.lr`).
    #[arg(long, env = "KILN_LR", allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Seed of initialisation, data order and augmentation (overrides `seed`).
    #[arg(long, env = "KILN_SEED")]
    pub seed: Option<u64>,
    /// `auto`, `cpu`, `cuda` or `cuda:N` (overrides `device`).
    #[arg(long, env = "KILN_DEVICE")]
    pub device: Option<String>,
    /// libtorch threads, 0 for one per core (overrides `threads`).
    #[arg(long, env = "KILN_THREADS")]
    pub threads: Option<usize>,
    /// Folder of the IDX files for fashion-mnist or mnist (overrides `data.dir`).
    #[arg(long, env = "KILN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Any other config value, as KEY=VALUE with a dotted key, e.g. `optimizer.kind=sgd`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// When --out already holds checkpoints of this run, continue it from the newest
    /// (with the config it was started with) instead of refusing: for schedulers that
    /// restart a failed job with the same command (a PyTorchJob, say).
    #[arg(long)]
    pub resume: bool,
    /// Hide the progress bar (epoch lines are still printed).
    #[arg(long, short, env = "KILN_QUIET")]
    pub quiet: bool,
}

#[derive(clap::Args)]
pub struct ResumeArgs {
    /// The run folder (the --out of `kiln-train train`).
    pub run: PathBuf,
    /// Hide the progress bar (epoch lines are still printed).
    #[arg(long, short, env = "KILN_QUIET")]
    pub quiet: bool,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The package folder.
    #[arg(long, short)]
    pub package: PathBuf,
    /// A training config (.json/.toml, e.g. a run's config.json) whose `data` section names
    /// the data, for CSV or image-folder data; without it, `--dataset` is used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The dataset when no --config is given: fashion-mnist or mnist.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Folder of the dataset's IDX files [default: where it is installed].
    #[arg(long, env = "KILN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `test` or `train`.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Samples per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// The k of the top-k accuracy.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "KILN_DEVICE", default_value = "auto")]
    pub device: String,
}

#[derive(clap::Args)]
pub struct PredictArgs {
    /// The package folder.
    #[arg(long, short)]
    pub package: PathBuf,
    /// How many classes to list per input.
    #[arg(long, default_value_t = 3)]
    pub top_k: usize,
    /// Input files: .png, .jpg or .jpeg images, or .json arrays of numbers.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct PlotArgs {
    /// The run folder.
    pub run: PathBuf,
}
