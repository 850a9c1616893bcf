//! The `runnel` binary: parse settings, start the node, serve until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use runnel::config::{Cli, NodeConfig};
use runnel::handlers::Dispatcher;
use runnel::node::Node;
use runnel::server::{serve, ListenerLimits};
use tracing::{error, info, warn};

/// Huge allocations are mapped lazily so a hostile array count cannot abort the process
/// (see `runnel::alloc`).
#[global_allocator]
static ALLOCATOR: runnel::alloc::BrokerAllocator = runnel::alloc::BrokerAllocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match NodeConfig::from_args(cli.into_serve_args()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runnel: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(&config.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let keep_openraft = names_openraft(&config.log_level);
        let peer_noise = tracing_subscriber::filter::filter_fn(move |m| keep_openraft || !runnel::replication::is_unanswered_peer_rpc(m));
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).finish().with(peer_noise).init();
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runnel: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(&mut config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("runnel: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The tracing filter for `log_level`: openraft logs every group's start and stop at info
/// and every failed send to an unreachable peer at error, once per group and retry:
/// thousands of lines with many partitions. It is held to errors, without the replication
/// ones and the raft core's unanswered votes (`replication::is_unanswered_peer_rpc`; the
/// transport logs a peer going away and coming back once), unless the filter names it.
fn log_filter(level: &str) -> String {
    let quiet = matches!(level.trim(), "error" | "off");
    if names_openraft(level) || quiet {
        level.to_string()
    } else {
        format!("{level},openraft=error,openraft::replication=off")
    }
}

/// Whether the `log_level` filter names openraft: then its logs are left as asked.
fn names_openraft(level: &str) -> bool {
    level.contains("openraft")
}

async fn run(config: &mut NodeConfig) -> anyhow::Result<()> {
    let listener = bind(config.listen).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let bound = listener.local_addr()?;
    if config.advertise_port == 0 {
        config.advertise_port = bound.port();
    }
    config.listen = bound;
    // Each partition keeps files open: use all the descriptors the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!(open_files = limit, "open-file limit"),
        Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
    }
    info!(data_dir = %config.data_dir.display(), node_id = config.node_id, "starting node");
    let node = Node::start(config.clone()).await?;
    node.wait_for_all_leaders(Duration::from_secs(10)).await;

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let limits = ListenerLimits {
        max_connections: config.max_connections,
        max_request_bytes: config.max_request_bytes,
        idle_timeout: config.connections_max_idle,
        request_read_timeout: config.request_read_timeout,
        max_inflight_requests: config.max_inflight_requests,
    };
    let dispatcher = Arc::new(Dispatcher::new(node.clone()));
    let server = tokio::spawn(serve(listener, dispatcher, limits, shutdown_rx, node.serving_clients()));
    info!(listen = %bound, advertise = %format!("{}:{}", config.advertise_host, config.advertise_port), "ready");

    wait_for_signal().await;
    info!("shutting down: finishing in-flight requests");
    let _ = shutdown_tx.send(true);
    node.begin_shutdown().await;
    let _ = server.await;
    node.shutdown().await;
    info!("stopped");
    Ok(())
}

/// Connections the kernel completes before the node accepts them. The std default (128)
/// overflows when many clients connect at once (every one past it waits a SYN
/// retransmission, one second); 1024 is what `tokio::net::TcpListener::bind` would pick.
const LISTEN_BACKLOG: u32 = 1024;

fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
