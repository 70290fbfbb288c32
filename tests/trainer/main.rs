//! End-to-end tests of the `kiln-train` binary: real processes, real data, real files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/python.rs"]
mod python;
mod util;

mod cuda;
mod distributed;
mod errors;
mod import;
mod language;
mod own_data;
mod resume;
mod smollm2;
mod torchscript;
mod train_eval_predict;
