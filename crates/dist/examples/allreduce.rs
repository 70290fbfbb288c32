//! A bare allreduce loop between ranks started by `kiln-train launch`-style variables
//! (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): prints the mean time of an allreduce of
//! N f32 values (default 101,770: the MLP's gradients), for benches/ddp.sh.
//!
//! `RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 cargo run --release --example allreduce -p kiln-dist [N]`

use kiln_dist::{ProcessGroup, ReduceOp, Rendezvous};
use kiln_tensor::{Device, Kind, Tensor};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: i64 = std::env::args().nth(1).map_or(Ok(101_770), |s| s.parse())?;
    kiln_tensor::tch::set_num_threads(1);
    let rv = Rendezvous::from_env()?.ok_or("set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT")?;
    let mut pg = ProcessGroup::join(&rv)?;
    let mut t = Tensor::f_zeros([n], (Kind::Float, Device::Cpu))?;
    for _ in 0..20 {
        pg.allreduce(&mut t, ReduceOp::Sum)?;
    }
    pg.barrier()?;
    let reps = 200;
    let start = Instant::now();
    for _ in 0..reps {
        pg.allreduce(&mut t, ReduceOp::Sum)?;
    }
    let ms = start.elapsed().as_secs_f64() / f64::from(reps) * 1e3;
    if rv.rank == 0 {
        println!(
            "{{\"bare_allreduce_ms\": {ms}, \"values\": {n}, \"world\": {}}}",
            rv.world
        );
    }
    Ok(())
}
