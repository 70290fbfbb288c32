//! `Engine`: what serves one model version, whatever its kind: the classifier's batcher
//! ([`Worker`]), the same batcher over named tensors ([`Tensors`]), or the language
//! model's scheduler ([`Generator`]) with the tokenizer, chat template and generation
//! defaults that turn text into its requests. The registry and
//! the routes see a version through this one interface; a route that needs one kind asks
//! for it and gets a clear 400 for the other.

use crate::generator::{Generator, LanguageBackend, RowModel};
use crate::metrics::{GenerationMetrics, InstanceMetrics};
use crate::tensors::Tensors;
use crate::worker::{Backend, Loader, Worker};
use crate::{Error, Result, ServeConfig};
use kiln_package::{GenerationDefaults, LanguagePackage, Manifest, Package, Task};
use kiln_text::{ChatTemplate, Tokenizer};
use std::path::Path;
use std::sync::Arc;

/// A served model version's engine.
pub enum Engine {
    /// A classifier: batches of samples to logits.
    Classify(Worker),
    /// A module of named tensors: batches of input tensors to output tensors.
    Tensors(Worker<Tensors>),
    /// A language model: prompts to token streams.
    Generate(Box<LanguageModel>),
}

/// A language model as the server runs it.
pub struct LanguageModel {
    /// The scheduler and its instances.
    pub generator: Generator,
    /// Text to tokens and back.
    pub tokenizer: Arc<Tokenizer>,
    /// The package's defaults for what a request leaves out.
    pub defaults: GenerationDefaults,
    /// Renders chat messages, when the package has a template.
    pub chat_template: Option<ChatTemplate>,
}

impl Engine {
    /// Starts `instances` instances of the package at `dir` (whose manifest is
    /// `manifest`) and returns once they are ready.
    pub fn spawn(
        manifest: &Manifest,
        dir: &Path,
        instances: usize,
        config: Arc<ServeConfig>,
        label: String,
    ) -> Result<Engine> {
        let device = config.device;
        match manifest.task {
            Task::Classification => {
                let dir = dir.to_path_buf();
                let loader: Loader = Arc::new(move || Ok(Box::new(Package::load(&dir, device)?) as Box<dyn Backend>));
                Ok(Engine::Classify(Worker::spawn(loader, instances, config, label)?))
            }
            Task::Tensors => {
                let dir = dir.to_path_buf();
                let loader: Loader<Tensors> =
                    Arc::new(move || Ok(Box::new(Package::load(&dir, device)?) as Box<dyn Backend<Tensors>>));
                Ok(Engine::Tensors(Worker::spawn(loader, instances, config, label)?))
            }
            Task::LanguageModel => {
                LanguageModel::spawn(manifest, dir, instances, config, label).map(|m| Engine::Generate(Box::new(m)))
            }
        }
    }

    /// What it does.
    pub fn task(&self) -> Task {
        match self {
            Engine::Classify(_) => Task::Classification,
            Engine::Tensors(_) => Task::Tensors,
            Engine::Generate(_) => Task::LanguageModel,
        }
    }

    /// Whether at least one instance is loaded and serving.
    pub fn healthy(&self) -> bool {
        match self {
            Engine::Classify(w) => w.healthy(),
            Engine::Tensors(w) => w.healthy(),
            Engine::Generate(g) => g.generator.healthy(),
        }
    }

    /// Instances running now.
    pub fn instances(&self) -> usize {
        match self {
            Engine::Classify(w) => w.instances(),
            Engine::Tensors(w) => w.instances(),
            Engine::Generate(g) => g.generator.instances(),
        }
    }

    /// Starts or stops instances until `n` run.
    pub fn set_instances(&self, n: usize) -> Result<()> {
        match self {
            Engine::Classify(w) => w.set_instances(n),
            Engine::Tensors(w) => w.set_instances(n),
            Engine::Generate(g) => g.generator.set_instances(n),
        }
    }

    /// What the instances measured (queue, compute, batch, depth, health).
    pub fn metrics(&self) -> &Arc<InstanceMetrics> {
        match self {
            Engine::Classify(w) => &w.metrics,
            Engine::Tensors(w) => &w.metrics,
            Engine::Generate(g) => g.generator.metrics(),
        }
    }

