//! Writes synthetic IM traffic as training samples for the dictionary: one file per frame,
//! holding the protobuf `Frame` body (the bytes LZ4 compresses).
//!
//! `cargo run --release -p imgate-codec --example gen_samples -- <dir> [count] [seed]`
//! (defaults: 20000 frames, seed 1). `codec/dict/train.sh` runs it.

#[path = "support/traffic.rs"]
#[allow(dead_code)] // reason: shared with dict_ratio, which uses other parts
mod traffic;

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: gen_samples <dir> [count] [seed]")?,
    );
    let count: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let seed: u64 = args.next().map_or(Ok(1), |a| a.parse())?;
    std::fs::create_dir_all(&dir)?;
    let mut traffic = traffic::Traffic::new(seed);
    let mut total = 0;
    for i in 0..count {
        let body = traffic.next_frame().encode_to_vec();
        total += body.len();
        std::fs::write(dir.join(format!("{i:06}.bin")), body)?;
    }
    println!(
        "{count} samples, {total} bytes, seed {seed}, in {}",
        dir.display()
    );
    Ok(())
}
