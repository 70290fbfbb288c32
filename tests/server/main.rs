//! End-to-end tests of the `kiln-serve` binary: a real process on a free port, a model
//! repository holding a really trained package, real HTTP requests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/python.rs"]
mod python;
mod util;

mod admin;
mod conformance;
mod errors;
mod generation;
mod grpc;
mod images;
mod lifecycle;
mod limits;
mod openapi;
mod parity;
mod protocol;
mod repository;
mod tensors;
mod torchscript;
