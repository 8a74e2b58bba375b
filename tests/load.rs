//! `stockraft load` against a real server: every workload, the JSON and
//! HTML reports, the verification, and its clean errors.

mod common;

use std::process::Command;

use common::{Server, BIN};

/// Starts `stockraft load` with `args` and `--json json`, its output
/// captured, for a test that acts on the servers while it runs.
fn spawn_load(args: &[&str], json: &std::path::Path) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .arg("--json")
        .arg(json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// A short checkout run (4 clients, 20 SKUs at one node) against
/// `servers`, as the cluster tests below start it; they add their own flags.
fn checkout_args<'a>(servers: &'a str, duration: &'a str, timeout: &'a str) -> Vec<&'a str> {
    vec![
        "load",
        "--server",
        servers,
        "--duration",
        duration,
        "--clients",
        "4",
        "--skus",
        "20",
        "--nodes",
        "1",
        "--workload",
        "checkout",
        "--timeout",
        timeout,
    ]
}

/// The JSON report a run wrote.
/// A 3-node loopback cluster once it has elected: the cluster, its
/// leader, and its two followers.
async fn three_nodes() -> (common::cluster::Cluster, u64, Vec<u64>) {
    let cluster = common::cluster::Cluster::start(3, &[]);
    let leader = cluster
        .wait_leader(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let followers = (1..=3).filter(|id| *id != leader).collect();
    (cluster, leader, followers)
}

fn report_at(json: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

#[tokio::test]
async fn a_mixed_run_reports_and_verifies() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let out = Command::new(BIN)
        .args([
            "load",
            "--server",
            &server.addr,
            "--duration",
            "2s",
            "--clients",
            "4",
            "--skus",
            "50",
            "--nodes",
            "2",
            "--hot-stock",
            "20",
            "--workload",
            "checkout=5,flash-sale=3,pos=1,browse=1,restock=1",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .arg("--report")
        .arg(&html)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verification: PASSED"), "{stdout}");
    let report = report_at(&json);
    assert_eq!(report["verification"]["passed"], true);
    for call in [
        "reserve",
        "commit",
        "sell",
        "adjust",
        "availability_local",
        "all",
    ] {
        assert!(
            report["calls"][call]["count"].as_u64().unwrap_or(0) > 0,
            "no {call} calls: {report}"
        );
    }
    // The flash sale has 20 units per hot SKU: it sells out, and the
    // harness sees INSUFFICIENT_STOCK rather than an oversell.
    let outcomes = report["outcomes"].as_array().unwrap();
    assert!(
        outcomes
            .iter()
            .any(|o| o["outcome"] == "INSUFFICIENT_STOCK"),
        "the flash sale never sold out: {outcomes:?}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("Calls completed per second"));
}

/// The `reserve` workload (the unit of bench/compare.sh) over the Stream
/// call with several operations in flight per stream.
#[tokio::test]
async fn reserve_over_streams_seeds_reserves_and_verifies() {
    reserve_seeds_reserves_and_verifies(&["--clients", "2", "--in-flight", "8", "--stream"]).await;
}

/// The same over unary calls: the seed goes over streams of its own
/// whatever the run uses, and must set every counter all the same.
#[tokio::test]
async fn reserve_over_unary_calls_seeds_reserves_and_verifies() {
    reserve_seeds_reserves_and_verifies(&["--clients", "4"]).await;
}

/// The same through the Rust client's multiplexer (`--mux`): 16 callers
/// of one call at a time share two streams (the row of compare.sh that
/// measures it).
#[tokio::test]
async fn reserve_through_the_multiplexer_seeds_reserves_and_verifies() {
    reserve_seeds_reserves_and_verifies(&["--clients", "16", "--mux"]).await;
}

/// Runs `stockraft load --workload reserve` against `addr` with `args`,
/// its report written to `json`; fails the test with the run's output
/// when the run fails.
fn run_reserve(addr: &str, args: &[&str], json: &std::path::Path) {
    let out = Command::new(BIN)
        .args(["load", "--server", addr, "--workload", "reserve", "--quiet"])
        .args(args)
        .arg("--json")
        .arg(json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn reserve_seeds_reserves_and_verifies(mode: &[&str]) {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut args = vec![
        "--ops", "500", "--skus", "30", "--nodes", "2", "--stock", "5",
    ];
    args.extend(mode);
    run_reserve(&server.addr, &args, &json);
    let report = report_at(&json);
    assert_eq!(report["verification"]["passed"], true, "{report}");
    assert!(report["calls"]["reserve"]["count"].as_u64().unwrap_or(0) >= 500);
    // 60 counters of 5 units: 300 can be held, so 500 reserves run out and
    // the rest answer INSUFFICIENT_STOCK, never an oversell.
    let outcomes = report["outcomes"].as_array().unwrap();
    assert!(
        outcomes
            .iter()
            .any(|o| o["outcome"] == "INSUFFICIENT_STOCK"),
        "{outcomes:?}"
    );
    // Every seeded counter was set: the server holds 5 units on each.
    let mut c = server.client().await;
    for s in 0..30 {
        let sku = format!("SKU-{s:06}");
        for n in ["node-000", "node-001"] {
            assert_eq!(common::level(&mut c, &sku, n).await.on_hand, 5, "{sku}@{n}");
        }
    }
}

/// A second run against a server whose holds from the first exceed the
/// stock the second seeds: every reserve is refused, nothing is oversold,
/// and the verification passes (it used to count the first run's holds
/// against the second run's stock as an oversell).
#[tokio::test]
async fn a_run_after_another_verifies_against_holds_left_behind() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (stock, ops) in [("10", "100"), ("5", "50")] {
        let json = dir.path().join(format!("report-{stock}.json"));
        let args = [
            "--ops",
            ops,
            "--skus",
            "2",
            "--nodes",
            "1",
            "--stock",
            stock,
            "--clients",
            "2",
            "--in-flight",
            "4",
            "--stream",
        ];
        run_reserve(&server.addr, &args, &json);
        let report = report_at(&json);
        assert_eq!(report["verification"]["passed"], true, "{report}");
        assert_eq!(report["verification"]["oversell_checked"], 2, "{report}");
    }
    // The first run held all 20 units; the second seeded 5 per counter
    // under 10 held, so none of its reserves could be granted.
    let mut c = server.client().await;
    for sku in ["SKU-000000", "SKU-000001"] {
        let level = common::level(&mut c, sku, "node-000").await;
        assert_eq!((level.on_hand, level.reserved), (5, 10), "{sku}");
    }
}

#[test]
fn load_errors_are_clear() {
    let port = common::free_port();
    let nowhere = format!("127.0.0.1:{port}");
    let huge = usize::MAX.to_string();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--server", &nowhere, "--duration", "1s", "--quiet"],
            "cannot connect",
        ),
        (
            &["--workload", "black-friday", "--duration", "1s"],
            "unknown workload",
        ),
        (&[], "--duration"),
        // Refused before anything is connected or listed.
        (
            &[
                "--server",
                &nowhere,
                "--skus",
                "100000000",
                "--nodes",
                "1000",
                "--duration",
                "1s",
            ],
            "counters a server holds",
        ),
        (
            &["--skus", &huge, "--nodes", "2", "--duration", "1s"],
            "counters a server holds",
        ),
    ];
    for (args, says) in cases {
        let out = Command::new(BIN).arg("load").args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// With `--route leader` (the default) every client connects to the
/// leader, whichever member `--server` names: the named follower can be
/// killed mid-run and no call fails. With `--route spread` the clients
/// connect to the follower itself: killing it fails their calls, and the
/// run still ends with a clear report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_go_to_the_leader_whichever_member_is_named() {
    use std::time::Duration;

    for (route, survives) in [("leader", true), ("spread", false)] {
        let (mut cluster, _, followers) = three_nodes().await;
        let follower = followers[0];
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("report.json");
        let addr = cluster.addr(follower);
        let mut args = checkout_args(&addr, "3s", "2s");
        args.extend(["--route", route, "--quiet"]);
        let run = spawn_load(&args, &json);
        // Seeding and the first calls, then the named follower dies.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        cluster.kill9(follower);
        let out = run.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if survives {
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("clients on the leader"), "{stdout}");
            assert!(stdout.contains("errors: none"), "{stdout}");
            let report = report_at(&json);
            assert_eq!(report["config"]["route"], "leader");
            assert_eq!(report["verification"]["passed"], true, "{report}");
        } else {
            // Every client was on the killed node: the run still ends (no
            // hang resolving the calls cut off), reports the errors, and
            // says the verification could not be done rather than that
            // the counters disagree.
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{stdout}{stderr}");
            assert!(stdout.contains("clients spread over them"), "{stdout}");
            assert!(stdout.contains("UNAVAILABLE"), "{stdout}");
            assert!(stderr.contains("verification not done"), "{stderr}");
            let report = report_at(&json);
            assert_eq!(report["config"]["route"], "spread");
            assert_eq!(report["verification"]["passed"], false, "{report}");
            assert!(report["verification"]["unreadable"].is_string(), "{report}");
        }
    }
}

/// A failover drill with `--route leader`: the leader is killed mid-run
/// and the clients move to the new leader, found through the members the
/// cluster listed at the start, so the run goes on serving after the
/// election, resolves the calls cut off, and its verification passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_follow_a_new_leader_after_the_leader_dies() {
    use std::time::Duration;

    for calls_as in [&[][..], &["--stream", "--in-flight", "4"][..]] {
        let (mut cluster, leader, followers) = three_nodes().await;
        let follower = followers[0];
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("report.json");
        let addr = cluster.addr(follower);
        let mut args = checkout_args(&addr, "8s", "3s");
        args.extend(calls_as);
        let run = spawn_load(&args, &json);
        // Seeding and the first calls on the leader, then the leader dies.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        cluster.kill9(leader);
        let out = run.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{calls_as:?}: {stdout}{stderr}{}",
            cluster.all_logs()
        );
        assert!(stdout.contains("clients moved to a new one"), "{stdout}");
        assert!(stderr.contains("clients moved to"), "{stderr}");
        let report = report_at(&json);
        assert!(report["leader_moves"].as_u64().unwrap() >= 1, "{report}");
        assert_eq!(report["verification"]["passed"], true, "{report}");
        // Calls were answered in the run's last full second, well after the
        // election: the clients really moved, rather than failing to the end.
        let calls = report["calls_per_second"].as_array().unwrap();
        let errors = report["errors_per_second"].as_array().unwrap();
        assert!(calls.len() >= 8, "{report}");
        let at =
            |v: &Vec<serde_json::Value>, i: usize| v.get(i).and_then(|n| n.as_u64()).unwrap_or(0);
        assert!(at(calls, 7) > at(errors, 7), "{calls_as:?}: {report}");
        // The clients wait out the election instead of failing call after
        // call against the dead leader (before they followed it, a run like
        // this one failed hundreds of thousands of calls).
        let failed: u64 = errors.iter().filter_map(|n| n.as_u64()).sum();
        assert!(
            failed < 200,
            "{calls_as:?}: {failed} calls failed: {stdout}"
        );
        eprintln!("{calls_as:?}: {failed} calls failed\n{stdout}");
    }
}

/// When every counter was touched by a call whose outcome stayed unknown
/// (here: half the clients on a follower that dies, failing call after
/// call until the end), nothing could be checked, and the run says so
/// and fails rather than reporting a verification that proved nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verification_that_checked_nothing_is_not_a_pass() {
    use std::time::Duration;

    let (mut cluster, _, followers) = three_nodes().await;
    let servers = format!(
        "{},{}",
        cluster.addr(followers[0]),
        cluster.addr(followers[1])
    );
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut args = checkout_args(&servers, "4s", "1s");
    args.extend(["--route", "spread", "--quiet"]);
    let run = spawn_load(&args, &json);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cluster.kill9(followers[0]);
    let out = run.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("INCONCLUSIVE"), "{stdout}");
    assert!(stderr.contains("verification inconclusive"), "{stderr}");
    let report = report_at(&json);
    let v = &report["verification"];
    assert_eq!(v["inconclusive"], true, "{report}");
    assert_eq!(v["passed"], false, "{report}");
    assert_eq!(v["uncertain"], v["counters_checked"], "{report}");
}

/// A cluster that cannot elect a leader (two of three nodes down) is a
/// clear error, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_without_a_leader_is_a_clear_error() {
    use std::time::Duration;

    let (mut cluster, _, followers) = three_nodes().await;
    let survivor = followers[0];
    for id in 1..=3 {
        if id != survivor {
            cluster.kill9(id);
        }
    }
    // Let the survivor notice it has lost its leader.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = std::process::Command::new(BIN)
        .args([
            "load",
            "--server",
            &cluster.addr(survivor),
            "--duration",
            "1s",
            "--timeout",
            "2s",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no leader"), "{stderr}");
}
