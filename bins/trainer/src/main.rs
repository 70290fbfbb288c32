//! kiln-train: the command-line trainer, thin glue over kiln-train.

mod cli;

use clap::Parser;
use cli::{Cli, Command};
use kiln_data::Split;
use kiln_package::Package;
use kiln_tensor::{DeviceChoice, Runtime};
use kiln_train::{
    evaluate_package, generate_text, import_gguf, open_split, predict_files, resume, train, DatasetKind, Error,
    TextRequest, TrainConfig, TrainOptions, TrainReport,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn cfg_err(e: impl std::fmt::Display) -> Error {
    Error::Config(e.to_string())
}

/// Options whose stop flag is raised by SIGINT or SIGTERM: the run then checkpoints and
/// exits (code 130) instead of dying mid-write.
fn options(quiet: bool, started: Instant) -> Result<TrainOptions, Error> {
    let opts = TrainOptions {
        quiet,
        started,
        ..Default::default()
    };
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, opts.stop.clone())
            .map_err(|e| cfg_err(format!("cannot handle signals: {e}")))?;
    }
    Ok(opts)
}

fn print_report(report: &TrainReport) {
    if report.rank != 0 {
        println!(
            "rank {} of {}: done; rank 0 wrote the package to {}",
            report.rank,
            report.world,
            report.package_dir.display()
        );
        return;
    }
    println!(
        "package: {} (epoch {} of {})",
        report.package_dir.display(),
        report.best_epoch,
        report.epochs.len()
    );
    if let Some(t) = &report.test {
        println!(
            "test accuracy: {:.4} (loss {:.4}, top-{} {:.4}, {} samples)",
            t.accuracy, t.loss, t.k, t.top_k_accuracy, t.samples
        );
    }
    println!("wall time: {:.1}s", report.seconds);
}

