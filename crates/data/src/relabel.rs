//! `Relabeled`: a dataset whose labels are renumbered to another class list by name, so
//! that a test set read on its own (with only some of the classes, or in another order)
//! means the same classes as the training set or the model.

use crate::dataset::check_read;
use crate::{Dataset, Error, Result};
use std::sync::Arc;

/// A view on `inner` with its labels mapped to `classes` by name.
pub struct Relabeled {
    inner: Arc<dyn Dataset>,
    classes: Vec<String>,
    /// `map[inner_label]` = the label in `classes`.
    map: Vec<i64>,
}

/// `data` with its labels numbered as in `classes` (the training set's or the model's
/// class names). Each of `data`'s classes must be one of `classes`: one that is not is an
/// error naming it, since its samples could only be counted as some other class. Returns
/// `data` itself when the class lists already agree.
pub fn relabel(data: Arc<dyn Dataset>, classes: &[String], what: &str) -> Result<Arc<dyn Dataset>> {
    if data.classes() == classes {
        return Ok(data);
    }
    let mut map = Vec::with_capacity(data.classes().len());
    let mut unknown = Vec::new();
    for name in data.classes() {
        match classes.iter().position(|c| c == name) {
            Some(i) => map.push(i as i64),
            None => {
                unknown.push(format!("{name:?}"));
                map.push(-1);
            }
        }
    }
    if !unknown.is_empty() {
        return Err(Error::Invalid(format!(
            "{what} has class(es) {} that the model does not know; its classes are {classes:?}",
            unknown.join(", ")
        )));
    }
    Ok(Arc::new(Relabeled {
        inner: data,
        classes: classes.to_vec(),
        map,
    }))
}

impl Dataset for Relabeled {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn sample_shape(&self) -> &[usize] {
        self.inner.sample_shape()
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn label(&self, index: usize) -> Result<i64> {
        check_read(self.len(), 0, index, &[])?;
        let l = self.inner.label(index)?;
        usize::try_from(l)
            .ok()
            .and_then(|l| self.map.get(l).copied())
            .ok_or_else(|| Error::Invalid(format!("sample {index} has label {l}, outside its class list")))
    }
    fn read_into(&self, index: usize, out: &mut [f32]) -> Result<()> {
        self.inner.read_into(index, out)
    }
    fn is_in_memory(&self) -> bool {
        self.inner.is_in_memory()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Labels(Vec<String>, Vec<i64>);
    impl Dataset for Labels {
        fn len(&self) -> usize {
            self.1.len()
        }
        fn sample_shape(&self) -> &[usize] {
            &[1]
        }
        fn classes(&self) -> &[String] {
            &self.0
        }
        fn label(&self, i: usize) -> Result<i64> {
            Ok(self.1[i])
        }
        fn read_into(&self, i: usize, out: &mut [f32]) -> Result<()> {
            out[0] = i as f32;
            Ok(())
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn labels_follow_the_class_names_not_their_positions() {
        let train = names(&["cat", "dog", "fox"]);
        // A test set without "dog": read alone, "fox" would be label 1.
        let test: Arc<dyn Dataset> = Arc::new(Labels(names(&["cat", "fox"]), vec![0, 1, 1]));
        let r = relabel(test, &train, "the test set").unwrap();
        assert_eq!(r.classes(), &train[..]);
        assert_eq!((0..3).map(|i| r.label(i).unwrap()).collect::<Vec<_>>(), [0, 2, 2]);
        let same: Arc<dyn Dataset> = Arc::new(Labels(train.clone(), vec![2]));
        assert_eq!(relabel(same, &train, "x").unwrap().label(0).unwrap(), 2);
    }

    #[test]
    fn a_class_the_model_does_not_know_is_named() {
        let test: Arc<dyn Dataset> = Arc::new(Labels(names(&["cat", "wolf"]), vec![0, 1]));
        let err = relabel(test, &names(&["cat", "dog"]), "the test set")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("\"wolf\"") && err.contains("does not know"), "{err}");
    }
}
