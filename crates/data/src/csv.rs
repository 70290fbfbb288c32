//! CSV files of numeric features with one label column.

use crate::dataset::check_read;
use crate::{Dataset, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

/// The largest integer label a CSV file may use. Integer labels are class indices, so a
/// label of `n` makes `n + 1` classes (and a model output as wide); a larger one is refused
/// rather than allocated, with a hint to name the classes instead.
pub const MAX_INTEGER_LABEL: i64 = 65_535;

/// Which column of a CSV file holds the label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelColumn {
    /// The column at this zero-based position.
    Index(usize),
    /// The column with this header name.
    Name(String),
}

impl Default for LabelColumn {
    fn default() -> Self {
        LabelColumn::Name("label".into())
    }
}

/// A tabular dataset: every column but the label is an `f32` feature.
///
/// Labels that are all non-negative integers are used as they are (classes `"0".."max"`,
/// `max` below [`MAX_INTEGER_LABEL`]); otherwise each distinct label text becomes a class,
/// in sorted order.
#[derive(Clone, Debug)]
pub struct CsvDataset {
    features: Vec<f32>,
    labels: Vec<i64>,
    shape: [usize; 1],
    classes: Vec<String>,
    feature_names: Vec<String>,
}

impl CsvDataset {
    /// Reads a CSV file with a header row.
    pub fn load(path: &Path, label: &LabelColumn) -> Result<CsvDataset> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_path(path)
            .map_err(|e| Error::format(path, e.to_string()))?;
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| Error::format(path, e.to_string()))?
            .iter()
            .map(str::to_string)
            .collect();
        let label_at = match label {
            LabelColumn::Index(i) if *i < headers.len() => *i,
            LabelColumn::Index(i) => {
                return Err(Error::format(
                    path,
                    format!(
                        "label column {i} is out of range: the file has {} columns",
                        headers.len()
                    ),
                ))
            }
            LabelColumn::Name(n) => headers.iter().position(|h| h == n).ok_or_else(|| {
                Error::format(
                    path,
                    format!("no column named {n:?} for the label; the columns are {headers:?}"),
                )
            })?,
        };
        if headers.len() < 2 {
            return Err(Error::format(
                path,
                "needs at least one feature column besides the label",
            ));
        }
        let width = headers.len() - 1;
        let mut features = Vec::new();
        let mut raw_labels = Vec::new();
        for (row, record) in reader.records().enumerate() {
            let line = row + 2;
            let record = record.map_err(|e| Error::format(path, format!("line {line}: {e}")))?;
            if record.len() != headers.len() {
                return Err(Error::format(
                    path,
                    format!("line {line}: {} fields, the header has {}", record.len(), headers.len()),
                ));
            }
            for (col, field) in record.iter().enumerate() {
                if col == label_at {
                    raw_labels.push(field.to_string());
                    continue;
                }
                let v: f32 = field.parse().map_err(|_| {
                    Error::format(
                        path,
                        format!("line {line}, column {:?}: {field:?} is not a number", headers[col]),
                    )
                })?;
                if !v.is_finite() {
                    return Err(Error::format(
                        path,
                        format!("line {line}, column {:?}: {field:?} is not finite", headers[col]),
                    ));
                }
                features.push(v);
            }
        }
        if raw_labels.is_empty() {
            return Err(Error::format(path, "has a header but no rows"));
        }
        let (labels, classes) = encode_labels(path, &raw_labels)?;
        let feature_names = headers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != label_at)
            .map(|(_, h)| h.clone())
            .collect();
        Ok(CsvDataset {
            features,
            labels,
            shape: [width],
            classes,
            feature_names,
        })
    }

    /// The names of the feature columns, in sample order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }
}

