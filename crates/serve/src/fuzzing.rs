//! Entry points for the fuzz targets (tests/fuzz): each runs what the server does with a
//! request body before a model is involved, on arbitrary bytes. Not part of the API.

use crate::routes::{classic, tfserving, v2};
use crate::Result;

/// A v2 infer body: parsed, checked, every input's data read as its datatype.
pub fn v2_infer_body(body: &[u8]) -> Result<()> {
    v2::decode(body).map(|_| ())
}

/// A TF Serving predict body for a model whose input is named `input`.
pub fn tfserving_predict_body(body: &[u8]) -> Result<()> {
    let req: tfserving::PredictRequest =
        serde_json::from_slice(body).map_err(|e| crate::Error::BadRequest(e.to_string()))?;
    tfserving::samples_of(req, "m", "input", 64).map(|_| ())
}

/// A `/predict` body of `content_type`; an image is decoded for a 1x28x28 model with the
/// server's default pixel limit.
pub fn predict_body(content_type: &str, body: &[u8]) -> Result<()> {
    let (input, _, _) = classic::parse_body(content_type, body.to_vec(), None, None)?;
    match input {
        classic::Input::Values(_) => Ok(()),
        classic::Input::Encoded(bytes) => {
            let layout = kiln_data::ImageLayout {
                channels: 1,
                height: 28,
                width: 28,
            };
            let mut out = vec![0f32; 784];
            let limits = kiln_data::DecodeLimits {
                max_pixels: crate::DEFAULT_MAX_IMAGE_PIXELS,
            };
            kiln_data::decode_image_within(&bytes, layout, limits, "fuzz", &mut out)
                .map_err(|e| crate::Error::BadRequest(e.to_string()))
        }
    }
}
