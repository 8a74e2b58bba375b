//! Opening the run's connections: every server named checked first, then
//! one connection per client, to the leader or spread over the servers
//! (see [`super::Route`]), each warmed up before the clock starts.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use super::conn::{Conn, StreamConn};
use super::counters::Key;
use super::leader::{find_leader, LeaderRoute, Placement};
use super::{LoadConfig, LoadError, Route};
use crate::proto::v1 as pb;

/// The clients' connections, where they go, and with `--route leader`
/// what moves them to a new leader after a failover.
pub(super) struct Connected {
    pub(super) conns: Vec<Arc<Conn>>,
    /// The addresses the clients' connections were opened to (the leader
    /// alone on the leader route): the seed goes there too.
    pub(super) targets: Vec<String>,
    pub(super) route: Option<Arc<LeaderRoute>>,
}

/// Checks that every server named answers, then opens the clients'
/// connections where `--route` sends them.
pub(super) async fn connect(config: &LoadConfig) -> Result<Connected, LoadError> {
    // Every server named must answer before the run starts: a typo in
    // --server is a clear error, not a run with fewer endpoints.
    for addr in &config.servers {
        config
            .dial(addr, config.call_timeout)
            .await
            .map_err(|e| LoadError::Unreachable {
                addr: addr.clone(),
                reason: match e {
                    crate::client::ClientError::Connect { error, .. } => error.to_string(),
                    other => other.to_string(),
                },
            })?;
    }
    match config.route {
        Route::Spread => Ok(Connected {
            conns: open_conns(config, &config.servers).await?,
            targets: config.servers.clone(),
            route: None,
        }),
        Route::Leader => {
            let found = find_leader(config, &config.servers, config.call_timeout).await?;
            let targets = vec![found.leader.clone()];
            let conns = open_conns(config, &targets).await?;
            let mut known = config.servers.clone();
            for addr in found.members.iter().cloned() {
                if !known.contains(&addr) {
                    known.push(addr);
                }
            }
            let route = LeaderRoute {
                config: config.clone(),
                known,
                current: tokio::sync::Mutex::new(Placement {
                    epoch: 0,
                    conns: conns.clone(),
                    leader: found.leader,
                    opened: Instant::now(),
                }),
                moves: AtomicU64::new(0),
            };
            Ok(Connected {
                conns,
                targets,
                route: Some(Arc::new(route)),
            })
        }
    }
}

/// One connection per client, client `i` to `targets[i % targets.len()]`;
/// with `--mux`, one multiplexer over the targets that every client shares.
pub(super) async fn open_conns(
    config: &LoadConfig,
    targets: &[String],
) -> Result<Vec<Arc<Conn>>, LoadError> {
    if let Some(streams) = config.mux {
        return open_mux(config, targets, streams).await;
    }
    let mut conns = Vec::with_capacity(config.clients);
    for i in 0..config.clients {
        let addr = &targets[i % targets.len()];
        // One connection per client, as each client of a real fleet has.
        let channel = dial(config, addr).await?;
        let conn = if config.stream {
            Conn::Stream(
                StreamConn::open(channel, config.call_timeout)
                    .await
                    .map_err(|s| LoadError::Unreachable {
                        addr: addr.clone(),
                        reason: s.message().to_string(),
                    })?,
            )
        } else {
            Conn::Unary(crate::proto::v1::inventory_client::InventoryClient::new(
                channel,
            ))
        };
        conns.push(Arc::new(conn));
    }
    Ok(conns)
}

/// A connection to `addr`, or why there is none.
async fn dial(config: &LoadConfig, addr: &str) -> Result<crate::client::Authed, LoadError> {
    config
        .dial(addr, config.call_timeout)
        .await
        .map_err(|e| LoadError::Unreachable {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
}

async fn open_mux(
    config: &LoadConfig,
    targets: &[String],
    streams: usize,
) -> Result<Vec<Arc<Conn>>, LoadError> {
    let mut members = Vec::with_capacity(targets.len());
    for addr in targets {
        members.push(dial(config, addr).await?);
    }
    let mux = Arc::new(crate::client::mux::Multiplexed::new(
        members,
        crate::client::mux::MuxConfig {
            streams: streams.max(1),
            ..crate::client::mux::MuxConfig::default()
        },
    ));
    let conn = Arc::new(Conn::Mux(mux, config.call_timeout));
    Ok(vec![conn; config.clients])
}

/// Makes one call on every connection before the clock starts. The first
/// call on a new HTTP/2 connection takes tens of milliseconds more than
/// the next ones; in an open-loop run that stall would put every client
/// behind its schedule from the first instant, and the catching up would
/// be counted as the server's latency. A LOCAL availability read changes
/// nothing; its answer is not needed.
pub(super) async fn warm_up(conns: &[Arc<Conn>], keys: &[Key]) {
    let Some((sku, _)) = keys.first() else {
        return;
    };
    let mut calls = Vec::with_capacity(conns.len());
    for conn in conns {
        let conn = conn.clone();
        let request = pb::GetAvailabilityRequest {
            skus: vec![sku.clone()],
            nodes: vec![],
            consistency: pb::Consistency::Local as i32,
        };
        calls.push(tokio::spawn(async move {
            let _ = conn.get_availability(request).await;
        }));
    }
    for call in calls {
        let _ = call.await;
    }
}
