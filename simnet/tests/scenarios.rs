//! Small scenarios played in full: real nodes, the simulated network,
//! virtual time. The bounds are loose on purpose: they catch a swarm that
//! stops sharing, not noise.

use std::time::Duration;

use p2pmodel_simnet::net::LinkSpec;
use p2pmodel_simnet::report::Summary;
use p2pmodel_simnet::run::run;
use p2pmodel_simnet::scenario::{Base, Kind, Scenario};

const LEECHERS: usize = 6;

fn base() -> Base {
    Base {
        leechers: LEECHERS,
        blob_size: 24 << 20,
        link: LinkSpec::symmetric(100.0, Duration::from_millis(5)),
        peers_per_node: 3,
        seed: 7,
        piece_chunks: None,
        slow_upload_limit: None,
    }
}

fn play(kind: Kind) -> Summary {
    let work = tempfile::tempdir().unwrap();
    let result = run(&Scenario::preset(kind, base()), work.path(), None).expect("the run starts");
    let summary = Summary::of(&result);
    eprintln!("{summary:#?}");
    summary
}

#[test]
fn a_flash_crowd_all_ends_with_the_blob_and_the_seed_sends_a_fraction_of_n_copies() {
    let swarm = play(Kind::FlashCrowd);
    assert_eq!(swarm.correct, LEECHERS, "{:?}", swarm.errors);
    // Alone, the seed would send six copies; the leechers share the rest.
    assert!(swarm.seed_upload_copies < 4.0, "{swarm:?}");
    let http = play(Kind::HttpOnly);
    assert_eq!(http.correct, LEECHERS, "{:?}", http.errors);
    let (swarm_time, http_time) = (
        swarm.time_to_all_secs.unwrap(),
        http.time_to_all_secs.unwrap(),
    );
    // One origin cannot beat N copies through its uplink...
    let origin_floor = LEECHERS as f64 * swarm.fluid_bound_secs;
    assert!(http_time > 0.95 * origin_floor, "{http:?}");
    // ...and the swarm does better than it.
    assert!(
        swarm_time < http_time,
        "swarm {swarm_time} s, http {http_time} s"
    );
    assert!(
        swarm_time >= swarm.fluid_bound_secs,
        "faster than physics: {swarm:?}"
    );
}

#[test]
fn leechers_that_crash_come_back_and_finish() {
    let summary = play(Kind::Churn);
    assert!(summary.crashed >= 1, "{summary:?}");
    assert_eq!(summary.correct, LEECHERS, "{:?}", summary.errors);
}

#[test]
fn when_the_seed_leaves_early_the_leechers_finish_from_each_other() {
    let summary = play(Kind::SeedLeaves);
    assert_eq!(summary.correct, LEECHERS, "{:?}", summary.errors);
    assert!(summary.seed_upload_copies < 3.0, "{summary:?}");
}
