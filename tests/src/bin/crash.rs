//! `crash`: the crash harness as a command, for runs longer than a test:
//! `crash --kills 500 [--seed N] [--per-wave N] [--gap-ms LO,HI]
//! [--cut-bytes LO,HI]` (the last: through a proxy that cuts connections). Prints
//! progress on stderr and, last, one JSON object of the outcome; exits 1 if
//! a promise broke (the seed is in the message, so the schedule replays).

use anyhow::{bail, Context, Result};
use meldnet_tests::crash::{run_plan, Plan};

fn parse(args: &[String]) -> Result<Plan> {
    let mut plan = Plan {
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        ..Plan::default()
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let number = |v: &str| -> Result<u64> {
            v.parse()
                .with_context(|| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--kills" => plan.kills = number(value)? as usize,
            "--seed" => plan.seed = number(value)?,
            "--per-wave" => plan.per_wave = number(value)?.max(1) as usize,
            "--gap-ms" => {
                let (lo, hi) = value
                    .split_once(',')
                    .with_context(|| format!("{flag}: LO,HI"))?;
                let (lo, hi) = (number(lo)?, number(hi)?);
                if lo > hi {
                    bail!("{flag}: {lo} is more than {hi}");
                }
                plan.gap_ms = (lo, hi);
            }
            "--cut-bytes" => {
                let (lo, hi) = value
                    .split_once(',')
                    .with_context(|| format!("{flag}: LO,HI"))?;
                let (lo, hi) = (number(lo)?, number(hi)?);
                if lo == 0 || lo > hi {
                    bail!("{flag}: want 0 < LO <= HI");
                }
                plan.cut_bytes = Some((lo, hi));
            }
            other => {
                bail!("unknown flag {other} (--kills, --seed, --per-wave, --gap-ms, --cut-bytes)")
            }
        }
    }
    Ok(plan)
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = match parse(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("crash: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    eprintln!(
        "crash: seed {} (replay with --seed {}), {} kills",
        plan.seed, plan.seed, plan.kills
    );
    match run_plan(&plan, &mut |line| eprintln!("crash: {line}")) {
        Ok(outcome) => {
            println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crash: FAILED: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
