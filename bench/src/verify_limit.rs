//! The peer of the ingest benchmark: how many Ed25519 signatures per second
//! the same cores verify in a plain loop (`verify_strict`, one at a time, one
//! thread per core), on messages the size of the reports being ingested.

use ed25519_dalek::{Signer, SigningKey};
use std::time::{Duration, Instant};

/// Signatures verified per second on all cores, over `secs` seconds.
pub fn measure(message_len: usize, secs: f64) -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let msg: Vec<u8> = (0..message_len).map(|i| i as u8).collect();
    let sig = key.sign(&msg);
    let vk = key.verifying_key();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (msg, sig, vk) = (&msg, &sig, &vk);
                s.spawn(move || {
                    let end = Instant::now() + Duration::from_secs_f64(secs);
                    let mut n = 0u64;
                    while Instant::now() < end {
                        for _ in 0..64 {
                            if vk.verify_strict(msg, sig).is_ok() {
                                n += 1;
                            }
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    total as f64 / secs
}
