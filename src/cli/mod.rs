//! The `stockraft` command line: `serve`, and a client command for every
//! call of the public API.
//!
//! Client commands print a short human-readable answer, or with `--json`
//! the response in the proto3 JSON mapping, for scripts. Errors print the
//! gRPC status code and the server's message (with `--json`, the
//! google.rpc.Status and its details, on stderr). The exit status says
//! what happened (`exit.rs`).
//!
//! - this file: the clap commands and the dispatch of a client command.
//! - `serve.rs`: `serve`'s flags, checked and turned into a `ServeConfig`.
//! - `connection.rs`: how a client command reaches a server (address,
//!   deadline, TLS, token) and how a refused call reads.
//! - `commands.rs`: the Inventory service's commands and `health`.
//! - `counter_arg.rs`: the `SKU@NODE:NUMBER` notation.
//! - `cluster.rs`: `cluster status|add|remove|transfer-leader`.
//! - `render.rs`: every answer as JSON or as text, printed in one place.
//! - `json.rs`: the proto3 JSON mapping of any message, by reflection.
//! - `exit.rs`: the exit statuses, and how a failure maps to one.
//! - `load.rs`: `load`'s flags and reports.
//! - `credentials.rs`: `certs` and `token`.

mod cluster;
mod commands;
mod connection;
mod counter_arg;
mod credentials;
mod exit;
mod json;
mod load;
mod render;
mod serve;

