//! The cluster's id and the leader's clock, on a group of three replicas
//! in memory.

use super::clock::{ClockReading, PeerClocks};
use super::tests::{set, Group};
use super::*;

const NOW_MS: u64 = 1_700_000_000_000;
const DAY_MS: u64 = 86_400_000;

/// Clocks of member `me` that measured the two others `offset_ms` from
/// its own clock at `NOW_MS`, over a 10 ms round trip.
fn measured(me: u64, offset_ms: i64) -> PeerClocks {
    let mut clocks = PeerClocks::default();
    for peer in (1..=3).filter(|p| *p != me) {
        let reading = ClockReading {
            clock_ms: (NOW_MS as i64 - 5 + offset_ms) as u64,
            echo_ms: NOW_MS - 10,
            held_ms: 0,
        };
        clocks.observe(peer, &reading, NOW_MS);
    }
    clocks
}

fn tick(group: &mut Group, at: usize) {
    let mut out = Output::default();
    group.replicas[at].tick(NOW_MS, &mut out);
    group.queue.extend(out.messages);
    group.settle();
}

#[test]
fn the_first_leader_gives_the_cluster_one_id() {
    let mut group = Group::new();
    group.elect_first();
    assert_eq!(group.replicas[0].cluster_id(), None);
    tick(&mut group, 0);
    let id = group.replicas[0].cluster_id().expect("an id once applied");
    for replica in &group.replicas {
        assert_eq!(replica.cluster_id(), Some(id));
    }
    // Another leader, later, proposes nothing new: the id stays.
    group.replicas[0].transfer_leader(2);
    group.settle();
    assert!(group.replicas[1].is_leader());
    tick(&mut group, 1);
    for replica in &group.replicas {
        assert_eq!(replica.cluster_id(), Some(id));
        assert_eq!(replica.status().cluster_id, Some(id));
    }
}

#[test]
fn a_leader_near_a_majority_stamps_and_one_a_day_off_steps_down() {
    let mut group = Group::new();
    group.elect_first();
    // Within the bound: proposals go through.
    group.replicas[0].check_clock(&measured(1, 300), NOW_MS, 500);
    let mut out = Output::default();
    group.replicas[0].propose(NOW_MS, vec![(1, set("near", 1))], &mut out);
    group.queue.extend(out.messages);
    assert!(out.answers.is_empty(), "{:?}", out.answers);
    group.settle();
    assert!(group.answers.iter().any(|(t, a)| *t == 1 && a.is_ok()));

    for offset in [DAY_MS as i64, -(DAY_MS as i64)] {
        let leader = (0..3).find(|i| group.replicas[*i].is_leader()).unwrap();
        let steps_before = group.replicas[leader].clock_step_downs();
        // Its fellow members a day behind (or ahead) of it: it stamps
        // nothing, and steps down at its next tick.
        group.replicas[leader].check_clock(&measured(leader as u64 + 1, offset), NOW_MS, 500);
        let mut out = Output::default();
        group.replicas[leader].propose(NOW_MS, vec![(2, set("far", 2))], &mut out);
        let refused = out
            .answers
            .first()
            .map(|(_, a)| a.as_ref().err().map(|u| &u.error));
        assert_eq!(refused, Some(Some(&ProposeError::ClockUnconfirmed)));
        tick(&mut group, leader);
        assert_eq!(group.replicas[leader].clock_step_downs(), steps_before + 1);
        assert!(!group.replicas[leader].is_leader());
        assert!(
            group.replicas.iter().any(|r| r.is_leader()),
            "a successor leads"
        );
    }
}

#[test]
fn a_leader_whose_clock_jumped_since_its_check_stamps_nothing() {
    let mut group = Group::new();
    group.elect_first();
    group.replicas[0].check_clock(&measured(1, 0), NOW_MS, 500);
    for jumped in [NOW_MS + DAY_MS, NOW_MS - DAY_MS] {
        let mut out = Output::default();
        group.replicas[0].propose(jumped, vec![(3, set("jumped", 3))], &mut out);
        let refused = out
            .answers
            .first()
            .map(|(_, a)| a.as_ref().err().map(|u| &u.error));
        assert_eq!(
            refused,
            Some(Some(&ProposeError::ClockUnconfirmed)),
            "{jumped}"
        );
    }
    // Without fresh samples for an election timeout, it steps down too.
    let stale = NOW_MS + 10_000;
    for _ in 0..=ReplicaConfig::new(1).election_tick {
        group.replicas[0].check_clock(&measured(1, 0), stale, 500);
        let mut out = Output::default();
        group.replicas[0].tick(stale, &mut out);
        group.queue.extend(out.messages);
    }
    group.settle();
    assert_eq!(group.replicas[0].clock_step_downs(), 1);
}
