//! A trained package, a model repository, and a running `kiln-serve`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Trains a package with the config overrides `sets`: the folder holding the run, and
/// the package's path in it.
pub fn train_package(sets: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let config = kiln_train::TrainConfig::load(None, &sets).unwrap();
    let opts = kiln_train::TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let report = kiln_train::train(&config, &dir.path().join("run"), &opts).unwrap();
    let pkg = report.package_dir.clone();
    (dir, pkg)
}

/// A package trained once per test process (an MLP on 3,000 Fashion-MNIST images).
pub fn trained_package() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        train_package(&[
            "model={arch=\"mlp\", hidden=[64]}",
            "data.limit_train=3000",
            "data.limit_test=200",
            "epochs=2",
            "threads=1",
            "name=\"fashion\"",
        ])
    })
    .1
}

/// Copies a package folder file by file, as `cp -r` would (not atomically).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A repository with `fashion` versions 1 and 2 (the same package twice).
pub fn repository() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    for v in ["1", "2"] {
        copy_dir(trained_package(), &repo.path().join("fashion").join(v));
    }
    repo
}

/// A small language model saved as a package once per test process: a byte-level BPE
/// tokenizer trained on a paragraph of Genesis, a Llama-style decoder of seeded random
/// weights (the output projection scaled up so that the most likely token stands clear of
/// the next, as in a trained model), a ChatML template and EOS as its stop token.
pub fn language_package() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let text = "In the beginning God created the heaven and the earth. And the earth was without form, \
                    and void; and darkness was upon the face of the deep. And the Spirit of God moved upon the \
                    face of the waters. And God said, Let there be light: and there was light. \u{e9}\u{e8} \u{1f600}";
        let tok = kiln_text::Tokenizer::train(std::iter::repeat_n(text, 20), 320).unwrap();
        let spec = kiln_model::DecoderSpec {
            vocab: 320,
            width: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            ffn_width: 128,
            context: 1024,
            ..kiln_model::DecoderSpec::default()
        };
        kiln_tensor::tch::manual_seed(11);
        let model = kiln_model::Decoder::new(spec, kiln_tensor::Device::Cpu).unwrap();
        kiln_tensor::tch::no_grad(|| {
            let _ = model.output_weight().shallow_clone().g_mul_scalar_(12.0);
        });
        let mut manifest = kiln_package::Manifest::language_model("tiny", 1, &model, tok.special());
        manifest.chat_template = Some(
            "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}\
             {% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
                .into(),
        );
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("package");
        kiln_package::LanguagePackage::save(&pkg, manifest, &model, &tok).unwrap();
        (dir, pkg)
    })
    .1
}

/// A language model whose greedy continuation is written in its weights: after each
/// token of `cycle` it gives the next (after the last, the first), so that the test knows
/// the text it must stream. The tiny model's tokenizer; every block's output projections
/// zeroed, so the last hidden state is the current token's normalised embedding; and an
/// output row per successor, that embedding's direction, which scores highest for its own
/// token. Saved as the package `name`; returns its folder.
pub fn scripted_package(name: &str, cycle: &[u32]) -> tempfile::TempDir {
    use kiln_tensor::{tch, Tensor};
    let tiny = kiln_package::LanguagePackage::load(language_package(), kiln_tensor::Device::Cpu).unwrap();
    let spec = kiln_model::DecoderSpec {
        tie_embeddings: false,
        ..tiny.model.spec().clone()
    };
    tch::manual_seed(12);
    let model = kiln_model::Decoder::new(spec, kiln_tensor::Device::Cpu).unwrap();
    tch::no_grad(|| {
        let vars = model.var_store().variables();
        for (name, v) in &vars {
            if name.contains("o_proj") || name.contains("down_proj") {
                let _ = v.shallow_clone().zero_();
            }
        }
        let embed = &vars["model.embed_tokens.weight"];
        let head = vars["lm_head.weight"].shallow_clone();
        let _ = head.shallow_clone().zero_();
        for (i, &t) in cycle.iter().enumerate() {
            let next = cycle[(i + 1) % cycle.len()];
            let e: Tensor = embed.get(i64::from(t));
            head.get(i64::from(next)).copy_(&(&e / e.norm()).g_mul_scalar(4.0));
        }
    });
    let manifest = kiln_package::Manifest::language_model(name, 1, &model, tiny.tokenizer.special());
    let dir = tempfile::tempdir().unwrap();
    kiln_package::LanguagePackage::save(dir.path().join("package"), manifest, &model, &tiny.tokenizer).unwrap();
    dir
}

