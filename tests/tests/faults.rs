//! Faults a kill cannot make: a full filesystem and failing writes or
//! `fsync`s under the hub's store and under a recipient's delivery log, a
//! network that cuts connections mid-stream, and a recipient too slow to
//! keep up. A report is refused or a batch left unacknowledged, never
//! acknowledged and then lost; when the fault is gone, work goes on.

use meldnet_proto::v1 as pb;
use meldnet_tests::faults::{FaultShim, SmallDisk};
use meldnet_tests::*;
use std::path::Path;

/// Replaces `key = "default"` in a config file with an absolute path.
fn point(config: &Path, key: &str, default: &str, to: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let line = format!("{key} = \"{default}\"");
    assert!(text.contains(&line), "{} has no {line}", config.display());
    let text = text.replace(&line, &format!("{key} = \"{}\"", to.display()));
    std::fs::write(config, text).unwrap();
}

fn reports(n: usize) -> Vec<pb::Report> {
    (0..n)
        .map(|_| sample_report("NL", "DE").to_proto())
        .collect()
}

fn ids(reports: &[pb::Report]) -> Vec<String> {
    reports.iter().map(|r| r.id.clone()).collect()
}

/// The refusal of a batch submitted as node NL.
async fn refused(fed: &Federation, reports: &[pb::Report]) -> String {
    match fed.submit_many("NL", reports).await {
        Ok(d) => panic!("{} reports receipted on a failing disk", d.len()),
        Err(e) => format!("{e:#}"),
    }
}

/// The report ids in a delivery log, in order.
fn logged(dir: &Path) -> Vec<String> {
    let file = meldnet_recipient::log_path(dir);
    if std::fs::metadata(&file).map_or(0, |m| m.len()) == 0 {
        return Vec::new();
    }
    meldnet_recipient::LogReader::open(dir)
        .unwrap()
        .map(|r| r.unwrap().report_id().to_string())
        .collect()
}

/// The hub's queue length and stored reports.
async fn counts(fed: &Federation) -> (u64, u64) {
    let s = fed.state().await.unwrap();
    (s.reports, s.queued)
}

/// A hub whose store is on a 64 MiB disk of its own, keeping `min_free_mib`
/// back, holding 200 receipted reports.
async fn hub_on_a_small_disk(min_free_mib: u64) -> (Federation, SmallDisk, Vec<pb::Report>) {
    let mut fed = Federation::init("NL,DE", "DE/bka").unwrap();
    let disk = SmallDisk::mount(&fed.scratch("hubfs"), 64).unwrap();
    let data = disk.path().join("data");
    point(&fed.hub_config(), "data_dir", "data", &data);
    fed.add_hub_config(&format!("[store]\nmin_free_mib = {min_free_mib}"))
        .unwrap();
    fed.start_hub().unwrap();
    let first = reports(200);
    fed.submit_many("NL", &first).await.unwrap();
    (fed, disk, first)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_under_the_hub_refuses_new_reports_keeps_acknowledging_and_recovers() {
    let (mut fed, disk, first) = hub_on_a_small_disk(8).await;
    let (stored, queued) = counts(&fed).await;
    assert_eq!(stored, 200);

    // 2 MiB left, less than the 8 kept back: new reports are refused with a
    // reason, and nothing of them is stored.
    let filler = disk.fill(2 << 20).unwrap();
    let second = reports(200);
    let why = refused(&fed, &second).await;
    assert!(
        why.contains("ResourceExhausted") || why.contains("resource"),
        "{why}"
    );
    assert!(why.contains("min_free_mib"), "{why}");
    assert_eq!(
        counts(&fed).await,
        (stored, queued),
        "nothing of a refused batch is kept"
    );
    assert!(fed.hub_exit().is_none(), "the hub stays up on a full disk");

    // Acknowledgements still go through on the room kept back.
    let out = fed.scratch("bka");
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert_received(&o, &ids(&first));

    // Space returns: the same batch is taken, without a restart.
    std::fs::remove_file(filler).unwrap();
    fed.submit_many("NL", &second).await.unwrap();
    assert_eq!(counts(&fed).await.0, 400);
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert_received(&o, &ids(&second));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_full_to_the_last_byte_refuses_and_never_acknowledges_what_it_lost() {
    // No room kept back: the writes themselves meet ENOSPC.
    let (mut fed, disk, first) = hub_on_a_small_disk(0).await;

    let filler = disk.fill(0).unwrap();
    let second = reports(300);
    let why = refused(&fed, &second).await;
    // Either the hub refused (its bodies could not be written), or it
    // stopped because its store could not flush; nothing was receipted.
    let stopped = fed.hub_exit();
    println!("refused: {why}; hub stopped: {stopped:?}");
    std::fs::remove_file(filler).unwrap();
    if stopped.is_some() {
        // Its supervisor starts it again.
        fed.start_hub().unwrap();
    } else {
        assert!(why.contains("No space left on device"), "{why}");
    }
    assert_eq!(
        counts(&fed).await.0,
        200,
        "only what was receipted is stored"
    );
    fed.submit_many("NL", &second).await.unwrap();
    let out = fed.scratch("bka");
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    let mut all = ids(&first);
    all.extend(ids(&second));
    assert_received(&o, &all);
    fed.stop_hub();
    let o = run(std::process::Command::new(bin("meldnet-hub"))
        .args(["store", "check", "--config"])
        .arg(fed.hub_config()));
    assert!(o.status.success(), "{}", stdout(&o));
}

/// Waits until the hub has stopped itself.
fn wait_for_hub_exit(fed: &mut Federation) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fed.hub_exit().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the hub went on without its store: {}",
            fed.hub_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        fed.hub_log().contains("stopping the hub"),
        "{}",
        fed.hub_log()
    );
}