fn run(cli: Cli, started: Instant) -> Result<(), Error> {
    match cli.command {
        Command::Train(a) => {
            let mut set = Vec::new();
            let mut push = |k: &str, v: Option<String>| set.extend(v.map(|v| format!("{k}={v}")));
            push("epochs", a.epochs.map(|v| v.to_string()));
            push("batch_size", a.batch_size.map(|v| v.to_string()));
            push("optimizer.lr", a.lr.map(|v| format!("{v:?}")));
            push("seed", a.seed.map(|v| v.to_string()));
            push("device", a.device.map(|v| format!("{v:?}")));
            push("threads", a.threads.map(|v| v.to_string()));
            push("data.dir", a.data_dir.map(|v| format!("{:?}", v.display().to_string())));
            set.extend(a.set);
            let config = TrainConfig::load(a.config.as_deref(), &set)?;
            let out = a.out.unwrap_or_else(|| PathBuf::from("runs").join(&config.name));
            let opts = TrainOptions {
                resume_existing: a.resume,
                ..options(a.quiet, started)?
            };
            print_report(&train(&config, &out, &opts)?);
        }
        Command::Resume(a) => print_report(&resume(&a.run, &options(a.quiet, started)?)?),
        Command::Plot(a) => {
            let config = TrainConfig::load(Some(&a.run.join("config.json")), &[])?;
            let labels = Package::read_manifest(a.run.join("package"))?.output.labels;
            kiln_train::plot::redraw(&a.run, &labels, &config.name)?;
            println!(
                "{}\n{}",
                a.run.join("curves.svg").display(),
                a.run.join("confusion.svg").display()
            );
        }
        Command::Eval(a) => {
            let device: DeviceChoice = a.device.parse().map_err(cfg_err)?;
            let runtime = Runtime::init(device, 0, 0)?;
            let package = Package::load(&a.package, runtime.device)?;
            let split: Split = serde_json::from_value(a.split.clone().into())
                .map_err(|_| cfg_err(format!("--split {:?}: expected test or train", a.split)))?;
            let data_cfg = match &a.config {
                Some(path) => TrainConfig::load(Some(path), &[])?.data,
                None => kiln_train::DataConfig {
                    dataset: serde_json::from_value::<DatasetKind>(a.dataset.clone().into())
                        .map_err(|_| cfg_err(format!("--dataset {:?}: expected fashion-mnist or mnist", a.dataset)))?,
                    dir: a.data_dir,
                    ..Default::default()
                },
            };
            let data = open_split(&data_cfg, split)?.ok_or_else(|| cfg_err("the dataset has no such split"))?;
            let result = evaluate_package(&package, data, a.batch_size, a.top_k)?;
            println!("{}", serde_json::to_string(&result).map_err(cfg_err)?);
        }
        Command::Import(a) => {
            let config = TrainConfig::load(Some(&a.config), &a.set)?;
            let m = kiln_train::import_weights(&config, &a.weights, &a.out)?;
            println!("package: {} ({} version {})", a.out.display(), m.name, m.version);
        }
        Command::ImportTorchscript(a) if !a.input_tensor.is_empty() => {
            let facts = kiln_train::TorchScriptFacts {
                name: a.name,
                version: a.version,
                inputs: a.input_tensor,
                outputs: a.output_tensor,
                ..Default::default()
            };
            let m = kiln_train::import_torchscript(&a.module, &facts, &a.out)?;
            let names = |t: &[kiln_model::TensorSpec]| t.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ");
            println!(
                "package: {} ({} version {}, TorchScript, inputs {}, outputs {})",
                a.out.display(),
                m.name,
                m.version,
                names(&facts.inputs),
                names(&facts.outputs)
            );
        }
        Command::ImportTorchscript(a) => {
            let labels = match (&a.labels_file, a.classes) {
                (Some(file), _) => std::fs::read_to_string(file)
                    .map_err(|e| cfg_err(format!("--labels-file {}: {e}", file.display())))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
                (None, Some(n)) => (0..n).map(|i| i.to_string()).collect(),
                (None, None) => a.labels,
            };
            if labels.len() < 2 {
                return Err(cfg_err(
                    "name the classes with --labels a,b,... or --labels-file FILE, or count them with --classes N (at least 2)",
                ));
            }
            let facts = kiln_train::TorchScriptFacts {
                name: a.name,
                version: a.version,
                input: a.input,
                labels,
                image: a.image,
                normalize: (!a.mean.is_empty()).then_some(kiln_data::Normalize {
                    mean: a.mean,
                    std: a.std,
                }),
                ..Default::default()
            };
            let m = kiln_train::import_torchscript(&a.module, &facts, &a.out)?;
            println!(
                "package: {} ({} version {}, TorchScript, input {:?}, {} classes)",
                a.out.display(),
                m.name,
                m.version,
                m.input.shape,
                m.output.labels.len()
            );
        }
        Command::Export(a) => {
            let mut package = Package::load(&a.package, kiln_tensor::Device::Cpu)?;
            package.export_torchscript(&a.torchscript)?;
            println!("torchscript: {} (torch.jit.load runs it)", a.torchscript.display());
        }
        Command::ImportGguf(a) => {
            let r = import_gguf(&a.gguf, &a.out, &a.name, a.version)?;
            println!(
                "package: {} ({} version {}, {} parameters; {} of 256 byte symbols missing from the vocabulary)",
                a.out.display(),
                r.manifest.name,
                r.manifest.version,
                r.parameters,
                r.missing_bytes
            );
        }
        Command::Generate(a) => {
            let device: DeviceChoice = a.device.parse().map_err(cfg_err)?;
            let runtime = Runtime::init(device, a.threads, 0)?;
            let mut package = kiln_package::LanguagePackage::load(&a.package, runtime.device)?;
            match a.quantize {
                Some(cli::Quantize::Int4) => package.model.quantize_int4(32, false)?,
                Some(cli::Quantize::Int4Bf16) => package.model.quantize_int4(32, true)?,
                None => {}
            }
            let request = TextRequest {
                prompt: a.prompt,
                max_tokens: a.max_tokens,
                temperature: a.temperature,
                top_k: a.top_k,
                top_p: a.top_p,
                repetition_penalty: a.repetition_penalty,
                seed: a.seed,
                stop: a.stop,
                no_cache: a.no_cache,
            };
            let r = generate_text(&package, &request, &mut std::io::stdout())?;
            println!();
            tracing::info!(
                prompt_tokens = r.prompt_tokens,
                generated_tokens = r.generated_tokens,
                finish = ?r.finish,
                seconds_to_first_token = r.seconds_to_first_token,
                tokens_per_sec = r.tokens_per_sec,
                "{} tokens after a prompt of {} in {:.2}s: {:.1} tokens/s (first after {:.3}s), finish: {:?}",
                r.generated_tokens,
                r.prompt_tokens,
                r.seconds,
                r.tokens_per_sec,
                r.seconds_to_first_token,
                r.finish
            );
        }
        Command::Launch(_) => return Err(cfg_err("launch is handled before run")),
        Command::Predict(a) => {
            let package = Package::load(&a.package, kiln_tensor::Device::Cpu)?;
            for p in predict_files(&package, &a.files, a.top_k)? {
                println!("{}", serde_json::to_string(&p).map_err(cfg_err)?);
            }
        }
    }
    Ok(())
}

