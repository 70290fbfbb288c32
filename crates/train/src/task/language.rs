//! The language-model task: a text corpus, tokenized (by a tokenizer trained on the
//! training documents unless one is given), split by whole documents, packed into
//! sequences, through a decoder; evaluated with loss, perplexity, bits per byte and
//! next-token accuracy; packaged with its tokenizer.

use super::classify::best_metrics;
use super::{Evaluation, Forward, Task};
use crate::checkpoint::RunState;
use crate::{plot, Error, EvalResult, Result, TrainConfig};
use kiln_model::{Decoder, ModelSpec};
use kiln_package::{atomic, LanguagePackage, Manifest, TrainingSummary};
use kiln_tensor::{nn, tch, Device, Kind, Tensor};
use kiln_text::{split_documents, CacheOutcome, Corpus, Packed, TokenBatch, TokenLoader, TokenizedCorpus, Tokenizer};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// A language model's evaluation on held-out text.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmEval {
    /// Mean next-token cross-entropy, in nats.
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// The loss summed over the tokens, in bits, over the bytes of text they stand for.
    pub bits_per_byte: f64,
    /// Fraction of next tokens that were the most likely.
    pub accuracy: f64,
    /// Tokens predicted.
    pub tokens: u64,
    /// Bytes of text those tokens stand for (special tokens count none).
    pub bytes: u64,
}

pub(crate) struct Language {
    config: TrainConfig,
    tokenizer: Tokenizer,
    model: Decoder,
    train: TokenLoader,
    val: Option<TokenLoader>,
    /// `[vocab]` int64: the bytes each token stands for.
    byte_lengths: Tensor,
    description: String,
    train_tokens: usize,
    /// Kept from the package fine-tuning started from.
    chat_template: Option<String>,
}

