//! The template-hooks benchmark's driver (`scripts/bench-watch.sh` runs it
//! against a private etcd and a running `nap watch`):
//!
//! - `latency ETCD KEY LOG N`: puts KEY N times, one at a time, and for each
//!   waits for a new line in LOG (a reload_cmd appends `date +%s%N`);
//!   prints the put → reload_cmd-start latencies' p50, p99 and max in ms.
//! - `burst ETCD PREFIX FILE PID`: 10,000 puts over 100 keys at once, then
//!   waits until FILE shows the final state; prints whether it did, how
//!   long that took and the watcher's (PID) CPU time per 1,000 events.
//! - `fill ETCD PREFIX N`: puts PREFIX/key000 ... = value-000 ...

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["latency", etcd, key, log, n] => runtime.block_on(latency(etcd, key, log, n.parse().expect("N"))),
        ["burst", etcd, prefix, file, pid] => runtime.block_on(burst(etcd, prefix, file, pid)),
        ["fill", etcd, prefix, n] => runtime.block_on(async {
            let store = store(etcd).await;
            let n: usize = n.parse().expect("N");
            let pairs: Vec<(String, Vec<u8>)> =
                (0..n).map(|i| (format!("{prefix}/key{i:03}"), format!("value-{i:03}").into_bytes())).collect();
            for chunk in pairs.chunks(100) {
                store.put_many(chunk).await.expect("put");
            }
        }),
        _ => {
            eprintln!("usage: bench-watch latency ETCD KEY LOG N | burst ETCD PREFIX FILE PID | fill ETCD PREFIX N");
            std::process::exit(2);
        }
    }
}

async fn store(etcd: &str) -> nap_state::Store {
    let options = nap_state::EtcdOptions::from_url(&format!("etcd://{etcd}")).expect("url");
    nap_state::Store::open_etcd(&options).await.expect("etcd")
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

async fn latency(etcd: &str, key: &str, log: &str, n: usize) {
    let store = store(etcd).await;
    let lines = || std::fs::read_to_string(log).unwrap_or_default().lines().count();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let before = lines();
        let sent = now_ns();
        store.put(key, format!("value-{i}").as_bytes()).await.expect("put");
        let deadline = Instant::now() + Duration::from_secs(5);
        while lines() == before {
            assert!(Instant::now() < deadline, "no reload within 5 s");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let started: u128 = text.lines().last().and_then(|l| l.trim().parse().ok()).expect("a timestamp");
        latencies.push(
            Duration::from_nanos(u64::try_from(started.saturating_sub(sent)).unwrap_or(u64::MAX)).as_secs_f64() * 1e3,
        );
        // Apart, so each put is a render of its own (debounce is off).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort_by(f64::total_cmp);
    // The nearest-rank percentile, q in percent.
    let at = |q: usize| latencies[(latencies.len() - 1) * q / 100];
    println!("{{\"n\": {n}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"max_ms\": {:.2}}}", at(50), at(99), at(100));
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("watcher stat");
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
    ticks / 100.0
}

async fn burst(etcd: &str, prefix: &str, file: &str, pid: &str) {
    let store = store(etcd).await;
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let writers: Vec<_> = (0..10)
        .map(|writer| {
            let (store, prefix) = (store.clone(), prefix.to_owned());
            tokio::spawn(async move {
                for round in 0..1000 {
                    let key = format!("{prefix}/k/key{:02}", writer * 10 + round % 10);
                    store.put(&key, round.to_string().as_bytes()).await.expect("put");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let written = started.elapsed();
    let expected = (0..100).fold(String::new(), |mut text, k| {
        let _ = writeln!(text, "key{k:02}={}", 990 + k % 10);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut final_state = false;
    while Instant::now() < deadline {
        if std::fs::read_to_string(file).unwrap_or_default() == expected {
            final_state = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let settled = started.elapsed();
    // Let the watcher finish whatever it had under way before reading its CPU.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = cpu_seconds(pid) - cpu_before;
    println!(
        "{{\"final_state\": {final_state}, \"write_ms\": {:.0}, \"settled_ms\": {:.0}, \"cpu_ms_per_1000\": {:.1}}}",
        written.as_secs_f64() * 1000.0,
        settled.as_secs_f64() * 1000.0,
        cpu * 1000.0 / 10.0
    );
}