/// The hub with the fault shim on its store: `what` fails on every file of
/// the store (`file` empty) or on sled's log alone (`file` "db"), while a
/// batch is submitted and police acknowledge. On the whole store the bodies
/// cannot be made durable first: the batch is refused, acknowledgements go
/// unconfirmed, the hub goes on and needs no restart. On sled's log alone
/// the flush fails after the batch was applied: the hub stops itself,
/// answering nothing, and is started again, as its supervisor would. Either
/// way, healed, it holds every receipted report, takes the refused batch,
/// and redelivers only what was never confirmed.
async fn hub_store_fault(what: &str, file: &str) {
    let mut fed = Federation::init("NL,DE", "DE/bka").unwrap();
    let data = fed.root().join("hub/data");
    let shim = FaultShim::build(&fed.scratch("shim"), &data, file).unwrap();
    fed.hub_env = shim.env();
    fed.start_hub().unwrap();
    let first = reports(100);
    fed.submit_many("NL", &first).await.unwrap();

    shim.fail(what).unwrap();
    let second = reports(100);
    let why = refused(&fed, &second).await;
    let out = fed.scratch("bka");
    let pull = |fed: &Federation| fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    let mut unconfirmed = Vec::new();
    if file.is_empty() {
        assert!(why.contains("Input/output error"), "{why}");
        assert!(fed.hub_exit().is_none(), "a refused batch stopped the hub");
        assert_eq!(
            counts(&fed).await.0,
            100,
            "nothing of a refused batch is kept"
        );
        let o = pull(&fed);
        assert!(
            !o.status.success(),
            "acknowledgements confirmed on a failing disk: {} {}",
            stderr(&o),
            fed.hub_log()
        );
        assert!(
            stderr(&o).contains("nothing was acknowledged"),
            "{}",
            stderr(&o)
        );
        // Stored in the police's log, never confirmed: they come again.
        unconfirmed = logged(&out);
        assert!(!unconfirmed.is_empty(), "{}", stderr(&o));
        shim.heal().unwrap();
        assert!(fed.hub_exit().is_none());
    } else {
        wait_for_hub_exit(&mut fed);
        shim.heal().unwrap();
        fed.start_hub().unwrap();
    }
    // Every receipted report is there. On the whole store nothing of the
    // refused batch is; after a stop, it may be (its bytes reached the file,
    // only the sync failed): never receipted, it is simply taken again.
    let stored = counts(&fed).await.0;
    if file.is_empty() {
        assert_eq!(stored, 100, "only what was receipted is stored");
    } else {
        assert!((100..=200).contains(&stored), "{stored} reports stored");
    }
    fed.submit_many("NL", &second).await.unwrap();
    let o = pull(&fed);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(already_stored(&o), unconfirmed.len(), "{}", stderr(&o));
    let mut all: Vec<String> = unconfirmed.into_iter().chain(stored_ids(&o)).collect();
    all.sort();
    let mut want = ids(&first);
    want.extend(ids(&second));
    want.sort();
    assert_eq!(all, want, "each report once");
    assert_received(&pull(&fed), &[]);
    fed.stop_hub();
    let o = run(std::process::Command::new(bin("meldnet-hub"))
        .args(["audit", "verify", "--config"])
        .arg(fed.hub_config()));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_fsync_under_the_hub_acknowledges_nothing_it_could_not_make_durable() {
    hub_store_fault("fsync", "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_write_under_the_hub_acknowledges_nothing_it_could_not_write() {
    hub_store_fault("write", "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_fsync_of_sleds_log_stops_the_hub_before_it_answers() {
    hub_store_fault("fsync", "db").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_write_of_sleds_log_stops_the_hub_before_it_answers() {
    hub_store_fault("write", "db").await;
}

/// A recipient whose delivery log cannot be written (`fail` makes it so):
/// the pull fails and acknowledges nothing; once healed, everything comes,
/// once.
async fn recipient_log_fault(fail: impl FnOnce(&Path) -> Box<dyn FnOnce()>, shim: Option<&str>) {
    let fed = Federation::start_default().unwrap();
    let sent = reports(150);
    fed.submit_many("NL", &sent).await.unwrap();
    let (_, queued) = counts(&fed).await;
    let out = fed.scratch("bka");
    let config = fed.agency_config("DE-bka");
    let pull = |env: &[(String, String)]| {
        run(std::process::Command::new(bin("meldnet-agency"))
            .args(["pull", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .envs(env.iter().map(|(k, v)| (k, v))))
    };
    let shim = shim.map(|what| {
        let s = FaultShim::build(&fed.scratch("shim"), &out, "").unwrap();
        s.fail(what).unwrap();
        s
    });
    let heal = fail(&out);
    let env = shim.as_ref().map(FaultShim::env).unwrap_or_default();
    let o = pull(&env);
    assert!(!o.status.success(), "a pull onto a failing disk succeeded");
    println!("{}", stderr(&o));
    // Whatever the hub counts as acknowledged is in the log; records whose
    // write or sync failed are not kept (and never acknowledged). Kept ones
    // whose acknowledgement the hub never took come again, known as stored.
    let kept = logged(&out);
    let acked = (queued - counts(&fed).await.1) as usize;
    assert!(
        acked <= kept.len(),
        "{acked} acknowledged, {} stored",
        kept.len()
    );
    heal();
    if let Some(s) = &shim {
        s.heal().unwrap();
    }
    let o = pull(&env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        already_stored(&o),
        kept.len() - acked,
        "an acknowledged delivery came again"
    );
    let mut all: Vec<String> = kept.into_iter().chain(stored_ids(&o)).collect();
    all.sort();
    let mut want = ids(&sent);
    want.sort();
    assert_eq!(all, want, "each report once");
    let o = run(std::process::Command::new(bin("meldnet-agency"))
        .args(["log", "check", "--log"])
        .arg(&out));
    assert!(o.status.success(), "{} {}", stdout(&o), stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recipient_on_a_full_disk_acknowledges_nothing_and_catches_up_when_space_returns() {
    let mut disk = None;
    recipient_log_fault(
        |out| {
            let d = SmallDisk::mount(out, 16).unwrap();
            // Room for the file and a few records: the batch fails part-way.
            let filler = d.fill(24 << 10).unwrap();
            disk = Some(d);
            Box::new(move || std::fs::remove_file(filler).unwrap())
        },
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recipient_whose_fsync_fails_acknowledges_nothing_and_catches_up_when_healed() {
    recipient_log_fault(|_| Box::new(|| {}), Some("fsync")).await;
}

/// Recipients that cannot keep up: one that never reads its stream, one
/// that reads and never acknowledges, one that reads a batch now and then
/// and acknowledges it, with some 90 MiB of report bodies queued for them (about 30 MiB on disk, compressed). The hub's
/// memory stays bounded: queues live on disk, a session holds at most a
/// few batches, and a recipient that does not read is held back by flow
/// control, not by memory.
#[tokio::test(flavor = "multi_thread")]
async fn slow_recipients_cost_the_hub_bounded_memory() {
    use meldnet_proto::v1::inbox_client::InboxClient;
    use std::time::{Duration, Instant};
    let fed = Federation::start_default().unwrap();
    let pid = fed.hub_pid().unwrap();
    // Big reports (64 items each), all hosted in DE: police DE, node DE
    // and Europol each get every one.
    let big = || {
        let mut r = sample_report("NL", "DE");
        let item = r.items[0].clone();
        r.items = (0..64u32)
            .map(|i| {
                let mut it = item.clone();
                it.sha256 = meldnet_core::Sha256::of(&i.to_be_bytes());
                it
            })
            .collect();
        r.to_proto()
    };
    let started = Instant::now();
    for _ in 0..10 {
        let batch: Vec<pb::Report> = (0..1000).map(|_| big()).collect();
        fed.submit_many("NL", &batch).await.unwrap();
    }
    let state = fed.state().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss_kib(pid).unwrap();

    let open = |stem: &'static str| {
        let fed = &fed;
        async move {
            let ch = fed.channel_as(stem).await.unwrap();
            let mut client = InboxClient::new(ch)
                .max_decoding_message_size(meldnet_core::limits::MAX_MESSAGE_BYTES);
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::DeliveryAck>(16);
            let stream = client
                .receive(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            (stream, tx)
        }
    };
    // Never reads.
    let (_deaf, _deaf_acks) = open("agencies/DE-bka/agency").await;
    // Reads, never acknowledges.
    let (mut hoarder, _hoarder_acks) = open("nodes/DE/node").await;
    let hoard = tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok(Some(b)) = hoarder.message().await {
            n += b.deliveries.len();
        }
        n
    });
    // Reads a batch every 200 ms and acknowledges it.
    let (mut slow, slow_acks) = open("agencies/EU-europol/agency").await;
    let trickle = tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok(Some(b)) = slow.message().await {
            n += b.deliveries.len();
            let seqs: Vec<u64> = b.deliveries.iter().map(|d| d.seq).collect();
            if !seqs.is_empty()
                && slow_acks
                    .send(pb::DeliveryAck {
                        seqs,
                        rejected: vec![],
                    })
                    .await
                    .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        n
    });
    let mut peak = base;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib(pid).unwrap());
    }
    let grew_mib = peak.saturating_sub(base) / 1024;
    let backlog_mib = std::fs::metadata(fed.root().join("hub/data/ledger/records.log"))
        .unwrap()
        .len()
        >> 20;
    println!(
        "hub RSS {} MiB with {} queue entries ({backlog_mib} MiB of bodies, {:.0} s to queue), \
         peak {} MiB with three slow recipients",
        base / 1024,
        state.queued,
        started.elapsed().as_secs_f64(),
        peak / 1024,
    );
    assert!(state.queued >= 30_000, "{state:?}");
    // About 90 MiB of bodies as they are sent; on disk a third of that once
    // the store compresses them.
    assert!(backlog_mib >= 28, "{backlog_mib} MiB queued");
    assert!(
        grew_mib < 48,
        "the hub grew by {grew_mib} MiB for three recipients that do not keep up"
    );
    drop(fed);
    let hoarded = hoard.await.unwrap();
    assert!(
        hoarded > 0 && hoarded <= meldnet_hub::delivery::MAX_UNACKED,
        "{hoarded}"
    );
    assert!(trickle.await.unwrap() > 0);
}
