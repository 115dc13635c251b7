//! Fills a stopped hub's store with reports, fast: generated and signed
//! with the nodes' own keys as a node worker makes them, then handed to the
//! hub's own ingest in this process (checked, verified, routed, placed in
//! cases, signed and stored as over the network, without the network), and
//! acknowledged by their recipients through the store, as if delivered: a
//! hub that already holds what it would after months, from which the ingest
//! benchmark measures how cost grows.

use crate::worker::make_report;
use anyhow::{bail, Context};
use meldnet_core::{CountryCode, SigningKey, SpiffeId};
use meldnet_hub::config::HubConfig;
use meldnet_hub::server::open_hub;
use meldnet_node::config::NodeConfig;
use meldnet_node::report::sign;
use std::path::Path;
use std::time::Instant;

/// Reports handed to ingest at once (the largest a stream's batch may be).
const BATCH: usize = 1024;

/// Batches in flight at once.
const IN_FLIGHT: usize = 8;

/// Stores `reports` reports from the nodes `origins` of the federation in
/// `fed` (the hub stopped), then acknowledges every queue entry as its
/// recipient would. Returns the ids stored.
pub fn run(fed: &Path, origins: &[&str], reports: usize, items: usize) -> anyhow::Result<usize> {
    let cfg = HubConfig::load(&fed.join("hub/hub.toml")).context("hub.toml")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut nodes = Vec::new();
    for cc in origins {
        let ncfg = NodeConfig::load(&fed.join(format!("nodes/{cc}/node.toml")))?;
        let key = SigningKey::load(&ncfg.signing_key)?;
        let code = CountryCode::parse(cc).map_err(anyhow::Error::msg)?;
        nodes.push((code, SpiffeId::node(&cfg.federation, code), key));
    }
    if nodes.is_empty() {
        bail!("no origin node");
    }
    let hosting = CountryCode::parse("DE").map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let stored = rt.block_on(async {
        let hub = open_hub(&cfg)?;
        let mut rng = rand::thread_rng();
        let mut stored = 0usize;
        let mut sent = 0usize;
        let mut turn = 0usize;
        // Several batches in flight, as a node's stream keeps them: the
        // next is checked while the last one waits for its flush.
        let mut flying = tokio::task::JoinSet::new();
        while sent < reports || !flying.is_empty() {
            while sent < reports && flying.len() < IN_FLIGHT {
                let n = BATCH.min(reports - sent);
                let Some((origin, caller, key)) = nodes.get(turn % nodes.len()) else {
                    bail!("no origin node");
                };
                turn += 1;
                let mut batch = Vec::with_capacity(n);
                for _ in 0..n {
                    let r = make_report(*origin, hosting, items, &mut rng)?;
                    batch.push(sign(&r.to_proto(), key));
                }
                let (ingest, caller) = (hub.ingest.clone(), caller.clone());
                flying.spawn(async move { ingest.submit(&caller, batch).await });
                sent += n;
                if sent % (BATCH * 200) < BATCH {
                    eprintln!(
                        "preload: {sent} sent, {:.0}/s",
                        sent as f64 / t.elapsed().as_secs_f64()
                    );
                }
            }
            if let Some(done) = flying.join_next().await {
                for r in done?? {
                    match r {
                        Ok(_) => stored += 1,
                        Err(e) => bail!("preload: a report was refused: {e}"),
                    }
                }
            }
        }
        // As if delivered: every recipient acknowledges its whole queue.
        let store = hub.ingest.store.clone();
        let recipients: Vec<SpiffeId> = hub
            .ingest
            .registry
            .agencies()
            .into_iter()
            .chain(
                hub.ingest
                    .registry
                    .nodes()
                    .into_iter()
                    .map(|cc| SpiffeId::node(&cfg.federation, cc)),
            )
            .collect();
        for r in recipients {
            let mut after = 0u64;
            loop {
                let page = store.queue_items_after(&r, after, 4096)?;
                let Some(last) = page.last().map(|(seq, _)| *seq) else {
                    break;
                };
                let seqs: Vec<u64> = page.iter().map(|(seq, _)| *seq).collect();
                store.record_delivered(
                    &r,
                    page.iter()
                        .map(|(seq, item)| (*seq, item.report_id()))
                        .collect(),
                );
                store.ack(&r, seqs).await?;
                after = last;
            }
        }
        store.flush()?;
        anyhow::Ok(stored)
    })?;
    eprintln!(
        "preload: {stored} reports stored and acknowledged in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(stored)
}