/// [`repository`] with the language model `tiny` version 1 beside `fashion`.
pub fn lm_repository() -> tempfile::TempDir {
    let repo = repository();
    copy_dir(language_package(), &repo.path().join("tiny").join("1"));
    repo
}

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _repo: tempfile::TempDir,
    /// The server's stderr.
    log: tempfile::NamedTempFile,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts `kiln-serve` on a free port over a fresh repository, with extra flags.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_on(repository(), extra)
    }

    /// The repository folder.
    pub fn repo(&self) -> &Path {
        self._repo.path()
    }

    /// Starts `kiln-serve` on a free port over `repo`, with extra flags.
    pub fn start_on(repo: tempfile::TempDir, extra: &[&str]) -> Server {
        let bind = format!("127.0.0.1:{}", free_port());
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kiln-serve"))
            .args(["--model-repository", repo.path().to_str().unwrap(), "--bind", &bind])
            .args(extra)
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            url: format!("http://{bind}"),
            _repo: repo,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = server.try_get("/v2/health/ready") {
                return server;
            }
            assert!(Instant::now() < deadline, "kiln-serve did not become ready in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into()
    }

    fn try_get(&self, path: &str) -> Result<(u16, String), ureq::Error> {
        let mut r = Self::agent().get(&format!("{}{path}", self.url)).call()?;
        Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
    }

    /// GET: status and JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let (s, b) = self.try_get(path).unwrap();
        (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }

    /// POST a raw body with a content type: status, headers' Retry-After, JSON body.
    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Option<String>, Value) {
        let mut r = Self::agent()
            .post(&format!("{}{path}", self.url))
            .header("content-type", content_type)
            .send(&body[..])
            .unwrap();
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = r.body_mut().read_to_string().unwrap();
        (
            r.status().as_u16(),
            retry,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Any request with extra headers: status, the headers asked for, JSON body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value, ureq::http::HeaderMap) {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let mut r = Self::agent().run(b.body(bytes).unwrap()).unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        (
            r.status().as_u16(),
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            r.headers().clone(),
        )
    }

    /// GET: status must be 200; the body as text.
    pub fn get_text(&self, path: &str) -> String {
        let (status, body) = self.try_get(path).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// The sum of metric `name`'s lines that contain `filter`.
    pub fn metric(&self, name: &str, filter: &str) -> f64 {
        metric(&self.try_get("/metrics").unwrap().1, name, filter)
    }

    /// POST JSON: status and JSON body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, _, v) = self.post_raw(path, "application/json", serde_json::to_vec(body).unwrap());
        (s, v)
    }

    /// What the server has written to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the server SIGTERM (what `docker stop` and Kubernetes send).
    pub fn sigterm(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
    }

    /// The exit status, once the process has ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Whether the server still answers its health checks.
    pub fn healthy(&self) -> bool {
        self.get("/v2/health/live").0 == 200 && self.get("/v2/health/ready").0 == 200
    }
}

/// The first `n` Fashion-MNIST test images as values in 0..1, and their labels.
pub fn test_images(n: usize) -> Vec<(Vec<f32>, i64)> {
    use kiln_data::Dataset;
    let test = kiln_data::KnownDataset::FashionMnist
        .load(None, kiln_data::Split::Test)
        .unwrap();
    (0..n)
        .map(|i| {
            let mut v = vec![0f32; 784];
            test.read_into(i, &mut v).unwrap();
            (v, test.label(i).unwrap())
        })
        .collect()
}

/// The v2 request for `images` as one batch.
pub fn v2_request(images: &[Vec<f32>]) -> Value {
    let data: Vec<f32> = images.concat();
    serde_json::json!({
        "id": "req-1",
        "inputs": [{"name": "input", "shape": [images.len(), 1, 28, 28], "datatype": "FP32", "data": data}]
    })
}

/// The sum of the lines of metric `name` in Prometheus `text` that contain `filter`.
pub fn metric(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `cond` every 20 ms for up to 30 s; how long it took.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Every number of a JSON array, nested arrays flattened in order.
pub fn floats(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(floats).collect(),
        x => vec![x.as_f64().unwrap()],
    }
}
