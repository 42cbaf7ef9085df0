//! What decrypting a sealed blob costs one core, through the store's own reader.
//!
//! A sealed pull does everything a plain one does plus opening every 64 KiB record. On a
//! machine where the plain pull already keeps the serving core busy, that decryption time per
//! byte is added to it, so this rate bounds how close a sealed pull can come to a plain one.
//! `deploy/bench.sh` prints that bound next to the measured encryption cost.

use std::time::Instant;

use clap::Args;
use keelson_storage::at_rest::{MasterKeys, StoredReader, StoredWriter};

use crate::units::ByteSize;

#[derive(Debug, Args)]
pub struct CipherArgs {
    /// Plaintext bytes in the sealed test file.
    #[arg(long, default_value = "256MiB")]
    pub size: ByteSize,
    /// Passes over the file; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Directory for the test file (removed afterwards).
    #[arg(long, default_value = "/tmp")]
    pub dir: std::path::PathBuf,
}

/// Bytes per read, as the blob store streams a range.
const READ: u64 = 1 << 20;

pub fn run(args: &CipherArgs) -> std::io::Result<()> {
    let keys = MasterKeys::parse(&hex::encode(rand::random::<[u8; 32]>())).map_err(std::io::Error::other)?;
    let dir = tempfile::tempdir_in(&args.dir)?;
    let path = dir.path().join("cipher-test.sealed");
    let size = args.size.0;
    let mut writer = StoredWriter::create(&path, Some(&keys))?;
    let block = vec![0x5au8; READ as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(READ);
        writer.append(&block[..n as usize])?;
        left -= n;
    }
    writer.flush()?;
    drop(writer);
    let reader = StoredReader::open(&path, Some(&keys))?;
    let mut best = 0f64;
    for _ in 0..args.rounds.max(1) {
        let started = Instant::now();
        let mut at = 0;
        while at < size {
            let n = (size - at).min(READ);
            let pieces = reader.read_pieces(at, n)?;
            std::hint::black_box(&pieces);
            at += n;
        }
        best = best.max(size as f64 / started.elapsed().as_secs_f64() / 1e6);
    }
    println!("sealed read (pread + AES-256-GCM open, 64 KiB records, one core): {best:.0} MB/s");
    Ok(())
}
