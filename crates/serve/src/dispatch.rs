//! Dispatch: a request's work handed to the engine serving its model version, and its
//! answer awaited within the server's limits. Classifier samples here; text generation in
//! [`crate::completion`].

use crate::tensors::Tensors;
use crate::worker::{Job, Request, Worker};
use crate::{AppState, Error, Model, Result};
use kiln_tensor::HostTensor;
use tokio::sync::oneshot;

impl AppState {
    /// Refuses a request of no samples (nothing to run; a batch of them would not count
    /// towards `max_batch`), or of more samples than one batch may hold, before any work on it.
    pub fn check_batch(&self, samples: usize) -> Result<()> {
        if samples == 0 {
            return Err(Error::BadRequest(
                "the request holds 0 samples (its first dimension); send at least one".into(),
            ));
        }
        if samples > self.config.max_batch {
            return Err(Error::BatchTooLarge {
                samples,
                max: self.config.max_batch,
            });
        }
        Ok(())
    }

    /// Logits of model-ready samples from `model`, batched with other requests.
    pub async fn infer(&self, model: &Model, samples: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        self.answer(model.engine.classifier(&model.name)?, model, samples).await
    }

    /// The outputs of a module of named tensors for `inputs` (in its input order),
    /// batched with other requests of the same shapes.
    pub async fn infer_tensors(&self, model: &Model, inputs: Vec<HostTensor>) -> Result<Vec<HostTensor>> {
        let worker = model
            .engine
            .tensors()
            .ok_or_else(|| Error::Internal(format!("model {} is not a module of named tensors", model.name)))?;
        self.answer(worker, model, Tensors(inputs)).await
    }

    async fn answer<R: Request>(&self, worker: &Worker<R>, model: &Model, input: R) -> Result<R::Output> {
        let (tx, rx) = oneshot::channel();
        worker.submit(
            Job {
                queued: std::time::Instant::now(),
                samples: input,
                reply: tx,
            },
            &model.name,
        )?;
        match tokio::time::timeout(self.config.request_timeout, rx).await {
            Ok(Ok(Ok(p))) => Ok(p),
            Ok(Ok(Err(e))) if e.caused_by_input => Err(Error::BadRequest(e.message)),
            Ok(Ok(Err(e))) => Err(Error::Internal(e.message)),
            Ok(Err(_)) => Err(Error::Unavailable(format!(
                "model {} stopped while answering; retry",
                model.name
            ))),
            Err(_) => Err(Error::Timeout(self.config.request_timeout.as_millis())),
        }
    }
}
