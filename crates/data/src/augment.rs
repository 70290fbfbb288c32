//! Light image augmentation: random shifts (crop with zero padding) and horizontal flips.

use crate::SplitMix64;
use serde::{Deserialize, Serialize};

/// Augmentations applied to `[C, H, W]` training samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Flip left-right with probability 1/2.
    pub hflip: bool,
    /// Shift by up to this many pixels in each direction, filling with zeros (a random
    /// crop of the zero-padded image).
    pub shift: usize,
}

impl Augment {
    /// Whether this does anything.
    pub fn is_identity(&self) -> bool {
        !self.hflip && self.shift == 0
    }

    /// Augments one `[C, H, W]` sample in place; `scratch` is reused between calls.
    pub fn apply(&self, sample: &mut [f32], shape: &[usize], rng: &mut SplitMix64, scratch: &mut Vec<f32>) {
        let &[c, h, w] = shape else { return };
        let flip = self.hflip && rng.coin();
        let s = self.shift as i64;
        let (dy, dx) = if s > 0 {
            (
                rng.below(2 * s as u64 + 1) as i64 - s,
                rng.below(2 * s as u64 + 1) as i64 - s,
            )
        } else {
            (0, 0)
        };
        if !flip && dy == 0 && dx == 0 {
            return;
        }
        scratch.clear();
        scratch.extend_from_slice(sample);
        let (h, w) = (h as i64, w as i64);
        for ch in 0..c as i64 {
            for y in 0..h {
                for x in 0..w {
                    let sy = y + dy;
                    let sx0 = x + dx;
                    let sx = if flip { w - 1 - sx0 } else { sx0 };
                    let v = if (0..h).contains(&sy) && (0..w).contains(&sx) {
                        scratch[((ch * h + sy) * w + sx) as usize]
                    } else {
                        0.0
                    };
                    sample[((ch * h + y) * w + x) as usize] = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_and_shift_move_pixels_and_keep_the_sum_bounded() {
        let a = Augment { hflip: true, shift: 0 };
        let mut flipped = false;
        for seed in 0..16 {
            let mut s = [1.0, 2.0, 3.0, 4.0];
            a.apply(&mut s, &[1, 2, 2], &mut SplitMix64::new(seed), &mut Vec::new());
            assert!(s == [1.0, 2.0, 3.0, 4.0] || s == [2.0, 1.0, 4.0, 3.0]);
            flipped |= s == [2.0, 1.0, 4.0, 3.0];
        }
        assert!(flipped);
        let a = Augment { hflip: false, shift: 1 };
        let mut s = [1.0; 9];
        a.apply(&mut s, &[1, 3, 3], &mut SplitMix64::new(3), &mut Vec::new());
        assert!(s.iter().sum::<f32>() <= 9.0);
    }
}
