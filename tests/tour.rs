//! Runs the README's five-minute tour exactly as written, against a real
//! server, and checks that it shows what the README says it shows.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, BIN};

fn tour_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- tour:start -->")
        .expect("tour start marker");
    let end = readme.find("<!-- tour:end -->").expect("tour end marker");
    readme[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("stockraft ") || l.starts_with("sleep "))
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn the_readme_tour_runs_as_written() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let commands = tour_commands();
    assert!(commands.len() >= 10, "tour too short: {commands:?}");
    let mut outputs = Vec::new();
    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        if words[0] == "sleep" {
            let secs: u64 = words[1].parse().expect("sleep seconds");
            tokio::time::sleep(Duration::from_secs(secs)).await;
            continue;
        }
        let out = Command::new(BIN)
            .args(&words[1..])
            .env("STOCKRAFT_SERVER", &server.addr)
            .output()
            .expect("run the CLI");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        // The README says: a reserve refused for lack of stock exits 3.
        let expected = if command.starts_with("stockraft reserve CART-10") {
            3
        } else {
            0
        };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "`{command}`: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push((command.clone(), stdout));
    }
    let find = |prefix: &str, nth: usize| -> String {
        outputs
            .iter()
            .filter(|(c, _)| c.starts_with(prefix))
            .nth(nth)
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| panic!("no output for {prefix} #{nth}"))
    };
    // What the README promises.
    assert!(find("stockraft reserve ORDER-1", 0).contains("RESERVED"));
    assert!(find("stockraft avail SKU-1", 1).contains("reserved=2"));
    assert!(find("stockraft commit ORDER-1", 0).contains("COMMITTED"));
    let after_commit = find("stockraft avail SKU-1", 2);
    assert!(after_commit.contains("on_hand=8"), "{after_commit}");
    assert!(find("stockraft reserve CART-10", 0).contains("INSUFFICIENT_STOCK"));
    assert!(find("stockraft get CART-9", 0).contains("EXPIRED"));
    assert!(find("stockraft avail SKU-1 --node store-7", 1).contains("available=8"));
    assert!(find("stockraft sell", 0).contains("on_hand=7"));
}

#[test]
fn cli_errors_are_clear() {
    // Nothing listens on this port.
    let port = common::free_port();
    let out = Command::new(BIN)
        .args(["avail", "SKU-1", "--server", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    // Unavailable: 5.
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    let out = Command::new(BIN)
        .args(["reserve", "O", "not-a-line"])
        .output()
        .unwrap();
    // Usage: 2.
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SKU@NODE:NUMBER"), "{stderr}");
}
