//! The `stockraft` binary: see `stockraft --help`.

// Functions of at most 70 code lines (clippy.toml).
#![warn(clippy::too_many_lines)]

mod cli;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command, Exit};

/// mimalloc instead of glibc's allocator: the server allocates and frees
/// small objects on every call (gRPC frames, commands, answers) and by the
/// million when it loads a snapshot.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // A panic anywhere (a broken invariant) stops the node: it must never
    // keep serving from state it cannot trust.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    // Crash tests configure crash points through FAILPOINTS (test builds only).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    rename_old_environment();
    let args = Cli::parse();
    match run(args) {
        Ok(exit) => std::process::exit(exit as i32),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(Exit::Other as i32);
        }
    }
}

/// STOCKRAFT_NODE_ID, the member id's name before "node" came to mean only
/// a fulfilment location, is read for one more release.
fn rename_old_environment() {
    if std::env::var_os("STOCKRAFT_MEMBER_ID").is_some() {
        return;
    }
    if let Some(id) = std::env::var_os("STOCKRAFT_NODE_ID") {
        // Safe: nothing else runs yet (no runtime, no other thread).
        unsafe { std::env::set_var("STOCKRAFT_MEMBER_ID", id) };
    }
}

fn run(args: Cli) -> Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.command {
        Command::Serve(serve_args) => {
            init_logging();
            let config = serve_args.into_config()?;
            runtime.block_on(stockraft::server::serve(config, shutdown_signal()))?;
            Ok(Exit::Ok)
        }
        client_command => Ok(runtime.block_on(cli::run_client(client_command))),
    }
}

/// Logs to stderr; the level comes from STOCKRAFT_LOG (or RUST_LOG),
/// e.g. `STOCKRAFT_LOG=debug` or `STOCKRAFT_LOG=stockraft=debug,raft=info`.
fn init_logging() {
    let filter = std::env::var("STOCKRAFT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}

/// Completes on Ctrl-C or SIGTERM (what Docker and Kubernetes send).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
