//! The small residual network.

use crate::spec::image_input;
use crate::{Error, Result};
use kiln_tensor::{nn, nn::ModuleT, Tensor};
use serde::{Deserialize, Serialize};

/// A ResNet for small images: a 3x3 stem, then stages of basic residual blocks (two 3x3
/// convolutions with batch norm); each stage after the first doubles the width and halves
/// the resolution. Global average pooling and a linear layer give the logits.
/// Parameters: `stem.*`, `stage{s}.block{b}.{conv1,bn1,conv2,bn2,down_conv,down_bn}.*`, `out.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResnetSpec {
    /// Shape of one sample, `[channels, height, width]`.
    pub input: Vec<i64>,
    /// Channels of the first stage.
    pub width: i64,
    /// Residual blocks in each stage.
    pub blocks: Vec<usize>,
    /// Number of classes.
    pub classes: i64,
}

impl Default for ResnetSpec {
    fn default() -> Self {
        ResnetSpec {
            input: Vec::new(),
            width: 16,
            blocks: vec![2, 2, 2],
            classes: 0,
        }
    }
}

impl ResnetSpec {
    pub(crate) fn validate(&self) -> Result<()> {
        image_input(&self.input, "resnet")?;
        if self.width <= 0 || self.blocks.is_empty() || self.blocks.contains(&0) {
            return Err(Error::Spec(format!(
                "resnet needs a positive width and at least one block per stage, got width {} and blocks {:?}",
                self.width, self.blocks
            )));
        }
        Ok(())
    }

    pub(crate) fn build(&self, p: &nn::Path) -> nn::SequentialT {
        let conv = |p: nn::Path, i, o, k, stride| {
            let cfg = nn::ConvConfig {
                stride,
                padding: k / 2,
                bias: false,
                ..Default::default()
            };
            nn::conv2d(p, i, o, k, cfg)
        };
        let mut seq = nn::seq_t()
            .add(conv(p / "stem" / "conv", self.input[0], self.width, 3, 1))
            .add(nn::batch_norm2d(p / "stem" / "bn", self.width, Default::default()))
            .add_fn(|x| x.relu());
        let mut cin = self.width;
        for (s, &n) in self.blocks.iter().enumerate() {
            let cout = self.width << s;
            for b in 0..n {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let q = p / format!("stage{s}") / format!("block{b}");
                let down = (stride != 1 || cin != cout).then(|| {
                    (
                        conv(&q / "down_conv", cin, cout, 1, stride),
                        nn::batch_norm2d(&q / "down_bn", cout, Default::default()),
                    )
                });
                seq = seq.add(Block {
                    conv1: conv(&q / "conv1", cin, cout, 3, stride),
                    bn1: nn::batch_norm2d(&q / "bn1", cout, Default::default()),
                    conv2: conv(&q / "conv2", cout, cout, 3, 1),
                    bn2: nn::batch_norm2d(&q / "bn2", cout, Default::default()),
                    down,
                });
                cin = cout;
            }
        }
        seq.add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
            .add(nn::linear(p / "out", cin, self.classes, Default::default()))
    }
}

/// A basic residual block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
#[derive(Debug)]
struct Block {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    down: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let y = y.apply(&self.conv2).apply_t(&self.bn2, train);
        let shortcut = match &self.down {
            Some((c, bn)) => x.apply(c).apply_t(bn, train),
            None => x.shallow_clone(),
        };
        (y + shortcut).relu()
    }
}
