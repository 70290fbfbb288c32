//! Image input: a real PNG or JPEG made from a test image, as the body or base64 in JSON.

use crate::util::{test_images, Server};
use base64::Engine;
use serde_json::json;

fn encode(pixels: &[f32], format: image::ImageFormat, size: u32) -> Vec<u8> {
    let bytes: Vec<u8> = pixels.iter().map(|v| (v * 255.0).round() as u8).collect();
    let img = image::DynamicImage::ImageLuma8(image::GrayImage::from_raw(28, 28, bytes).unwrap());
    // A colour image of another size, as a photo would be: the server converts and resizes.
    let img =
        image::DynamicImage::ImageRgb8(img.to_rgb8()).resize_exact(size, size, image::imageops::FilterType::Triangle);
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn png_and_jpeg_bodies_and_base64_agree_with_the_pixel_values() {
    let s = Server::start(&[]);
    for (pixels, _) in test_images(4) {
        let (status, by_values) = s.post("/predict", &json!({"image": pixels, "top_k": 2}));
        assert_eq!(status, 200, "{by_values}");
        assert_eq!(by_values["top"].as_array().unwrap().len(), 2);
        assert_eq!(by_values["top"][0]["class"], by_values["class"]);
        let png = encode(&pixels, image::ImageFormat::Png, 28);
        let (status, _, by_png) = s.post_raw("/predict", "image/png", png.clone());
        assert_eq!(status, 200, "{by_png}");
        assert_eq!(by_png["class"], by_values["class"], "same pixels, same class");
        let p1 = by_png["probabilities"][by_png["class"].as_u64().unwrap() as usize]
            .as_f64()
            .unwrap();
        let p2 = by_values["probabilities"][by_values["class"].as_u64().unwrap() as usize]
            .as_f64()
            .unwrap();
        assert!((p1 - p2).abs() < 1e-4, "{p1} vs {p2}");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
        let (status, by_b64) = s.post("/predict?top_k=4", &json!({"image_base64": b64}));
        assert_eq!(status, 200, "{by_b64}");
        assert_eq!(by_b64["class"], by_values["class"]);
        assert_eq!(by_b64["top"].as_array().unwrap().len(), 4);
        // A bigger colour JPEG goes through conversion and resizing.
        let jpeg = encode(&pixels, image::ImageFormat::Jpeg, 96);
        let (status, _, by_jpeg) = s.post_raw("/predict", "image/jpeg", jpeg);
        assert_eq!(status, 200, "{by_jpeg}");
        assert!(by_jpeg["label"].is_string());
    }
}

#[test]
fn bad_images_are_refused_with_a_reason() {
    let s = Server::start(&["--body-limit", "100000"]);
    let (status, _, r) = s.post_raw("/predict", "image/png", b"not a png at all".to_vec());
    assert_eq!(status, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("cannot decode the image"), "{r}");
    let (status, r) = s.post("/predict", &json!({"image_base64": "@@@"}));
    assert_eq!(status, 400);
    assert!(r["error"].as_str().unwrap().contains("not valid base64"), "{r}");
    let (status, _, r) = s.post_raw("/predict", "image/png", vec![0u8; 200_000]);
    assert_eq!(status, 413, "{r}");
    let (status, _, r) = s.post_raw("/predict", "text/plain", b"hello".to_vec());
    assert_eq!(status, 400);
    assert!(r["error"].as_str().unwrap().contains("image/png"), "{r}");
    assert!(s.healthy());
}
