//! kiln-dist's errors.

/// What went wrong in a process group.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The launch variables are missing, malformed or inconsistent.
    #[error("distributed launch: {0}")]
    Launch(String),
    /// The ranks could not meet at the store.
    #[error("rendezvous at {addr}:{port} as rank {rank} of {world} failed: {detail}")]
    Rendezvous {
        /// The store's address.
        addr: String,
        /// The store's port.
        port: u16,
        /// This rank.
        rank: usize,
        /// The number of ranks.
        world: usize,
        /// libtorch's message.
        detail: String,
    },
    /// A collective failed because one or more peers are gone (dead, hung past the
    /// timeout, or unreachable).
    #[error("{what} failed on rank {rank}: lost rank{} {} ({detail})", if lost.len() == 1 { "" } else { "s" }, join(lost))]
    PeerLost {
        /// The collective.
        what: &'static str,
        /// This rank.
        rank: usize,
        /// The ranks that did not answer.
        lost: Vec<usize>,
        /// libtorch's message.
        detail: String,
    },
    /// A collective failed for another reason (a shape mismatch, say).
    #[error("{what} failed on rank {rank}: {detail}")]
    Collective {
        /// The collective.
        what: &'static str,
        /// This rank.
        rank: usize,
        /// libtorch's message.
        detail: String,
    },
    /// A gradient bucket could not take a parameter's gradient.
    #[error("gradient buckets: {0}")]
    Buckets(String),
    /// A tensor operation around a collective failed.
    #[error(transparent)]
    Torch(#[from] kiln_tensor::tch::TchError),
}

fn join(ranks: &[usize]) -> String {
    ranks.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// kiln-dist's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
