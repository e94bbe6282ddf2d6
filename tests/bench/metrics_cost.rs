//! What `--metrics-addr` costs (issue 13): three registrators run side by side on the same
//! containers, one without the listener, one with it, one with it scraped every second,
//! so that other load on the machine falls on all three alike. Compares their CPU per
//! quiet pass (schedstat) and their resident memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::common::{bin, command, docker_host, uri, Running};
use super::{cpu, cpu_ms, knob, names, root, row, Gateway, Pool, KEYS_PER_HTTPD};

/// Containers every registrator sees.
const CONTAINERS: usize = 10;
/// The loop's interval: many quiet passes in a short window.
const INTERVAL: &str = "0.25";

/// The address a registrator logged it serves on (`--metrics-addr 127.0.0.1:0`).
fn served_at(reg: &mut Running) -> String {
    let needle = "serving /metrics and /healthz on http://";
    let start = Instant::now();
    loop {
        let log = reg.log();
        if let Some(addr) = log
            .lines()
            .find_map(|l| Some(l.split_once(needle)?.1.trim()))
        {
            return addr.to_string();
        }
        reg.check_alive();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no listener:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One `GET /metrics`; the body's length.
fn scrape(addr: &str) -> usize {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out.len()
}

#[test]
#[ignore]
fn b6_metrics_listener_cost() {
    let secs = knob("BENCH_METRICS_SECS", 30);
    let mut pool = Pool::default();
    eprintln!("bench: starting {CONTAINERS} containers");
    pool.add(&["run", "-d"], &names("mcost", 0..CONTAINERS), "mcost");
    let mut etcd = Gateway::new();

    // (label, --metrics-addr, scraped)
    let variants = [
        ("off", false, false),
        ("on", true, false),
        ("on+scraped", true, true),
    ];
    let mut regs = Vec::new();
    for (i, (label, listen, _)) in variants.iter().enumerate() {
        let p = format!("{}/metrics{i}", root());
        let host = format!("bench{i}");
        let mut args = vec!["--interval", INTERVAL, "--hostname", &host];
        if *listen {
            args.extend(["--metrics-addr", "127.0.0.1:0"]);
        }
        let u = uri(&p);
        args.push(&u);
        let mut reg = Running::spawn(command(bin(), &docker_host(), &args));
        let want = CONTAINERS as u64 * KEYS_PER_HTTPD;
        assert!(
            etcd.wait_for(&format!("{p}/"), Duration::from_secs(60), |c| c >= want),
            "{label}: not registered:\n{}",
            reg.log_tail()
        );
        let addr = listen.then(|| served_at(&mut reg));
        regs.push((reg, addr, p));
    }
    // Settled: every lease kept alive once, every first pass long done.
    std::thread::sleep(Duration::from_secs(3));

    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = {
        let addr = regs[2].1.clone().expect("listening");
        let (stop, scrapes) = (Arc::clone(&stop), Arc::clone(&scrapes));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if scrape(&addr) > 0 {
                    scrapes.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let s0 = scrapes.load(Ordering::SeqCst);
    let c0: Vec<_> = regs.iter_mut().map(|(r, _, _)| cpu(r)).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let c1: Vec<_> = regs.iter_mut().map(|(r, _, _)| cpu(r)).collect();
    let window = t0.elapsed();
    let scraped = scrapes.load(Ordering::SeqCst) - s0;
    stop.store(true, Ordering::SeqCst);
    let _ = scraper.join();

    // Quiet passes in the window: the loop waits one interval after each pass.
    let interval: f64 = INTERVAL.parse().unwrap();
    let passes = window.as_secs_f64() / interval;
    let per_pass: Vec<f64> = c0
        .iter()
        .zip(&c1)
        .map(|(a, b)| cpu_ms(*a, *b).1 / passes)
        .collect();
    // (VmRSS, RssAnon) in KiB.
    let memory: Vec<(u64, u64)> = regs
        .iter_mut()
        .map(|(r, _, _)| {
            r.check_alive();
            let status = r.status();
            (status.kib("VmRSS:"), status.kib("RssAnon:"))
        })
        .collect();
    let scrape_ms = (per_pass[2] - per_pass[1]) * passes / scraped.max(1) as f64;
    let delta = |i: usize| memory[i].0 as i64 - memory[0].0 as i64;
    let delta_anon = |i: usize| memory[i].1 as i64 - memory[0].1 as i64;
    row(
        &format!(
            "`--metrics-addr`: CPU per quiet pass and resident memory, off / on / on and scraped \
             every 1 s, side by side ({CONTAINERS} containers, `--interval {INTERVAL}`, {secs} s)"
        ),
        &format!(
            "CPU {:.3} / {:.3} / {:.3} ms per pass (schedstat, {passes:.0} passes); VmRSS \
             {} / {} / {} KiB (on − off: {:+} KiB, {:+} KiB anon; scraped − off: {:+} KiB, \
             {:+} KiB anon); one scrape {scrape_ms:.2} ms CPU ({scraped} scrapes)",
            per_pass[0],
            per_pass[1],
            per_pass[2],
            memory[0].0,
            memory[1].0,
            memory[2].0,
            delta(1),
            delta_anon(1),
            delta(2),
            delta_anon(2),
        ),
        "on: no more CPU per pass than off; RSS on − off < 256 KiB",
        "real",
    );
    for (_, _, p) in &regs {
        etcd.delete_prefix(&format!("{p}/"));
    }
}
