//! Weight-only 4-bit quantization for inference on CPU.
//!
//! A weight matrix `[outputs, inputs]` is kept as 4-bit integers `q` in groups of `group`
//! consecutive inputs, each group of each output with its own scale and zero:
//! `w ≈ (q − 8) · scale + zero`, the scheme of gpt-fast and of libtorch's
//! `_weight_int4pack_mm_for_cpu`, which multiplies by the packed weights directly. It is the
//! same information as a GGUF `Q4_1` block (`w = d · q + m`: scale `d`, zero `m + 8d`), so
//! weights that came from such a file are carried over up to the bf16 rounding of the
//! scales. Activations go through the product in bf16 (libtorch's fast kernel takes bf16;
//! llama.cpp likewise rounds activations, to 8 bits): about three significant digits.
//!
//! Decoding one token at a time reads every weight once per step, so its speed is set by
//! the bytes the weights take: 5 bits per weight here (4 and a bf16 scale and zero per 32)
//! against 32 in f32.
//!
//! ```
//! use kiln_tensor::{Int4Weight, Kind, Tensor};
//! let w = Tensor::randn([64, 128], (Kind::Float, kiln_tensor::Device::Cpu));
//! let q = Int4Weight::quantize(&w, 32)?;
//! let x = Tensor::randn([3, 128], (Kind::Float, kiln_tensor::Device::Cpu));
//! let y = q.matmul(&x)?;
//! assert_eq!(y.size(), vec![3, 64]);
//! # Ok::<(), kiln_tensor::Error>(())
//! ```

use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// A weight matrix quantized to 4 bits in groups, ready to multiply by activations.
#[derive(Debug)]
pub struct Int4Weight {
    /// `[outputs, inputs / 2]` uint8, two weights a byte, in libtorch's CPU layout.
    packed: Tensor,
    /// `[inputs / group, outputs, 2]` bf16: each group's scale and zero.
    scales_zeros: Tensor,
    /// `[outputs, inputs]` bf16: the same weights, kept for products of many rows
    /// ([`keep_bf16`](Self::keep_bf16)).
    dense: Option<Tensor>,
    group: i64,
    inputs: i64,
    outputs: i64,
}

impl Int4Weight {
    /// With a bf16 copy kept ([`keep_bf16`](Self::keep_bf16)), products of at least this
    /// many rows go through it. Measured on 2 cores of an AMD EPYC (Zen 4) for
    /// SmolLM2-135M's projections: the 4-bit kernel takes 0.4x the bf16 product's time at
    /// 1 row, the same at 8, 1.4x at 16 and 2x at 128.
    pub const BF16_ROWS: i64 = 8;

    /// The group sizes libtorch's kernel takes.
    pub const GROUPS: [i64; 4] = [32, 64, 128, 256];

    /// Quantizes `weight` `[outputs, inputs]` (a float tensor on the CPU) in groups of
    /// `group` inputs: each group's scale spans its smallest to its largest weight in 15
    /// steps, so that both are kept up to the rounding of the scale, and every other
    /// weight moves by at most half a step.
    pub fn quantize(weight: &Tensor, group: i64) -> Result<Int4Weight> {
        let size = weight.size();
        let [outputs, inputs] = size[..] else {
            return Err(Error::InvalidShape {
                shape: size,
                reason: "4-bit weights are a matrix [outputs, inputs]".into(),
            });
        };
        if !Self::GROUPS.contains(&group) {
            return Err(Error::InvalidShape {
                shape: size,
                reason: format!("the group size must be one of {:?}, got {group}", Self::GROUPS),
            });
        }
        if inputs % group != 0 || outputs % 16 != 0 {
            return Err(Error::InvalidShape {
                shape: size,
                reason: format!(
                    "4-bit weights need inputs divisible by the group size {group} and outputs divisible by 16"
                ),
            });
        }
        if weight.device() != Device::Cpu {
            return Err(Error::Device(format!(
                "4-bit weights run on the CPU; this weight is on {:?} (use bf16 or f32 weights there)",
                weight.device()
            )));
        }
        if !weight.is_floating_point() {
            return Err(Error::DType {
                expected: "a float weight".into(),
                got: format!("{:?}", weight.kind()),
            });
        }
        let groups = inputs / group;
        let w = weight.f_to_kind(Kind::Float)?.f_reshape([outputs, groups, group])?;
        let low = w.f_amin(-1, true)?;
        let high = w.f_amax(-1, true)?;
        // The scale and zero as the kernel will see them (bf16), so that each weight's
        // integer is the nearest under the stored values, not the exact ones.
        let scale = high
            .f_sub(&low)?
            .f_div_scalar(15.0)?
            .f_to_kind(Kind::BFloat16)?
            .f_to_kind(Kind::Float)?;
        let zero = low
            .f_add(&scale.f_mul_scalar(8.0)?)?
            .f_to_kind(Kind::BFloat16)?
            .f_to_kind(Kind::Float)?;
        // A constant group has scale 0: every weight is its zero, q = 8.
        let divisor = scale.f_where_scalarother(&scale.f_gt(0.0)?, 1.0)?;
        let q = w
            .f_sub(&zero)?
            .f_div(&divisor)?
            .f_add_scalar(8.0)?
            .f_round()?
            .f_clamp(0.0, 15.0)?
            .f_to_kind(Kind::Int)?
            .f_reshape([outputs, inputs])?;
        let packed = q.f_internal_convert_weight_to_int4pack_for_cpu(1)?;
        let scales_zeros = Tensor::f_stack(&[scale, zero], -1)?
            .f_reshape([outputs, groups, 2])?
            .f_transpose(0, 1)?
            .f_contiguous()?
            .f_to_kind(Kind::BFloat16)?;
        Ok(Int4Weight {
            packed,
            scales_zeros,
            dense: None,
            group,
            inputs,
            outputs,
        })
    }

