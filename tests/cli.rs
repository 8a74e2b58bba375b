//! The CLI as scripts use it: exit statuses, the txn id of every change
//! (printed before the call, so a failed or timed-out call can be retried
//! safely), `--json` in the proto3 JSON mapping (and refusals as
//! google.rpc.Status on stderr), `STOCKRAFT_SERVER` as a list with the
//! leader found through the health service, the member-id flag's old
//! name, and shell completions.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::cluster::Cluster;
use common::{Server, BIN};
use serde_json::Value;

/// Runs the CLI against `server` (a STOCKRAFT_SERVER value).
fn cli(server: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("STOCKRAFT_SERVER", server)
        .output()
        .expect("run the CLI")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(out)))
}

/// The txn id the CLI said it sent, from stderr.
fn txn_of(out: &Output) -> String {
    let err = stderr(out);
    err.lines()
        .find_map(|l| l.strip_prefix("txn_id: "))
        .unwrap_or_else(|| panic!("no txn id on stderr: {err}"))
        .to_string()
}

#[tokio::test]
async fn exit_statuses_say_what_happened() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let s = server.addr.as_str();
    let cases: [(&[&str], i32); 9] = [
        (&["set", "SKU-1@store-7:2"], 0),
        (&["reserve", "O-1", "SKU-1@store-7:2"], 0),
        // Refused by the rules: no stock left.
        (&["reserve", "O-2", "SKU-1@store-7:1"], 3),
        // Not found.
        (&["commit", "NEVER-MADE"], 4),
        (&["get", "NEVER-MADE"], 4),
        (&["release", "O-1"], 0),
        // Refused by the rules: a released hold cannot be committed.
        (&["commit", "O-1"], 3),
        // Usage: malformed before any call, and refused as invalid.
        (&["reserve", "O-3", "not-a-line"], 2),
        (&["reserve", "O-3", "SKU-1@store-7:0"], 2),
    ];
    for (args, expected) in cases {
        let out = cli(s, args);
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    // Unavailable: nobody listens there.
    let nowhere = format!("127.0.0.1:{}", common::free_port());
    let out = cli(&nowhere, &["avail", "SKU-1"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    // clap's own usage error.
    let out = cli(s, &["reserve"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn every_change_prints_its_txn_id_and_a_retry_applies_once() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let s = server.addr.as_str();
    let set = cli(s, &["set", "SKU-1@dc-1:10"]);
    assert!(set.status.success(), "{}", stderr(&set));
    let generated = txn_of(&set);
    assert!(generated.starts_with("cli-"), "{generated}");
    assert!(stdout(&set).contains(&generated), "{}", stdout(&set));

    // A sale, then the same sale again by its txn id: applied once.
    let sold = cli(s, &["sell", "SKU-1@dc-1:3", "--json"]);
    let txn = txn_of(&sold);
    let again = cli(s, &["sell", "SKU-1@dc-1:3", "--txn", &txn, "--json"]);
    assert_eq!(txn_of(&again), txn);
    assert_eq!(json(&again)["level"]["onHand"], "7", "{}", stdout(&again));
    assert_eq!(json(&sold), json(&again));

    // A refused change still names its txn id, and says why in the
    // google.rpc.Status printed with --json.
    let stale = cli(s, &["set", "SKU-1@dc-1:1", "--expected", "99", "--json"]);
    assert_eq!(stale.status.code(), Some(3));
    let err = stderr(&stale);
    assert!(err.contains("txn_id: cli-"), "{err}");
    let status_line = err.lines().last().unwrap();
    let status: Value = serde_json::from_str(status_line).unwrap();
    assert_eq!(status["code"], 9, "FAILED_PRECONDITION: {status}");
    let info = &status["details"][0];
    assert_eq!(info["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
    assert_eq!(info["reason"], "STALE_ON_HAND");
    assert_eq!(info["metadata"]["on_hand"], "7");

    // A change to a server that cannot be reached: the txn id is printed
    // before the call, with the way to retry it.
    let nowhere = format!("127.0.0.1:{}", common::free_port());
    let lost = cli(&nowhere, &["adjust", "SKU-1@dc-1:5", "--reason", "receive"]);
    assert_eq!(lost.status.code(), Some(5));
    assert!(txn_of(&lost).starts_with("cli-"));
}

#[tokio::test]
async fn json_is_the_proto3_mapping() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let s = server.addr.as_str();
    assert!(cli(s, &["set", "SKU-1@store-7:5"]).status.success());
    let reserved = json(&cli(
        s,
        &["reserve", "O-1", "SKU-1@store-7:2", "--ttl", "1m", "--json"],
    ));
    assert_eq!(reserved["outcome"], "OUTCOME_RESERVED");
    // uint64 as a string, lowerCamelCase, defaults included.
    assert!(reserved["expiresAtMs"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    assert_eq!(reserved["shortages"], Value::Array(vec![]));
    let short = cli(s, &["reserve", "O-2", "SKU-1@store-7:9", "--json"]);
    assert_eq!(short.status.code(), Some(3));
    let short = json(&short);
    assert_eq!(short["outcome"], "OUTCOME_INSUFFICIENT_STOCK");
    assert_eq!(short["shortages"][0]["requested"], "9");
    assert_eq!(short["shortages"][0]["available"], "3");
    let avail = json(&cli(s, &["avail", "SKU-1", "--json"]));
    let node = &avail["skus"][0]["nodes"][0];
    assert_eq!(node["node"], "store-7");
    assert_eq!(node["onHand"], "5");
    assert_eq!(node["safetyStock"], "0");
    let got = json(&cli(s, &["get", "O-1", "--json"]));
    assert_eq!(got["state"], "RESERVATION_STATE_OPEN");
    assert_eq!(got["lines"][0]["qty"], "2");
    let health = json(&cli(s, &["health", "--json"]));
    assert_eq!(health["status"], "SERVING");
}

#[tokio::test]
async fn the_server_list_finds_the_leader() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    // Health follows each member's status a moment later: poll until the
    // leader alone reports the entry SERVING.
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving;
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut leading = Vec::new();
        for id in 1..=3 {
            let status = common::health(&cluster.addr(id), "stockraft.v1.Leader").await;
            if status.ok() == Some(serving) {
                leading.push(id);
            }
        }
        if leading == vec![leader] {
            break;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "members reporting stockraft.v1.Leader SERVING: {leading:?}, leader {leader}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A dead address first, then the members: the CLI skips what does not
    // answer and calls the leader.
    let nowhere = format!("127.0.0.1:{}", common::free_port());
    let mut list = vec![nowhere];
    list.extend((1..=3).map(|id| cluster.addr(id)));
    let out = cli(&list.join(","), &["cluster", "status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer = json(&out);
    assert_eq!(
        answer["status"]["memberId"],
        leader.to_string(),
        "the member called is the leader: {answer}"
    );
    assert_eq!(answer["status"]["role"], "RAFT_ROLE_LEADER");
    assert_eq!(answer["members"].as_array().unwrap().len(), 3);
    let set = cli(&list.join(","), &["set", "SKU-1@store-7:4"]);
    assert!(set.status.success(), "{}", stderr(&set));
}

#[tokio::test]
async fn the_member_id_keeps_its_old_name_for_one_release() {
    let mut server = Server::start(&["--node-id", "1"]);
    server.wait_ready().await.unwrap();
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = stdout(&help);
    assert!(help.contains("--member-id <MEMBER_ID>"), "{help}");
    assert!(
        !help.contains("--node-id <"),
        "the old name is hidden: {help}"
    );
}

#[test]
fn shell_completions_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = stdout(&out);
        assert!(
            script.contains("reserve") && script.contains("member-id"),
            "{shell}: {script}"
        );
    }
}
