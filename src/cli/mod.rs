//! The `stockraft` command line: `serve`, and a client command for every
//! call of the public API.
//!
//! Client commands print a short human-readable answer, or with `--json` one
//! JSON object for scripts. Errors print the gRPC status code and the
//! server's message, and exit with status 1.
//!
//! - this file: the clap commands and the dispatch of a client command.
//! - `serve.rs`: `serve`'s flags, checked and turned into a `ServeConfig`.
//! - `connection.rs`: how a client command reaches a server (address,
//!   deadline, TLS, token) and how a refused call reads.
//! - `commands.rs`: the Inventory service's commands and `health`.
//! - `counter_arg.rs`: the `SKU@NODE:NUMBER` notation.
//! - `cluster.rs`: `cluster status|add|remove|transfer-leader`.
//! - `render.rs`: every answer as JSON or as text, printed in one place.
//! - `load.rs`: `load`'s flags and reports.
//! - `credentials.rs`: `certs` and `token`.

mod cluster;
mod commands;
mod connection;
mod counter_arg;
mod credentials;
mod load;
mod render;
mod serve;

use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};

use cluster::ClusterCommand;
use commands::Reason;
use connection::ClientArgs;
use credentials::CertsArgs;
use load::LoadArgs;
use render::Render;
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
    /// Run a server node.
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
        /// Transaction id for exactly-once retries (default: a new random id).
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
    /// (a leader is known and its log is applied), 1 otherwise.
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
        /// Only these nodes (repeat the flag for several).
        #[arg(long = "node")]
        nodes: Vec<String>,
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        client: ClientArgs,
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

/// Runs a client command and prints its answer.
pub async fn run_client(command: Command) -> Result<()> {
    match command {
        Command::Serve(_) => Err(anyhow!("serve is not a client command")),
        Command::Load(args) => load::run(args).await,
        Command::Token { role, name } => credentials::token(&role, &name),
        Command::Certs(args) => credentials::certs(args),
        Command::Health { client } => {
            let health = commands::health(&client).await?;
            show(&client, &health)?;
            if !health.serving() {
                return Err(anyhow!("the server is not serving ({})", health.name()));
            }
            Ok(())
        }
        Command::Cluster { command, client } => {
            show(&client, cluster::run(command, &client).await?.as_ref())
        }
        Command::Reserve {
            id,
            lines,
            ttl,
            client,
        } => show(&client, &commands::reserve(&client, id, &lines, ttl).await?),
        Command::Commit { id, client } => show(&client, &commands::commit(&client, id).await?),
        Command::Release { id, client } => show(&client, &commands::release(&client, id).await?),
        Command::Extend { id, ttl, client } => {
            show(&client, &commands::extend(&client, id, ttl).await?)
        }
        Command::Get { id, local, client } => {
            show(&client, &commands::get(&client, id, local).await?)
        }
        Command::Sell { line, txn, client } => {
            show(&client, &commands::sell(&client, &line, txn).await?)
        }
        Command::Adjust {
            line,
            reason,
            txn,
            client,
        } => show(
            &client,
            &commands::adjust(&client, &line, reason, txn).await?,
        ),
        Command::Set {
            line,
            expected,
            txn,
            client,
        } => show(
            &client,
            &commands::set_on_hand(&client, &line, expected, txn).await?,
        ),
        Command::Safety { line, client } => show(&client, &commands::safety(&client, &line).await?),
        Command::Avail {
            skus,
            nodes,
            local,
            client,
        } => show(
            &client,
            &commands::avail(&client, skus, nodes, local).await?,
        ),
    }
}

/// Prints an answer as the command's flags ask (`--json` or text).
fn show(client: &ClientArgs, answer: &dyn Render) -> Result<()> {
    render::print(answer, client.json);
    Ok(())
}
