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
    }

    /// `src` (3x3) moved so that output (y, x) is input (y + dy, x + dx), zeros outside.
    fn shifted(src: &[f32; 9], dy: i64, dx: i64) -> [f32; 9] {
        let mut out = [0.0; 9];
        for y in 0..3i64 {
            for x in 0..3i64 {
                let (sy, sx) = (y + dy, x + dx);
                if (0..3).contains(&sy) && (0..3).contains(&sx) {
                    out[(y * 3 + x) as usize] = src[(sy * 3 + sx) as usize];
                }
            }
        }
        out
    }

    #[test]
    fn shifts_move_the_image_by_every_offset_up_to_the_limit() {
        let a = Augment { hflip: false, shift: 1 };
        let src = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut s = src;
            a.apply(&mut s, &[1, 3, 3], &mut SplitMix64::new(seed), &mut Vec::new());
            // The result is the image moved by one offset in [-1, 1] x [-1, 1].
            let offset = (-1..=1)
                .flat_map(|dy| (-1..=1).map(move |dx| (dy, dx)))
                .find(|&(dy, dx)| shifted(&src, dy, dx) == s)
                .unwrap_or_else(|| panic!("seed {seed}: {s:?} is no shift of the image"));
            seen.insert(offset);
        }
        // Every offset, the zero one included, is drawn: a shift that does nothing fails here.
        assert_eq!(seen.len(), 9, "offsets drawn: {seen:?}");
    }
}