    /// `x` `[..., inputs]` times the weights' transpose: `[..., outputs]`, in `x`'s dtype
    /// (the product itself runs in bf16 with f32 accumulation).
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        if size.last() != Some(&self.inputs) {
            return Err(Error::InvalidShape {
                shape: size,
                reason: format!("the last dimension must be the weights' {} inputs", self.inputs),
            });
        }
        let kind = x.kind();
        let rows = x.f_reshape([-1, self.inputs])?.f_to_kind(Kind::BFloat16)?;
        let y = match &self.dense {
            Some(dense) if rows.size()[0] >= Self::BF16_ROWS => rows.f_matmul(&dense.f_tr()?)?,
            _ => rows.f_internal_weight_int4pack_mm_for_cpu(&self.packed, self.group, &self.scales_zeros)?,
        };
        let mut shape = size;
        if let Some(last) = shape.last_mut() {
            *last = self.outputs;
        }
        Ok(y.f_reshape(shape.as_slice())?.f_to_kind(kind)?)
    }

    /// The weights as the kernel sees them, `[outputs, inputs]` f32: the kernel applied to
    /// the identity, so each value is `(q − 8) · scale + zero` rounded to bf16 (the kernel's
    /// output dtype). For checks, tests and [`keep_bf16`](Self::keep_bf16) (once, at load:
    /// an `[inputs, inputs]` identity through the kernel).
    pub fn dequantize(&self) -> Result<Tensor> {
        let eye = Tensor::f_eye(self.inputs, (Kind::BFloat16, Device::Cpu))?;
        Ok(eye
            .f_internal_weight_int4pack_mm_for_cpu(&self.packed, self.group, &self.scales_zeros)?
            .f_to_kind(Kind::Float)?
            .f_tr()?
            .f_contiguous()?)
    }

    /// Keeps a bf16 copy of these weights too (the 4-bit weights as the kernel sees them,
    /// [`dequantize`](Self::dequantize)d once), 16 more bits per weight: products of at
    /// least [`BF16_ROWS`](Self::BF16_ROWS) rows (a prompt, many sequences decoding at
    /// once) go through libtorch's bf16 matrix product, which is faster there than the
    /// 4-bit kernel; fewer rows still read only the 4-bit weights. Both multiply by the
    /// same weights, up to the bf16 rounding of the copy (the kernel's output dtype).
    pub fn keep_bf16(&mut self) -> Result<()> {
        self.dense = Some(self.dequantize()?.f_to_kind(Kind::BFloat16)?);
        Ok(())
    }

    /// Bytes of the bf16 copy, if one is kept.
    pub fn bf16_bytes(&self) -> usize {
        self.dense.as_ref().map_or(0, |d| d.numel() * 2)
    }

    /// Bytes the quantized weights take: their integers, scales and zeros.
    pub fn bytes(&self) -> usize {
        let packed = self.packed.numel();
        let scales = self.scales_zeros.numel() * 2;
        packed + scales
    }

    /// `[outputs, inputs]`.
    pub fn shape(&self) -> [i64; 2] {
        [self.outputs, self.inputs]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cpu() -> (Kind, Device) {
        (Kind::Float, Device::Cpu)
    }

    /// Weights of GGUF `Q4_1` form, `w = m + d·q`, with `d` a power of two and every group
    /// holding both `q = 0` and `q = 15`: quantization must give them back exactly.
    fn q4_1_like(outputs: i64, inputs: i64) -> Tensor {
        let q = Tensor::randint(16, [outputs, inputs / 32, 32], (Kind::Int64, Device::Cpu)).to_kind(Kind::Float);
        let _ = q.narrow(2, 0, 1).fill_(0.0);
        let _ = q.narrow(2, 1, 1).fill_(15.0);
        let m = Tensor::randint(64, [outputs, inputs / 32, 1], (Kind::Int64, Device::Cpu))
            .to_kind(Kind::Float)
            .g_sub_scalar(32.0)
            .g_div_scalar(64.0);
        q.g_mul_scalar(1.0 / 32.0).g_add(&m).reshape([outputs, inputs])
    }

    #[test]
    fn weights_of_q4_1_form_come_back_exactly_and_multiply_as_their_matrix() {
        tch::manual_seed(3);
        let w = q4_1_like(48, 96);
        let q = Int4Weight::quantize(&w, 32).unwrap();
        assert_eq!(q.dequantize().unwrap(), w);
        // bf16-exact inputs: the only difference left is the bf16 rounding of the output.
        let x = Tensor::randn([5, 96], cpu())
            .to_kind(Kind::BFloat16)
            .to_kind(Kind::Float);
        let y = q.matmul(&x).unwrap();
        assert_eq!(y.kind(), Kind::Float);
        let want = x.matmul(&w.tr());
        let err = (&y - &want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        assert!(err <= scale / 128.0, "error {err} for outputs up to {scale}");
        // Leading dimensions are kept.
        let y3 = q.matmul(&x.view([5, 1, 96])).unwrap();
        assert_eq!(y3.size(), vec![5, 1, 48]);
        assert_eq!(y3.view([5, 48]), y);
    }

    #[test]
    fn a_kept_bf16_copy_serves_products_of_many_rows_with_the_same_weights() {
        tch::manual_seed(5);
        let w = Tensor::randn([64, 128], cpu());
        let mut q = Int4Weight::quantize(&w, 32).unwrap();
        let x = Tensor::randn([20, 128], cpu());
        let few = x.narrow(0, 0, Int4Weight::BF16_ROWS - 1);
        let before = (q.matmul(&few).unwrap(), q.matmul(&x).unwrap());
        q.keep_bf16().unwrap();
        assert_eq!(q.bf16_bytes(), 64 * 128 * 2);
        // Fewer rows than BF16_ROWS still take the 4-bit kernel: the very same result.
        assert_eq!(q.matmul(&few).unwrap(), before.0);
        // More go through the bf16 product of the dequantized weights, exactly that, which
        // agrees with the 4-bit kernel up to the rounding of the bf16 output.
        let dense = q.dequantize().unwrap().to_kind(Kind::BFloat16);
        let want = x.to_kind(Kind::BFloat16).matmul(&dense.tr()).to_kind(Kind::Float);
        let many = q.matmul(&x).unwrap();
        assert_eq!(many, want);
        let err = (&many - &before.1).abs().max().double_value(&[]);
        let scale = many.abs().max().double_value(&[]);
        assert!(err <= scale / 64.0, "error {err} for outputs up to {scale}");
        // The two kernels may agree to the bit; a copy that is not the weights shows which
        // one ran.
        q.dense = Some(dense.g_mul_scalar(2.0));
        assert_eq!(q.matmul(&x).unwrap(), want.g_mul_scalar(2.0));
        assert_eq!(q.matmul(&few).unwrap(), before.0);
        assert_eq!(
            q.matmul(&x.narrow(0, 0, Int4Weight::BF16_ROWS)).unwrap(),
            want.narrow(0, 0, 8).g_mul_scalar(2.0)
        );
    }

    #[test]
    fn any_weight_moves_by_at_most_half_a_step_of_its_group() {
        tch::manual_seed(4);
        for group in Int4Weight::GROUPS {
            let w = Tensor::randn([32, 256], cpu());
            let q = Int4Weight::quantize(&w, group).unwrap();
            let grouped = w.view([32, 256 / group, group]);
            let step = (grouped.amax(-1, true) - grouped.amin(-1, true)) / 15.0;
            // Half a step, plus the bf16 rounding of scale, zero and the value itself.
            let allowed = step.g_mul_scalar(0.5 * 1.02).g_add_scalar(4.0 / 256.0);
            let moved = (q.dequantize().unwrap().view([32, 256 / group, group]) - &grouped).abs();
            assert!(
                bool::try_from(moved.le_tensor(&allowed).all()).unwrap(),
                "group {group}: a weight moved by {} ",
                moved.max().double_value(&[])
            );
        }
        // A constant group is kept.
        let w = Tensor::full([16, 32], 0.25, cpu());
        assert_eq!(Int4Weight::quantize(&w, 32).unwrap().dequantize().unwrap(), w);
    }

    #[test]
    fn shapes_groups_and_dtypes_it_cannot_take_are_refused() {
        let err = |w: &Tensor, g: i64| Int4Weight::quantize(w, g).unwrap_err().to_string();
        assert!(err(&Tensor::zeros([16, 64], cpu()), 48).contains("one of [32, 64, 128, 256]"));
        assert!(err(&Tensor::zeros([16, 48], cpu()), 32).contains("divisible by the group size 32"));
        assert!(err(&Tensor::zeros([20, 64], cpu()), 32).contains("outputs divisible by 16"));
        assert!(err(&Tensor::zeros([16, 2, 32], cpu()), 32).contains("a matrix"));
        assert!(err(&Tensor::zeros([16, 64], (Kind::Int64, Device::Cpu)), 32).contains("float"));
        let q = Int4Weight::quantize(&Tensor::zeros([16, 64], cpu()), 32).unwrap();
        assert!(q
            .matmul(&Tensor::zeros([2, 63], cpu()))
            .unwrap_err()
            .to_string()
            .contains("64 inputs"));
        assert_eq!(q.bytes(), 16 * 32 + 2 * 16 * 2 * 2);
        assert_eq!(q.shape(), [16, 64]);
    }
}
