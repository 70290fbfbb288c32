//! Where the ranks of a job meet, from the variables `torchrun` and Kubeflow's
//! `PyTorchJob` set: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`.

use crate::{Error, Result};
use std::time::Duration;

/// The default collective and rendezvous timeout: PyTorch's, 30 minutes. It bounds how
/// long a rank waits for the others, so it must exceed the longest pause between
/// collectives (rank 0 alone evaluates and writes checkpoints while the others wait); a
/// rank that dies is reported at once whatever the timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// One rank's view of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendezvous {
    /// The store's host (rank 0's address).
    pub addr: String,
    /// The store's port.
    pub port: u16,
    /// This rank, from 0.
    pub rank: usize,
    /// The number of ranks.
    pub world: usize,
    /// This rank's index among the ranks of its machine.
    pub local_rank: usize,
    /// How long a rendezvous or a collective may wait for the other ranks.
    pub timeout: Duration,
    /// The address this rank's Gloo device listens on; `None`: the address the machine's
    /// hostname resolves to (loopback for a job on loopback).
    pub bind: Option<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse<T: std::str::FromStr>(name: &str, value: &str, expected: &str) -> Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| Error::Launch(format!("{name}={value:?} is not {expected}")))
}

impl Rendezvous {
    /// The job described by the environment, or `None` when `WORLD_SIZE` is not set (a
    /// single-process run). `KILN_DIST_TIMEOUT` (seconds) and `KILN_DIST_BIND` (an
    /// address) override the timeout and the listening address.
    pub fn from_env() -> Result<Option<Rendezvous>> {
        let Some(world) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        let world: usize = parse("WORLD_SIZE", &world, "a number of ranks")?;
        let get = |name: &str| {
            var(name).ok_or_else(|| {
                Error::Launch(format!(
                    "WORLD_SIZE is set ({world}) but {name} is not: a distributed run needs RANK, WORLD_SIZE, \
                     MASTER_ADDR and MASTER_PORT (as torchrun and PyTorchJob set them), or none of them"
                ))
            })
        };
        let rank: usize = parse("RANK", &get("RANK")?, "a rank number")?;
        let addr = get("MASTER_ADDR")?;
        let port: u16 = parse("MASTER_PORT", &get("MASTER_PORT")?, "a TCP port (1-65535)")?;
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => parse("LOCAL_RANK", &v, "a rank number")?,
            None => 0,
        };
        let timeout = match var("KILN_DIST_TIMEOUT") {
            Some(v) => Duration::from_secs_f64(parse::<f64>("KILN_DIST_TIMEOUT", &v, "a number of seconds")?.max(0.1)),
            None => DEFAULT_TIMEOUT,
        };
        let bind = var("KILN_DIST_BIND").or_else(|| is_loopback(&addr).then(|| "127.0.0.1".to_string()));
        let rv = Rendezvous {
            addr,
            port,
            rank,
            world,
            local_rank,
            timeout,
            bind,
        };
        rv.check()?;
        Ok(Some(rv))
    }

    /// Checks that the numbers are consistent.
    pub fn check(&self) -> Result<()> {
        if self.world == 0 {
            return Err(Error::Launch("WORLD_SIZE must be at least 1".into()));
        }
        if self.rank >= self.world {
            return Err(Error::Launch(format!(
                "RANK={} is not below WORLD_SIZE={}: ranks are numbered 0..{}",
                self.rank,
                self.world,
                self.world - 1
            )));
        }
        if self.port == 0 {
            return Err(Error::Launch("MASTER_PORT must be a port from 1 to 65535".into()));
        }
        Ok(())
    }
}

/// Whether `addr` names this machine's loopback interface.
pub fn is_loopback(addr: &str) -> bool {
    addr == "localhost" || addr.starts_with("127.") || addr == "::1"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rv(rank: usize, world: usize, port: u16) -> Rendezvous {
        Rendezvous {
            addr: "127.0.0.1".into(),
            port,
            rank,
            world,
            local_rank: 0,
            timeout: DEFAULT_TIMEOUT,
            bind: None,
        }
    }

    #[test]
    fn inconsistent_numbers_are_refused_with_what_was_expected() {
        let e = rv(2, 2, 29500).check().unwrap_err().to_string();
        assert!(e.contains("RANK=2 is not below WORLD_SIZE=2"), "{e}");
        assert!(rv(0, 0, 29500).check().is_err());
        assert!(rv(0, 2, 0).check().is_err());
        assert!(rv(1, 2, 29500).check().is_ok());
        assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && !is_loopback("10.0.0.2"));
    }
}