impl Language {
    /// Reads and tokenizes the corpus, trains or loads the tokenizer (the run folder's
    /// `tokenizer.json` when resuming), and builds the decoder; `config.model` gets the
    /// tokenizer's vocabulary when it has none.
    /// Training batches come from `shard` of each epoch; rank 0 alone (`shard.rank` 0)
    /// writes the run's tokenizer.
    pub(crate) fn new(
        config: &mut TrainConfig,
        device: Device,
        out: &Path,
        resuming: bool,
        shard: kiln_data::Shard,
    ) -> Result<Language> {
        let text = config.text.clone();
        let corpus = Corpus::read(&text.corpus)?;
        let split = split_documents(corpus.documents.len(), text.validation, config.seed)?;
        let run_tokenizer = out.join("tokenizer.json");
        // Fine-tuning starts from a package: its architecture, weights and tokenizer.
        let init = config
            .init_from
            .as_ref()
            .map(|p| LanguagePackage::load(p, device).map(|pkg| (p.clone(), pkg)))
            .transpose()?;
        if let Some((_, pkg)) = &init {
            let mut spec = pkg.model.spec().clone();
            if let ModelSpec::Decoder(d) = &config.model {
                spec.dropout = d.dropout;
            }
            config.model = ModelSpec::Decoder(spec);
        }
        let tokenizer = match (&text.tokenizer, resuming, &init) {
            (_, true, _) => Tokenizer::from_file(&run_tokenizer, init.as_ref().map(|(_, p)| p.tokenizer.special()))?,
            (_, false, Some((_, pkg))) => pkg.tokenizer.clone(),
            (Some(path), false, None) => Tokenizer::from_file(path, None)?,
            (None, false, None) => {
                let docs = split.train.iter().map(|&i| corpus.documents[i].text.as_str());
                Tokenizer::train(docs, text.vocab_size)?
            }
        };
        if !resuming && shard.rank == 0 {
            tokenizer.save(&run_tokenizer)?;
        }
        let ModelSpec::Decoder(spec) = &mut config.model else {
            return Err(Error::Config(
                "task = \"language-model\" needs model.arch = \"decoder\"".into(),
            ));
        };
        if spec.vocab == 0 {
            spec.vocab = tokenizer.vocab_size() as i64;
        } else if (spec.vocab as usize) < tokenizer.vocab_size() {
            return Err(Error::Config(format!(
                "model.vocab {} is smaller than the tokenizer's {} tokens",
                spec.vocab,
                tokenizer.vocab_size()
            )));
        }
        if text.seq_len as i64 > spec.context {
            return Err(Error::Config(format!(
                "text.seq_len {} is longer than the model's context {}",
                text.seq_len, spec.context
            )));
        }
        let (tokens, outcome) = TokenizedCorpus::load_or_build(&text.cache_dir, &tokenizer, &corpus)?;
        match outcome {
            CacheOutcome::Hit(p) => tracing::info!(cache = %p.display(), "token cache: {}", p.display()),
            CacheOutcome::Built(p, why) => {
                tracing::info!(cache = %p.display(), "tokenized the corpus into {} ({why})", p.display())
            }
        }
        let special = tokenizer.special();
        let packed = Arc::new(Packed::new(&tokens, &split.train, special, text.seq_len)?);
        let train = TokenLoader::new(packed.clone(), config.batch_size, true, config.seed)?.sharded(shard);
        let val = if split.validation.is_empty() {
            None
        } else {
            let held = Arc::new(Packed::new(&tokens, &split.validation, special, text.seq_len)?);
            Some(TokenLoader::new(held, config.eval_batch_size, false, config.seed)?)
        };
        let lens: Vec<i64> = tokenizer.byte_lengths().into_iter().map(i64::from).collect();
        let byte_lengths = Tensor::f_from_slice(&lens)?.f_to_device(device)?;
        let model = Decoder::new(spec.clone(), device)?;
        if let Some((path, pkg)) = &init {
            super::copy_weights(pkg.model.var_store(), model.var_store(), path)?;
        }
        let names = |ids: &[usize]| {
            ids.iter()
                .map(|&i| corpus.documents[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let description = format!(
            "{} documents, {} bytes ({} held out: {})",
            corpus.documents.len(),
            corpus.bytes(),
            split.validation.len(),
            names(&split.validation)
        );
        Ok(Language {
            config: config.clone(),
            tokenizer,
            model,
            train_tokens: packed.sequences() * text.seq_len,
            train,
            val,
            byte_lengths,
            description,
            chat_template: init.and_then(|(_, p)| p.manifest.chat_template),
        })
    }

    fn manifest(&self, state: &RunState) -> Manifest {
        let mut manifest = Manifest::language_model(
            &self.config.name,
            self.config.version,
            &self.model,
            self.tokenizer.special(),
        );
        manifest.chat_template = self.chat_template.clone();
        manifest.training = Some(TrainingSummary {
            dataset: self.description.clone(),
            epochs: state.epochs.len(),
            train_samples: self.train_tokens,
            seconds: state.seconds,
            metrics: best_metrics(state),
        });
        manifest
    }
}

impl Task for Language {
    type Batch = TokenBatch;

    fn vars(&self) -> &nn::VarStore {
        self.model.var_store()
    }

    fn describe(&self) -> String {
        format!(
            "a decoder ({} parameters, vocabulary {}) on {} ({} training tokens in sequences of {})",
            self.model.parameter_count(),
            self.tokenizer.vocab_size(),
            self.description,
            self.train_tokens,
            self.config.text.seq_len
        )
    }

    fn unit(&self) -> &'static str {
        "tokens"
    }

    fn batches_per_epoch(&self) -> usize {
        self.train.batches_per_epoch()
    }

    fn batches(&self, epoch: u64, first: usize) -> Box<dyn Iterator<Item = Result<TokenBatch>> + '_> {
        Box::new(self.train.epoch_from(epoch, first).map(|b| b.map_err(Error::from)))
    }

    fn forward(&self, batch: &TokenBatch, autocast: bool) -> Result<Forward> {
        let smoothing = self.config.label_smoothing;
        let loss = if autocast {
            tch::autocast(true, || {
                self.model.loss(&batch.inputs, &batch.targets, true, smoothing, true)
            })?
        } else {
            self.model.loss(&batch.inputs, &batch.targets, true, smoothing, true)?
        };
        Ok(Forward {
            loss: loss.mean(),
            objective: loss.objective,
            predictions: loss.tokens as usize,
            correct: loss.correct,
            samples: batch.inputs.numel(),
        })
    }

    fn evaluate(&self) -> Result<Option<Evaluation>> {
        let Some(val) = &self.val else {
            return Ok(None);
        };
        let limit = match self.config.text.eval_sequences {
            0 => usize::MAX,
            n => n,
        };
        let (mut nats, mut correct, mut tokens, mut bytes) = (0f64, 0i64, 0i64, 0i64);
        let mut seen = 0usize;
        tch::no_grad(|| -> Result<()> {
            for batch in val.epoch_from(0, 0) {
                if seen >= limit {
                    break;
                }
                let batch = batch?;
                seen += batch.len();
                let loss = self.model.loss(&batch.inputs, &batch.targets, false, 0.0, false)?;
                nats += loss.loss_sum;
                correct += loss.correct;
                tokens += loss.tokens;
                let targets = batch.targets.f_to_device(self.model.device())?.f_view([-1])?;
                bytes += self
                    .byte_lengths
                    .f_index_select(0, &targets)?
                    .f_sum(Kind::Int64)?
                    .f_int64_value(&[])?;
            }
            Ok(())
        })?;
        let loss = nats / tokens.max(1) as f64;
        Ok(Some(Evaluation::LanguageModel(LmEval {
            loss,
            perplexity: loss.exp(),
            bits_per_byte: nats / std::f64::consts::LN_2 / bytes.max(1) as f64,
            accuracy: correct as f64 / tokens.max(1) as f64,
            tokens: tokens as u64,
            bytes: bytes as u64,
        })))
    }

    fn save_package(&self, out: &Path, state: &RunState) -> Result<()> {
        LanguagePackage::save(out.join("package"), self.manifest(state), &self.model, &self.tokenizer)?;
        Ok(())
    }

    fn write_plots(&self, out: &Path, state: &RunState, _last: Option<&Evaluation>) -> Result<()> {
        let curves = plot::curves_svg(&state.epochs, &self.config.name);
        atomic::write_file(&out.join("curves.svg"), curves.as_bytes()).map_err(|e| Error::io(out.join("curves.svg"), e))
    }

    fn finish(&self, out: &Path, _state: &RunState) -> Result<(Option<EvalResult>, Manifest)> {
        // Held-out documents are the validation data; there is no separate test text.
        Ok((None, kiln_package::Package::read_manifest(out.join("package"))?))
    }
}
