//! `kiln-train launch`: starts the ranks of one machine as child processes with the
//! variables `torchrun` sets, forwards SIGINT and SIGTERM to them, and when one rank
//! fails, stops the others and reports which one it was.

use crate::{Error, Result};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the other ranks get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// What to launch.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Ranks on this machine.
    pub nproc: usize,
    /// Machines in the job.
    pub nnodes: usize,
    /// This machine's index, from 0 (its ranks are `node_rank * nproc ..`).
    pub node_rank: usize,
    /// Rank 0's address (the store's host).
    pub master_addr: String,
    /// The store's port.
    pub master_port: u16,
    /// The program each rank runs, and its arguments.
    pub program: std::path::PathBuf,
    /// The arguments.
    pub args: Vec<String>,
    /// Extra environment for every rank (`KILN_DIST_TIMEOUT`, say).
    pub env: Vec<(String, String)>,
}

/// How the ranks ended.
#[derive(Debug)]
pub struct Outcome {
    /// Each local rank's global rank and exit status.
    pub statuses: Vec<(usize, ExitStatus)>,
    /// The first rank that failed, if one did, with its status.
    pub failed: Option<(usize, ExitStatus)>,
}

/// A status in words: "exited with code 1", "was killed by SIGKILL".
pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(s) => {
            let name = match s {
                libc::SIGKILL => "SIGKILL".to_string(),
                libc::SIGTERM => "SIGTERM".to_string(),
                libc::SIGINT => "SIGINT".to_string(),
                libc::SIGSEGV => "SIGSEGV".to_string(),
                libc::SIGABRT => "SIGABRT".to_string(),
                s => format!("signal {s}"),
            };
            format!("was killed by {name}")
        }
        None => format!("ended with {status}"),
    }
}

impl Launch {
    /// Starts the ranks and waits for them. `stop` is raised by the caller's signal
    /// handler: each rank then gets SIGTERM (they checkpoint and exit). When a rank fails
    /// (a non-zero exit, or a signal) the others get SIGTERM, then SIGKILL after 30 s.
    pub fn run(&self, stop: &Arc<AtomicBool>) -> Result<Outcome> {
        if self.nproc == 0 || self.nnodes == 0 || self.node_rank >= self.nnodes {
            return Err(Error::Launch(format!(
                "--nproc ({}) and --nnodes ({}) must be at least 1 and --node-rank ({}) below --nnodes",
                self.nproc, self.nnodes, self.node_rank
            )));
        }
        let world = self.nproc * self.nnodes;
        // As torchrun: several ranks on one machine each get one OpenMP thread unless told
        // otherwise, instead of each starting one per core and fighting over the cores
        // (`--threads N` still sets a rank's own count).
        let one_thread = self.nproc > 1 && std::env::var_os("OMP_NUM_THREADS").is_none();
        if one_thread {
            tracing::info!("setting OMP_NUM_THREADS=1 for each rank (set it to choose another count)");
        }
        let mut children: Vec<(usize, Child)> = Vec::with_capacity(self.nproc);
        for local in 0..self.nproc {
            let rank = self.node_rank * self.nproc + local;
            let mut cmd = Command::new(&self.program);
            cmd.args(&self.args)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", local.to_string())
                .env("LOCAL_WORLD_SIZE", self.nproc.to_string())
                .env("GROUP_RANK", self.node_rank.to_string())
                .env("MASTER_ADDR", &self.master_addr)
                .env("MASTER_PORT", self.master_port.to_string());
            if one_thread {
                cmd.env("OMP_NUM_THREADS", "1");
            }
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            match cmd.spawn() {
                Ok(c) => children.push((rank, c)),
                Err(e) => {
                    terminate(&mut children);
                    return Err(Error::Launch(format!(
                        "cannot start rank {rank} ({}): {e}",
                        self.program.display()
                    )));
                }
            }
        }
        tracing::info!(
            nproc = self.nproc,
            world,
            "started ranks {}..{} of {world} (store at {}:{})",
            self.node_rank * self.nproc,
            self.node_rank * self.nproc + self.nproc - 1,
            self.master_addr,
            self.master_port
        );
        let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
        let mut failed = None;
        let mut forwarded = false;
        let mut kill_at: Option<Instant> = None;
        loop {
            for (i, (rank, child)) in children.iter_mut().enumerate() {
                if statuses[i].is_some() {
                    continue;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    statuses[i] = Some(status);
                    if !status.success() && failed.is_none() && !forwarded {
                        failed = Some((*rank, status));
                    }
                }
            }
            if statuses.iter().all(Option::is_some) {
                break;
            }
            if let Some((rank, status)) = failed.filter(|_| kill_at.is_none()) {
                tracing::error!(rank, "rank {rank} {}: stopping the other ranks", describe(&status));
                signal_all(&children, &statuses, libc::SIGTERM);
                kill_at = Some(Instant::now() + STOP_GRACE);
            }
            if stop.load(Ordering::SeqCst) && !forwarded {
                forwarded = true;
                tracing::info!("forwarding the stop signal to every rank");
                signal_all(&children, &statuses, libc::SIGTERM);
            }
            if kill_at.is_some_and(|t| Instant::now() >= t) {
                signal_all(&children, &statuses, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let statuses = children
            .iter()
            .zip(statuses)
            .filter_map(|((rank, _), s)| s.map(|s| (*rank, s)))
            .collect();
        Ok(Outcome { statuses, failed })
    }
}

fn signal_all(children: &[(usize, Child)], statuses: &[Option<ExitStatus>], signal: i32) {
    for ((_, child), status) in children.iter().zip(statuses) {
        if status.is_none() {
            crate::ffi::send_signal(child.id(), signal);
        }
    }
}

fn terminate(children: &mut [(usize, Child)]) {
    for (_, c) in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}