fn encode_labels(path: &Path, raw: &[String]) -> Result<(Vec<i64>, Vec<String>)> {
    let ints: Option<Vec<i64>> = raw.iter().map(|s| s.parse::<i64>().ok().filter(|v| *v >= 0)).collect();
    Ok(match ints {
        Some(ints) => {
            let (row, max) = ints
                .iter()
                .copied()
                .enumerate()
                .max_by_key(|(_, v)| *v)
                .unwrap_or((0, 0));
            if max > MAX_INTEGER_LABEL {
                return Err(Error::format(
                    path,
                    format!(
                        "line {}: label {max} is too large: integer labels are class indices \
                         (label n means n + 1 classes) and may be at most {MAX_INTEGER_LABEL}; \
                         for sparse ids, give the classes names (any label that is not an \
                         integer makes every label a class name)",
                        row + 2
                    ),
                ));
            }
            (ints, (0..=max).map(|i| i.to_string()).collect())
        }
        None => {
            let classes: Vec<String> = raw.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
            let labels = raw
                .iter()
                .map(|s| classes.binary_search(s).unwrap_or(0) as i64)
                .collect();
            (labels, classes)
        }
    })
}

impl Dataset for CsvDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn sample_shape(&self) -> &[usize] {
        &self.shape
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn label(&self, index: usize) -> Result<i64> {
        check_read(self.len(), 0, index, &[])?;
        Ok(self.labels[index])
    }
    fn is_in_memory(&self) -> bool {
        true
    }
    fn read_into(&self, index: usize, out: &mut [f32]) -> Result<()> {
        check_read(self.len(), self.sample_len(), index, out)?;
        let w = self.shape[0];
        out.copy_from_slice(&self.features[index * w..(index + 1) * w]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("data.csv");
        std::fs::write(&p, content).unwrap();
        (d, p)
    }

    #[test]
    fn reads_features_and_text_labels() {
        let (_d, p) = write("a,species,b\n1.5,setosa,2\n3,virginica,4.25\n0,setosa,-1\n");
        let ds = CsvDataset::load(&p, &LabelColumn::Name("species".into())).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.sample_shape(), &[2]);
        assert_eq!(ds.classes(), &["setosa".to_string(), "virginica".to_string()]);
        assert_eq!(ds.label(1).unwrap(), 1);
        let mut out = [0f32; 2];
        ds.read_into(1, &mut out).unwrap();
        assert_eq!(out, [3.0, 4.25]);
        assert_eq!(ds.feature_names(), &["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn integer_labels_are_kept_by_index() {
        let (_d, p) = write("x,label\n1,2\n2,0\n");
        let ds = CsvDataset::load(&p, &LabelColumn::Index(1)).unwrap();
        assert_eq!(ds.classes().len(), 3);
        assert_eq!(ds.label(0).unwrap(), 2);
    }

    #[test]
    fn integer_labels_past_the_limit_are_refused_naming_the_line() {
        // Found by the csv fuzz target: a label of 444444444442 made as many class names.
        let (_d, p) = write("label,x0,x1\n444444444442,5,6\n");
        let err = CsvDataset::load(&p, &LabelColumn::Index(0)).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("444444444442") && err.contains("65535"),
            "{err}"
        );
        let (_d, p) = write("x,label\n1,0\n2,65535\n");
        let ds = CsvDataset::load(&p, &LabelColumn::default()).unwrap();
        assert_eq!(ds.classes().len(), 65_536);
    }

    #[test]
    fn bad_cells_name_the_line_and_column() {
        let (_d, p) = write("x,label\n1,0\nabc,1\n");
        let err = CsvDataset::load(&p, &LabelColumn::default()).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("\"x\"") && err.contains("not a number"),
            "{err}"
        );
        let (_d, p) = write("x,y\n1,0\n");
        let err = CsvDataset::load(&p, &LabelColumn::default()).unwrap_err().to_string();
        assert!(err.contains("no column named \"label\""), "{err}");
        let (_d, p) = write("x,label\n1,0,3\n");
        assert!(CsvDataset::load(&p, &LabelColumn::default()).is_err());
    }
}
