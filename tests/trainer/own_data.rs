//! Training on a user's own data: a CSV file and a folder of PNG images, both made from
//! real Fashion-MNIST samples.

use crate::util::{kiln_train, stderr, stdout};
use kiln_data::{Dataset, KnownDataset, Split};
use std::fmt::Write;
use std::path::Path;

fn quick(out: &Path, config: &Path) -> std::process::Output {
    let (c, o) = (config.to_str().unwrap(), out.to_str().unwrap());
    kiln_train(&["train", "--quiet", "--threads", "1", "--config", c, "--out", o])
}

/// Writes samples `range` of Fashion-MNIST's training set as `dir/name`: 49 features per
/// row (a 7x7 subsample of each image) and the class name as the label, keeping the rows
/// whose class name `keep` accepts and renaming classes with `rename`.
fn write_csv(
    dir: &Path,
    name: &str,
    range: std::ops::Range<usize>,
    keep: impl Fn(&str) -> bool,
    rename: impl Fn(&str) -> String,
) -> std::path::PathBuf {
    let data = KnownDataset::FashionMnist.load(None, Split::Train).unwrap();
    let mut text = (0..49).map(|i| format!("p{i}")).collect::<Vec<_>>().join(",") + ",garment\n";
    for i in range {
        let class = &data.classes()[data.label(i).unwrap() as usize];
        if !keep(class) {
            continue;
        }
        let px = data.raw_pixels(i).unwrap();
        for y in 0..7 {
            for x in 0..7 {
                write!(text, "{},", px[(y * 4 + 2) * 28 + x * 4 + 2]).unwrap();
            }
        }
        writeln!(text, "{}", rename(class)).unwrap();
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A config training an MLP on the CSV files `train` and `test`.
fn csv_config(dir: &Path, train: &Path, test: &Path) -> std::path::PathBuf {
    let config = dir.join("csv.toml");
    std::fs::write(
        &config,
        format!(
            "epochs = 3\nbatch_size = 64\n[model]\narch = \"mlp\"\nhidden = [64]\n[data]\ndataset = \"csv\"\ntrain = {:?}\ntest = {:?}\nlabel_column = \"garment\"\n",
            train.display().to_string(),
            test.display().to_string()
        ),
    )
    .unwrap();
    config
}

#[test]
fn a_csv_file_of_features_trains_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let train = write_csv(dir.path(), "train.csv", 0..3000, |_| true, str::to_string);
    let test = write_csv(dir.path(), "test.csv", 3000..3500, |_| true, str::to_string);
    let config = csv_config(dir.path(), &train, &test);
    let out = dir.path().join("run");
    let o = quick(&out, &config);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = kiln_package::Package::read_manifest(out.join("package")).unwrap();
    assert_eq!(manifest.input.shape, vec![-1, 49]);
    assert_eq!(
        manifest.output.labels[0], "Ankle boot",
        "text labels become sorted class names"
    );
    assert!(manifest.training.unwrap().metrics["test_accuracy"] > 0.6);
    let o = kiln_train(&[
        "eval",
        "--package",
        out.join("package").to_str().unwrap(),
        "--config",
        out.join("config.json").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(r["samples"], 500);
}

#[test]
fn a_test_set_missing_a_class_keeps_its_labels_and_an_unknown_class_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let train = write_csv(dir.path(), "train.csv", 0..3000, |_| true, str::to_string);
    // Without "Ankle boot", the first class in sorted order: read on its own, every other
    // class of this test set would be numbered one lower than in training.
    let test = write_csv(
        dir.path(),
        "test.csv",
        3000..3600,
        |c| c != "Ankle boot",
        str::to_string,
    );
    let out = dir.path().join("run");
    let o = quick(&out, &csv_config(dir.path(), &train, &test));
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = kiln_package::Package::read_manifest(out.join("package")).unwrap();
    let acc = manifest.training.unwrap().metrics["test_accuracy"];
    assert!(acc > 0.6, "test accuracy {acc}: labels shifted?");
    // `eval` maps by name too.
    let pkg = out.join("package");
    let eval = |config: &Path| {
        kiln_train(&[
            "eval",
            "--package",
            pkg.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
    };
    let o = eval(&out.join("config.json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(r["accuracy"].as_f64().unwrap() > 0.6, "{r}");
    // A test class the model does not know is an error naming it (exit 4).
    let odd = write_csv(
        dir.path(),
        "odd.csv",
        3000..3100,
        |_| true,
        |c| {
            if c == "Bag" {
                "Handbag".into()
            } else {
                c.to_string()
            }
        },
    );
    let o = eval(&csv_config(dir.path(), &train, &odd));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("\"Handbag\"") && stderr(&o).contains("does not know"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_folder_of_png_images_trains_a_cnn() {
    let dir = tempfile::tempdir().unwrap();
    let data = KnownDataset::FashionMnist.load(None, Split::Train).unwrap();
    // Three classes, 150 training and 30 test images each, as RGB PNGs of another size, so
    // that the reader has to convert and resize.
    let keep = [1usize, 7, 8]; // trouser, sneaker, bag
    let mut counts = [0usize; 10];
    for i in 0..data.len() {
        let label = data.label(i).unwrap() as usize;
        if !keep.contains(&label) || counts[label] >= 180 {
            continue;
        }
        let split = if counts[label] < 150 { "train" } else { "test" };
        counts[label] += 1;
        let folder = dir.path().join(split).join(data.classes()[label].replace('/', "-"));
        std::fs::create_dir_all(&folder).unwrap();
        let grey = image::GrayImage::from_raw(28, 28, data.raw_pixels(i).unwrap().to_vec()).unwrap();
        let rgb = image::DynamicImage::ImageLuma8(grey)
            .resize_exact(32, 32, image::imageops::FilterType::Triangle)
            .to_rgb8();
        rgb.save(folder.join(format!("{i}.png"))).unwrap();
        if keep.iter().all(|&k| counts[k] >= 180) {
            break;
        }
    }
    let config = dir.path().join("images.json");
    let cfg = serde_json::json!({
        "epochs": 2,
        "batch_size": 32,
        "model": {"arch": "cnn", "channels": [8, 16], "hidden": 32},
        "data": {
            "dataset": "image-folder",
            "train": dir.path().join("train"),
            "test": dir.path().join("test"),
            "image": {"channels": 1, "height": 28, "width": 28},
            "augment": {"hflip": true, "shift": 1},
        },
    });
    std::fs::write(&config, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let out = dir.path().join("run");
    let o = quick(&out, &config);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = kiln_package::Package::read_manifest(out.join("package")).unwrap();
    assert_eq!(manifest.output.labels, vec!["Bag", "Sneaker", "Trouser"]);
    assert_eq!(manifest.input.image.unwrap().channels, 1);
    let acc = manifest.training.unwrap().metrics["test_accuracy"];
    assert!(acc > 0.8, "three easy classes: test accuracy {acc}");
    // A colour photo of another size goes through predict's image path.
    let photo = dir.path().join("bag.jpg");
    let bag = std::fs::read_dir(dir.path().join("test/Bag"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    image::open(&bag)
        .unwrap()
        .resize_exact(64, 48, image::imageops::FilterType::Triangle)
        .save(&photo)
        .unwrap();
    let o = kiln_train(&[
        "predict",
        "--package",
        out.join("package").to_str().unwrap(),
        photo.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"label\""), "{}", stdout(&o));
}