    /// Per-token metrics, for a language model.
    pub fn generation_metrics(&self) -> Option<&GenerationMetrics> {
        match self {
            Engine::Classify(_) | Engine::Tensors(_) => None,
            Engine::Generate(g) => Some(&g.generator.generation),
        }
    }

    /// The classifier, or a 400 naming the model when it is a language model.
    pub fn classifier(&self, model: &str) -> Result<&Worker> {
        match self {
            Engine::Classify(w) => Ok(w),
            Engine::Tensors(_) => Err(Error::BadRequest(format!(
                "model {model} takes named tensors, not one input to classify: send them through \
                 /v2/models/{model}/infer (or KServe v2 over gRPC)"
            ))),
            Engine::Generate(_) => Err(Error::BadRequest(format!(
                "model {model} is a language model: send it text through /v1/completions, \
                 /v1/chat/completions or /v2/models/{model}/generate"
            ))),
        }
    }

    /// The module of named tensors, or `None` for another kind of model.
    pub fn tensors(&self) -> Option<&Worker<Tensors>> {
        match self {
            Engine::Tensors(w) => Some(w),
            _ => None,
        }
    }

    /// The language model, or a 400 naming the model when it is a classifier.
    pub fn generator(&self, model: &str) -> Result<&LanguageModel> {
        match self {
            Engine::Generate(g) => Ok(g),
            Engine::Classify(_) => Err(Error::BadRequest(format!(
                "model {model} is a classifier, not a language model: send it inputs through \
                 /v2/models/{model}/infer or /predict"
            ))),
            Engine::Tensors(_) => Err(Error::BadRequest(format!(
                "model {model} is a module of named tensors, not a language model: send its tensors \
                 through /v2/models/{model}/infer"
            ))),
        }
    }
}

impl LanguageModel {
    fn spawn(
        manifest: &Manifest,
        dir: &Path,
        instances: usize,
        config: Arc<ServeConfig>,
        label: String,
    ) -> Result<LanguageModel> {
        let kiln_model::ModelSpec::Decoder(spec) = &manifest.model else {
            return Err(Error::Internal(format!(
                "{} is a language-model package without a decoder",
                dir.display()
            )));
        };
        let tokenizer = Arc::new(LanguagePackage::load_tokenizer(dir, manifest)?);
        // Rows of the KV cache and the tokens each holds: the budget shared by
        // max_sequences rows of f32 keys and values, each at most the context.
        let rows = config.max_sequences.max(1);
        let per_token = 2 * spec.layers as u64 * (spec.kv_heads * spec.head_dim()) as u64 * 4;
        let capacity = (config.kv_cache_bytes / (rows as u64 * per_token)).min(spec.context as u64) as usize;
        if capacity < 2 {
            return Err(Error::BadRequest(format!(
                "a KV cache of {} bytes holds {capacity} tokens for each of {rows} sequences of this model \
                 ({per_token} bytes a token); raise --kv-cache-bytes or lower --max-sequences",
                config.kv_cache_bytes
            )));
        }
        let special = tokenizer.special();
        let name = |id: Option<u32>| id.and_then(|i| tokenizer.inner().id_to_token(i)).unwrap_or_default();
        let chat_template = manifest
            .chat_template
            .as_deref()
            .map(|t| ChatTemplate::new(t, &name(special.bos), &name(special.eos)))
            .transpose()
            .map_err(|e| Error::BadRequest(format!("{}: {e}", dir.display())))?;
        let (dir, device, quantize, prefix_cache) =
            (dir.to_path_buf(), config.device, config.quantize, config.prefix_cache);
        let load: crate::pool::Load<dyn LanguageBackend> = Arc::new(move || {
            let mut pkg = LanguagePackage::load(&dir, device)?;
            if let Some(q) = quantize {
                pkg.model
                    .quantize_int4(32, q == crate::Quantize::Int4Bf16)
                    .map_err(|e| Error::BadRequest(format!("cannot quantize to 4 bits (--quantize): {e}")))?;
            }
            Ok(Box::new(RowModel::new(pkg.model, rows, capacity as i64, prefix_cache)?) as Box<dyn LanguageBackend>)
        });
        Ok(LanguageModel {
            generator: Generator::spawn(load, instances, capacity, config, label)?,
            tokenizer,
            defaults: manifest.generation.clone().unwrap_or_default(),
            chat_template,
        })
    }
}
