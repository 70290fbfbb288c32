//! Requests to a module of named tensors (a TorchScript module of several inputs or
//! outputs): each request's tensors in the module's input order, batched with other
//! requests whose tensors have the same dtypes and sizes past the batch dimension.

use crate::worker::{run_error, Backend, Request, RunError};
use kiln_tensor::HostTensor;

/// One request's input tensors, in the module's input order, each `[rows, ...]`.
pub struct Tensors(pub Vec<HostTensor>);

impl Request for Tensors {
    /// The module's output tensors, in its output order, each `[rows, ...]`.
    type Output = Vec<HostTensor>;

    fn rows(&self) -> usize {
        self.0.first().map_or(0, HostTensor::rows)
    }

    fn joins(&self, first: &Self) -> bool {
        // Each request's tensors hold the same rows, or the joined batch could line up
        // while the requests' rows do not (each such request runs, and fails, alone).
        let even = |r: &Self| r.0.iter().all(|t| t.rows() == r.rows());
        even(self)
            && even(first)
            && self.0.len() == first.0.len()
            && self.0.iter().zip(&first.0).all(|(a, b)| {
                a.dtype == b.dtype && a.shape.len() == b.shape.len() && a.shape.get(1..) == b.shape.get(1..)
            })
    }

    fn join(parts: Vec<Self>) -> Result<Self, RunError> {
        let mut parts = parts.into_iter();
        let Some(Tensors(first)) = parts.next() else {
            return Ok(Tensors(Vec::new()));
        };
        let mut columns: Vec<Vec<HostTensor>> = first.into_iter().map(|t| vec![t]).collect();
        for Tensors(p) in parts {
            for (column, t) in columns.iter_mut().zip(p) {
                column.push(t);
            }
        }
        columns
            .into_iter()
            .map(|c| HostTensor::concat(c).map_err(|e| RunError::internal(e.to_string())))
            .collect::<Result<_, _>>()
            .map(Tensors)
    }

    fn split(output: Self::Output, rows: &[usize]) -> Result<Vec<Self::Output>, RunError> {
        Tensors::unjoin_tensors(output, rows)
    }

    fn unjoin(batch: Self, rows: &[usize]) -> Result<Vec<Self>, RunError> {
        Ok(Tensors::unjoin_tensors(batch.0, rows)?
            .into_iter()
            .map(Tensors)
            .collect())
    }
}

impl Tensors {
    /// Transposes per-tensor parts into per-request lists (`Request::split` and `unjoin`).
    fn unjoin_tensors(tensors: Vec<HostTensor>, rows: &[usize]) -> Result<Vec<Vec<HostTensor>>, RunError> {
        let mut answers: Vec<Vec<HostTensor>> = rows.iter().map(|_| Vec::with_capacity(tensors.len())).collect();
        for t in tensors {
            let parts = t
                .split(rows)
                .map_err(|e| RunError::internal(format!("the module's output does not follow the batch: {e}")))?;
            for (answer, part) in answers.iter_mut().zip(parts) {
                answer.push(part);
            }
        }
        Ok(answers)
    }
}

impl Backend<Tensors> for kiln_package::Package {
    fn run(&self, batch: &Tensors) -> Result<Vec<HostTensor>, RunError> {
        self.run_tensors(&batch.0).map_err(run_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_tensor::DType;

    fn t(shape: &[i64], first: u8) -> HostTensor {
        let n: i64 = shape.iter().product();
        HostTensor::new(DType::Uint8, shape.to_vec(), (0..n as u8).map(|i| first + i).collect()).unwrap()
    }

    #[test]
    fn requests_of_the_same_trailing_shapes_join_and_their_answers_split_back() {
        let a = Tensors(vec![t(&[1, 2], 0), t(&[1], 100)]);
        let b = Tensors(vec![t(&[2, 2], 10), t(&[2], 110)]);
        assert!(b.joins(&a));
        assert!(!Tensors(vec![t(&[1, 3], 0), t(&[1], 0)]).joins(&a));
        assert!(!Tensors(vec![t(&[1, 2], 0)]).joins(&a));
        let joined = Tensors::join(vec![a, b]).unwrap();
        assert_eq!(joined.rows(), 3);
        assert_eq!(joined.0[0].data, [0, 1, 10, 11, 12, 13]);
        let answers = Tensors::split(joined.0, &[1, 2]).unwrap();
        assert_eq!(answers[0], [t(&[1, 2], 0), t(&[1], 100)]);
        assert_eq!(answers[1], [t(&[2, 2], 10), t(&[2], 110)]);
        assert!(Tensors::split(vec![t(&[2], 0)], &[1, 2]).is_err());
    }
}
