//! `ls` (the library part; `tests/operable.rs` runs the subcommand) against the real etcd of
//! `tests/daemons.sh`: a prefix larger than one page of the paged read, leases looked
//! up once each, filters, and an empty prefix.

mod common;

use std::cell::Cell;
use std::time::{Duration, Instant};

use etcd_registrator::cli;
use etcd_registrator::etcd::Etcd;
use etcd_registrator::ls::{self, Filter, Ttl};
use etcd_registrator::store::{Request, Store, StoreError};
use serde_json::Value;

fn client(prefix: &str) -> Etcd {
    let registry = cli::parse_registry(&common::uri(prefix)).unwrap();
    Etcd::new(&registry, Duration::from_secs(10)).unwrap()
}

/// The seconds a lease has left, read with the client's `lease/timetolive` (never a
/// keepalive).
fn time_to_live(etcd: &mut Etcd, id: i64) -> Result<Option<i64>, StoreError> {
    etcd.lease_ttl(id).map_err(StoreError::from)
}

#[test]
fn big_prefix_paged_sorted_filtered_with_ttls() {
    let prefix = common::prefix("ls");
    let mut etcd = client(&prefix);
    let lease = etcd.grant(120).unwrap();
    let granted = Instant::now();
    // 2,600 services on two hosts, 5 keys each: 13,000 keys, two pages of 10,000.
    let mut puts = Vec::new();
    for i in 0..2600 {
        let (node, l) = if i % 2 == 0 { ("a", lease) } else { ("b", 0) };
        let dir = format!("{prefix}/svc-{:02}/{node}:c{i}:80", i % 40);
        for (f, v) in [
            ("address", "10.0.0.5".to_string()),
            ("port", (30000 + i).to_string()),
            ("mode", "tcp".into()),
            ("external_port", (5000 + i).to_string()),
            ("node", node.into()),
        ] {
            puts.push(Request::Put {
                key: format!("{dir}/{f}"),
                value: v,
                lease: l,
            });
        }
    }
    for chunk in puts.chunks(125) {
        assert!(etcd.txn(&[], chunk).unwrap());
    }

    let lookups = Cell::new(0);
    let started = Instant::now();
    let listing = ls::read(&mut etcd, &prefix, &Filter::default(), |etcd, id| {
        lookups.set(lookups.get() + 1);
        time_to_live(etcd, id)
    })
    .unwrap();
    let took = started.elapsed();
    eprintln!("ls::read of 13,000 keys: {took:?}");
    assert_eq!(listing.total, 2600);
    assert_eq!(listing.rows.len(), 2600);
    assert_eq!(listing.stray, 0);
    assert_eq!(lookups.get(), 1, "one TTL lookup for the one lease");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let keys: Vec<(&str, &str)> = listing
        .rows
        .iter()
        .map(|r| (r.name.as_str(), r.id.as_str()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let first = &listing.rows[0];
    assert_eq!(first.name, "svc-00");
    assert_eq!(first.id, "a:c0:80");
    assert_eq!(first.endpoint(), "10.0.0.5:30000");
    assert_eq!(first.routes(), "external:5000");
    let least = 120 - granted.elapsed().as_secs() as i64 - 2;
    assert!(
        matches!(first.ttl, Ttl::Left(s) if (least..=120).contains(&s)),
        "{:?}, at least {least}",
        first.ttl
    );
    let b = listing.rows.iter().find(|r| r.node.as_deref() == Some("b"));
    assert_eq!(b.map(|r| r.ttl), Some(Ttl::NoLease));

    let only = Filter {
        node: Some("b".into()),
        name: Some("svc-1*".into()),
    };
    let lookups = Cell::new(0);
    let listing = ls::read(&mut etcd, &prefix, &only, |etcd, id| {
        lookups.set(lookups.get() + 1);
        time_to_live(etcd, id)
    })
    .unwrap();
    // svc-NN holds the 65 services with i % 40 == NN, on host b when NN is odd:
    // svc-11, 13, 15, 17 and 19.
    assert_eq!(listing.rows.len(), 5 * 65);
    assert!(listing
        .rows
        .iter()
        .all(|r| r.node.as_deref() == Some("b") && r.name.starts_with("svc-1")));
    assert_eq!(lookups.get(), 0, "host b's keys carry no lease");
    let table = ls::text(&listing, &prefix, &only);
    assert_eq!(table.lines().count(), listing.rows.len() + 1);
    let parsed: Value = serde_json::from_str(&ls::json(&listing)).unwrap();
    assert_eq!(parsed.as_array().map(Vec::len), Some(listing.rows.len()));

    etcd.txn(
        &[],
        &[Request::DeletePrefix {
            prefix: format!("{prefix}/"),
        }],
    )
    .unwrap();
    etcd.revoke(lease).unwrap();
}

#[test]
fn empty_prefix_says_so() {
    let prefix = common::prefix("ls-empty");
    let mut etcd = client(&prefix);
    let listing = ls::read(&mut etcd, &prefix, &Filter::default(), |etcd, id| {
        time_to_live(etcd, id)
    })
    .unwrap();
    assert_eq!(listing.total, 0);
    assert_eq!(
        ls::text(&listing, &prefix, &Filter::default()),
        format!("no services under {prefix}/\n")
    );
    assert_eq!(ls::json(&listing), "[]\n");
}

/// A lease in its last second (etcd's answer leaves `TTL` out: 0) is alive and still
/// lists its keys: read as gone, a pass would drop a lease that is only late.
#[test]
fn a_lease_in_its_last_second_still_lists_its_keys() {
    let prefix = common::prefix("lastsecond");
    let mut etcd = client(&prefix);
    let lease = etcd.grant(2).unwrap();
    let key = format!("{prefix}/x");
    let put = Request::Put {
        key: key.clone(),
        value: "v".into(),
        lease,
    };
    assert!(etcd.txn(&[], &[put]).unwrap());
    let start = std::time::Instant::now();
    let mut last_second = 0;
    loop {
        let keys = etcd.lease_keys(lease).unwrap();
        let stored = etcd.range_prefix(&key).unwrap().0;
        match keys {
            Some(keys) => {
                assert_eq!(keys, std::slice::from_ref(&key));
                if time_to_live(&mut etcd, lease).unwrap() == Some(0) {
                    last_second += 1;
                }
            }
            None => {
                assert!(stored.is_empty(), "read as gone while its key is there");
                break;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(6), "never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(last_second > 0, "no reading fell in the last second");
}
