//! Classification metrics: the confusion matrix, per-class precision, recall and F1.

use serde::{Deserialize, Serialize};

/// A confusion matrix: `counts[true][predicted]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    /// Row per true class, column per predicted class.
    pub counts: Vec<Vec<u64>>,
}

/// Precision, recall and F1 of one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// The class label.
    pub label: String,
    /// Of the samples predicted as this class, the fraction that are.
    pub precision: f64,
    /// Of the samples of this class, the fraction predicted as it.
    pub recall: f64,
    /// The harmonic mean of precision and recall.
    pub f1: f64,
    /// Samples of this class.
    pub support: u64,
}

impl Confusion {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Confusion {
        Confusion {
            counts: vec![vec![0; classes]; classes],
        }
    }

    /// Counts one prediction; out-of-range classes are ignored.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        if let Some(c) = self.counts.get_mut(truth).and_then(|row| row.get_mut(predicted)) {
            *c += 1;
        }
    }

    /// Per-class metrics; a class never predicted (or never present) gets 0 where the
    /// ratio is undefined, as scikit-learn does.
    pub fn per_class(&self, labels: &[String]) -> Vec<ClassMetrics> {
        let n = self.counts.len();
        (0..n)
            .map(|c| {
                let tp = self.counts[c][c] as f64;
                let predicted: u64 = (0..n).map(|t| self.counts[t][c]).sum();
                let support: u64 = self.counts[c].iter().sum();
                let precision = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
                let recall = if support > 0 { tp / support as f64 } else { 0.0 };
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassMetrics {
                    label: labels.get(c).cloned().unwrap_or_else(|| c.to_string()),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect()
    }

    /// The unweighted mean F1 over classes.
    pub fn macro_f1(&self, labels: &[String]) -> f64 {
        let pc = self.per_class(labels);
        pc.iter().map(|m| m.f1).sum::<f64>() / pc.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_class_metrics_match_a_hand_computed_example() {
        // truth:     0 0 0 1 1 2
        // predicted: 0 0 1 1 2 2
        let mut c = Confusion::new(3);
        for (t, p) in [(0, 0), (0, 0), (0, 1), (1, 1), (1, 2), (2, 2)] {
            c.add(t, p);
        }
        assert_eq!(c.counts, vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]);
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let m = c.per_class(&labels);
        // class a: precision 2/2, recall 2/3, f1 0.8
        assert_eq!((m[0].precision, m[0].recall, m[0].support), (1.0, 2.0 / 3.0, 3));
        assert!((m[0].f1 - 0.8).abs() < 1e-12);
        // class b: precision 1/2, recall 1/2, f1 1/2
        assert_eq!((m[1].precision, m[1].recall, m[1].f1), (0.5, 0.5, 0.5));
        // class c: precision 1/2, recall 1/1, f1 2/3
        assert!((m[2].f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.macro_f1(&labels) - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        let mut never = Confusion::new(2);
        never.add(0, 0);
        assert_eq!(never.per_class(&labels)[1].precision, 0.0);
    }
}