use std::time::Duration;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use cluster::ClusterCommand;
use commands::Reason;
use connection::ClientArgs;
use credentials::CertsArgs;
pub use exit::Exit;
use load::LoadArgs;
use render::Answer;
use serve::ServeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "stockraft",
    version,
    about = "A Raft-replicated inventory reservation server",
    long_about = "A Raft-replicated inventory reservation server: per-SKU-per-node stock, \
                  atomic reserve / commit / release over gRPC.\n\n\
                  Run `stockraft serve` for a one-node server on 127.0.0.1:50051, then use the \
                  client commands against it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a server (a member of a cluster).
    Serve(Box<ServeArgs>),
    /// Hold stock for an order: `stockraft reserve ORDER-1 SKU-1@store-7:2 SKU-2@dc-1:1`.
    Reserve {
        /// The reservation id (your order or cart id).
        id: String,
        /// Lines as SKU@NODE:QTY.
        #[arg(required = true)]
        lines: Vec<String>,
        /// Time to live, e.g. 30s, 15m (default: the server's).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Consume a reservation's stock (the order shipped or was paid).
    Commit {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Return a reservation's stock.
    Release {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move an open reservation's deadline to now + TTL.
    Extend {
        id: String,
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a reservation.
    Get {
        id: String,
        /// Read this node's applied state without a round to the leader.
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Record a point-of-sale sale: SKU@NODE:QTY (never refused for lack of stock).
    Sell {
        line: String,
        /// Transaction id for exactly-once retries (default: a new random
        /// id, printed on stderr before the call: retry with it).
        #[arg(long)]
        txn: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change on_hand by a signed delta: SKU@NODE:DELTA.
    Adjust {
        line: String,
        #[arg(long, value_enum)]
        reason: Reason,
        /// Transaction id for exactly-once retries (see `sell --help`).
        #[arg(long)]
        txn: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set on_hand (a count or WMS sync): SKU@NODE:ON_HAND.
    Set {
        line: String,
        /// Only if on_hand is still this value (compare-and-set).
        #[arg(long, allow_hyphen_values = true)]
        expected: Option<i64>,
        /// Transaction id for exactly-once retries (see `sell --help`).
        #[arg(long)]
        txn: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set the safety stock kept back from sale: SKU@NODE:UNITS.
    Safety {
        line: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Drive a workload against a server or cluster and report throughput,
    /// latency, outcomes, and a verification of the final counters.
    Load(LoadArgs),
    /// Make a CA and the certificates a cluster runs TLS with: one per
    /// member (naming it, for mutual TLS between members; it serves the
    /// client port too) and one per client name.
    Certs(CertsArgs),
    /// Make a bearer token: prints the token (give it to the caller) and
    /// the line to add to the server's --tokens file (which keeps only its
    /// SHA-256).
    Token {
        /// read (availability and reservations), write (every change), or
        /// admin (write and the Cluster service).
        #[arg(long, value_parser = ["read", "write", "admin"])]
        role: String,
        /// Who it is for, kept beside it in the tokens file.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Exit 0 if the server reports SERVING on the gRPC health service
    /// (a leader is known and its log is applied), 5 otherwise.
    Health {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cluster administration: status, add, remove, transfer-leader.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show availability of SKUs, over all their nodes or the ones named.
    Avail {
        #[arg(required = true)]
        skus: Vec<String>,
        /// Only these fulfilment nodes (repeat the flag for several).
        #[arg(long = "node")]
        nodes: Vec<String>,
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a shell completion script: `stockraft completions bash >
    /// /etc/bash_completion.d/stockraft`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Reads a duration as people write one: 500ms, 30s, 15m, 24h, 7d.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 500ms, 30s, 15m, 24h: {e}"))
}

/// A duration in whole milliseconds, the API's unit (saturating).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs a client command, prints its answer or why it failed, and says
/// how the process exits.
pub async fn run_client(command: Command) -> Exit {
    let json = command_json(&command);
    match answer_of(command).await {
        Ok(answer) => {
            if let Some(answer) = answer {
                render::print(&answer, json);
                return answer.exit();
            }
            Exit::Ok
        }
        Err(error) => {
            print_error(&error, json);
            exit::of_error(&error)
        }
    }
}

/// Whether the command asked for --json.
fn command_json(command: &Command) -> bool {
    match command {
        Command::Reserve { client, .. }
        | Command::Commit { client, .. }
        | Command::Release { client, .. }
        | Command::Extend { client, .. }
        | Command::Get { client, .. }
        | Command::Sell { client, .. }
        | Command::Adjust { client, .. }
        | Command::Set { client, .. }
        | Command::Safety { client, .. }
        | Command::Health { client }
        | Command::Cluster { client, .. }
        | Command::Avail { client, .. } => client.json,
        _ => false,
    }
}

/// A failure on stderr: `error: CODE: message`, or with --json the
/// google.rpc.Status of a refused call (details included), one object.
fn print_error(error: &anyhow::Error, json: bool) {
    if json {
        if let Some(failed) = error.downcast_ref::<exit::CallFailed>() {
            eprintln!("{}", json::status(&failed.status));
            return;
        }
    }
    eprintln!("error: {error:#}");
}

/// Makes the call and the answer to print (None for commands that print
/// their own).
async fn answer_of(command: Command) -> Result<Option<Answer>> {
    let answer = match command {
        Command::Serve(_) => return Err(anyhow::anyhow!("serve is not a client command")),
        Command::Load(args) => return load::run(args).await.map(|()| None),
        Command::Token { role, name } => return credentials::token(&role, &name).map(|()| None),
        Command::Certs(args) => return credentials::certs(args).map(|()| None),
        Command::Completions { shell } => {
            let mut cli = Cli::command();
            clap_complete::generate(shell, &mut cli, "stockraft", &mut std::io::stdout());
            return Ok(None);
        }
        Command::Health { client } => commands::health(&client).await?,
        Command::Cluster { command, client } => cluster::run(command, &client).await?,
        Command::Reserve {
            id,
            lines,
            ttl,
            client,
        } => commands::reserve(&client, id, &lines, ttl).await?,
        Command::Commit { id, client } => commands::commit(&client, id).await?,
        Command::Release { id, client } => commands::release(&client, id).await?,
        Command::Extend { id, ttl, client } => commands::extend(&client, id, ttl).await?,
        Command::Get { id, local, client } => commands::get(&client, id, local).await?,
        Command::Sell { line, txn, client } => commands::sell(&client, &line, txn).await?,
        Command::Adjust {
            line,
            reason,
            txn,
            client,
        } => commands::adjust(&client, &line, reason, txn).await?,
        Command::Set {
            line,
            expected,
            txn,
            client,
        } => commands::set_on_hand(&client, &line, expected, txn).await?,
        Command::Safety { line, client } => commands::safety(&client, &line).await?,
        Command::Avail {
            skus,
            nodes,
            local,
            client,
        } => commands::avail(&client, skus, nodes, local).await?,
    };
    Ok(Some(answer))
}
