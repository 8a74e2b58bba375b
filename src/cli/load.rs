//! `stockraft load`: its flags, checked and turned into a
//! [`load::LoadConfig`], and the reports it writes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;

use stockraft::load;

use super::connection::SecurityArgs;
use super::{millis, parse_duration};

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Servers of the cluster: ADDR[,ADDR...].
    #[arg(
        long,
        env = "STOCKRAFT_SERVER",
        default_value = "127.0.0.1:50051",
        value_delimiter = ','
    )]
    pub server: Vec<String>,
    /// Where clients connect: `leader` (found through the servers given, as
    /// a leader-aware client does, and followed to a new leader when it
    /// stops answering) or `spread` (over the servers given in turn;
    /// followers forward writes to the leader).
    #[arg(long, default_value = "leader")]
    pub route: stockraft::load::Route,
    /// Connections (clients).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Operations each client keeps in flight.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// How long to run, e.g. 30s, 5m.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How many workload operations to run (instead of --duration).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Workloads and weights: checkout, flash-sale, pos, browse, restock,
    /// e.g. checkout=70,browse=25,pos=5.
    #[arg(long, default_value = "checkout")]
    pub workload: String,
    /// Open loop: workload operations per second over all clients.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Use the bidirectional Stream call instead of unary calls.
    #[arg(long, conflicts_with = "mux")]
    pub stream: bool,
    /// Every client makes one call at a time through the Rust client's
    /// multiplexer, which carries all clients' calls over a few `Stream`
    /// calls (`--mux-streams`).
    #[arg(long)]
    pub mux: bool,
    /// Streams of the multiplexer (`--mux`).
    #[arg(long, default_value_t = 2, requires = "mux")]
    pub mux_streams: usize,
    /// SKUs to seed and use.
    #[arg(long, default_value_t = 10_000)]
    pub skus: usize,
    /// Fulfilment nodes per SKU.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Units seeded per (SKU, node).
    #[arg(long, default_value_t = 1_000_000)]
    pub stock: i64,
    /// Hot SKUs of the flash-sale workload.
    #[arg(long, default_value_t = 3)]
    pub hot_skus: usize,
    /// Units of each hot SKU (limited, so the sale sells out).
    #[arg(long, default_value_t = 1_000)]
    pub hot_stock: i64,
    /// Zipf exponent of SKU popularity (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Use the stock already there instead of seeding.
    #[arg(long)]
    pub no_seed: bool,
    /// Skip the final verification.
    #[arg(long)]
    pub no_verify: bool,
    /// TTL of the harness's reservations.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Deadline of one call.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an HTML report with charts here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Runs the harness, prints its report, writes the files asked for, and
/// fails when the final verification did not pass.
pub(super) async fn run(args: LoadArgs) -> Result<()> {
    let config = config(&args)?;
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let outcome = load::run(config, interrupt).await?;
    print!("{}", load::report::text(&outcome));
    write_reports(&args, &outcome)?;
    verdict(&outcome)
}

/// The harness's configuration, or the first flag that is out of bounds.
fn config(args: &LoadArgs) -> Result<load::LoadConfig> {
    let mix = load::workload::parse_mix(&args.workload).map_err(|e| anyhow!("--workload: {e}"))?;
    if args.duration.is_none() && args.ops.is_none() {
        return Err(anyhow!("give --duration (e.g. 30s) or --ops"));
    }
    if args.rate.is_some_and(|r| r <= 0.0 || !r.is_finite()) {
        return Err(anyhow!(
            "--rate must be a positive number of operations per second"
        ));
    }
    if !(0.0..=10.0).contains(&args.zipf) {
        return Err(anyhow!("--zipf must be between 0 and 10"));
    }
    if args.stock < 0 || args.hot_stock < 0 {
        return Err(anyhow!("--stock and --hot-stock must not be negative"));
    }
    Ok(load::LoadConfig {
        servers: args.server.clone(),
        route: args.route,
        clients: args.clients,
        in_flight: args.in_flight,
        duration: args.duration,
        ops: args.ops,
        mix,
        rate: args.rate,
        skus: args.skus,
        nodes: args.nodes,
        stock: args.stock,
        hot_skus: args.hot_skus,
        hot_stock: args.hot_stock,
        zipf: args.zipf,
        seed: !args.no_seed,
        ttl_ms: millis(args.ttl),
        stream: args.stream,
        mux: args.mux.then_some(args.mux_streams),
        call_timeout: args.timeout,
        json: args.json.clone(),
        report: args.report.clone(),
        verify: !args.no_verify,
        run_id: format!("load-{:08x}", rand::random::<u32>()),
        progress: !args.quiet,
        tls: args.security.tls()?,
        bearer: args.security.bearer()?,
    })
}

/// The JSON and HTML reports, where --json and --report ask for them.
fn write_reports(args: &LoadArgs, outcome: &load::Outcome) -> Result<()> {
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&load::report::json(outcome))?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, load::report::html(outcome))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Fails the command unless the final verification passed (or was skipped).
fn verdict(outcome: &load::Outcome) -> Result<()> {
    if let Some(reason) = outcome
        .verification
        .as_ref()
        .and_then(|v| v.unreadable.as_ref())
    {
        return Err(anyhow!(
            "verification not done: the counters could not be read back from any server given: {reason}"
        ));
    }
    if outcome
        .verification
        .as_ref()
        .is_some_and(|v| v.inconclusive())
    {
        return Err(anyhow!(
            "verification inconclusive: every counter was touched by a call whose outcome stayed unknown, so none could be checked"
        ));
    }
    if outcome.verification.as_ref().is_some_and(|v| !v.passed()) {
        return Err(anyhow!(
            "verification FAILED: the server's counters disagree with what the clients were told"
        ));
    }
    Ok(())
}
