//! kiln's model architectures, each built from a serde [`ModelSpec`].
//!
//! The same spec always builds the same parameter names and shapes, so weights saved
//! from one build load into another ([`Network::parameter_shapes`] lists them).
//!
//! ```
//! use kiln_model::{ModelSpec, Network};
//! use kiln_tensor::{Device, Kind, Tensor};
//! let spec = ModelSpec::classic_mlp(); // 784-128-10 with ReLU
//! let net = Network::new(spec, Device::Cpu)?;
//! let x = Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu));
//! assert_eq!(net.infer(&x)?.size(), vec![2, 10]);
//! assert_eq!(net.parameter_count(), 784 * 128 + 128 + 128 * 10 + 10);
//! # Ok::<(), kiln_model::Error>(())
//! ```

mod cnn;
mod decoder;
mod error;
mod mlp;
mod network;
mod params;
mod resnet;
mod spec;
mod torchscript;

pub use cnn::CnnSpec;
pub use decoder::{
    argmax, generate, lm_loss, Decoder, DecoderSpec, FeedForward, Finish, GenerateConfig, Generation, KvCache, LmLoss,
    Norm, Positions, Sampler, Sampling,
};
pub use error::{Error, Result};
pub use mlp::{Activation, MlpSpec};
pub use network::{Network, Prepare};
pub use params::Parameters;
pub use resnet::ResnetSpec;
pub use spec::ModelSpec;
pub use torchscript::{check_archive as check_torchscript_archive, TensorSpec, TorchScriptSpec};