/// The README's table: 2 bad config or arguments (as clap uses), 3 dataset not installed,
/// 4 a file whose contents are unusable (checkpoint, package, data or input file),
/// 130 interrupted with a checkpoint saved, 1 the rest (I/O, libtorch).
fn exit_code(e: &Error) -> u8 {
    use kiln_data::Error as D;
    use kiln_package::Error as P;
    match e {
        Error::Config(_) | Error::Model(kiln_model::Error::Spec(_)) => 2,
        e if e.is_missing_data() => 3,
        Error::Checkpoint(_) | Error::Input(_) => 4,
        Error::Data(D::Format { .. } | D::Invalid(_) | D::TooLarge(_)) => 4,
        Error::Package(P::Invalid { .. } | P::Weights(_) | P::Manifest(_) | P::Input(_) | P::InputTooLarge(_)) => 4,
        Error::Interrupted(_) => 130,
        _ => 1,
    }
}

/// `kiln-train launch`: the ranks' exit status (0, 130 when all were interrupted, or the
/// failed rank's code, 1 when it was killed by a signal).
fn launch(a: cli::LaunchArgs) -> Result<u8, Error> {
    if !matches!(a.command.first().map(String::as_str), Some("train" | "resume")) {
        return Err(cfg_err(format!(
            "launch runs `train ...` or `resume RUN` on each rank, not {:?}",
            a.command.join(" ")
        )));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| cfg_err(format!("cannot handle signals: {e}")))?;
    }
    let program = std::env::current_exe().map_err(|e| cfg_err(format!("cannot find kiln-train itself: {e}")))?;
    let launch = kiln_dist::Launch {
        nproc: a.nproc,
        nnodes: a.nnodes,
        node_rank: a.node_rank,
        master_addr: a.master_addr,
        master_port: a.master_port,
        program,
        args: a.command,
        env: a
            .timeout
            .map(|t| ("KILN_DIST_TIMEOUT".to_string(), t.to_string()))
            .into_iter()
            .collect(),
    };
    let outcome = launch.run(&stop).map_err(Error::Dist)?;
    if let Some((rank, status)) = outcome.failed {
        tracing::error!(
            rank,
            "rank {rank} {}; the other ranks were stopped",
            kiln_dist::describe(&status)
        );
        return Ok(status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .filter(|&c| c != 0)
            .unwrap_or(1));
    }
    if outcome.statuses.iter().all(|(_, s)| s.success()) {
        Ok(0)
    } else {
        Ok(outcome
            .statuses
            .iter()
            .find_map(|(_, s)| s.code())
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1))
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    if let Err(e) = kiln_log::init("kiln-train", cli.log_format, "info") {
        eprintln!("kiln-train: error: {e}");
        return ExitCode::from(2);
    }
    if let Command::Launch(a) = cli.command {
        return match launch(a) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(exit_code(&e))
            }
        };
    }
    match run(cli, started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(exit_code(&e))
        }
    }
}
