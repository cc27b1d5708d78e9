//! The `verriflo-relay` binary: parse the command line and settings, then hand
//! over to the library.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use verriflo_relay::cli::{self, Admin, Target};
use verriflo_relay::config::{parse_duration, Config, ConfigError, Sources};
use verriflo_relay::{app, demo, mock, shutdown, telemetry};

#[derive(Parser)]
#[command(
    name = "verriflo-relay",
    version,
    about = "Signed webhooks for Verriflo room changes"
)]
struct Cli {
    /// A TOML file of settings; the environment overrides it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the admin commands find the relay, and how they print.
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The service: poller, delivery workers and admin API.
    Serve,
    /// Everything on one machine with no account: a simulated upstream whose
    /// classes run on their own, the relay, and a receiver that verifies and
    /// prints each webhook.
    Demo {
        /// Keep the data here instead of a temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Admin API address (any free port if this one is taken).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// How often the simulated classes change.
        #[arg(long, default_value = "700ms", value_parser = parse_duration)]
        tick: std::time::Duration,
    },
    /// Only the simulated Verriflo upstream.
    MockUpstream {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
        /// Accept only this org id (any non-empty one when absent).
        #[arg(long, env = "VERRIFLO_ORG_ID")]
        org_id: Option<String>,
        /// Rooms the self-running scenario drives (none: rooms change only when scripted).
        #[arg(long, value_delimiter = ',')]
        scenario_rooms: Vec<String>,
        /// How often the scenario changes a room.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        tick: std::time::Duration,
    },
    /// Exit 0 when the relay's /healthz answers (for container health checks).
    Healthcheck,
    #[command(flatten)]
    Admin(Admin),
}

fn config_error(e: ConfigError) -> ExitCode {
    eprintln!("verriflo-relay: bad setting {e}");
    ExitCode::from(2)
}

fn load(file: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    Sources::load(file).and_then(|s| Config::from_sources(&s))
}

/// glibc gives threads that contend for malloc arenas of their own, up to
/// eight per core, and each keeps what was freed in it: in the outage run
/// (BENCHMARKS.md) two arenas peaked 15 to 30 MiB lower, for 10 to 20% more
/// CPU per delivery in a burst. Memory is the scarcer of the two where a
/// relay runs beside an LMS; `MALLOC_ARENA_MAX` in the environment still
/// wins (16 for throughput first).
fn fewer_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a limit; this runs first in main,
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    fewer_malloc_arenas();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let result = match cli.command {
        Command::Serve => {
            let config = match load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            if let Err(e) = config.require_serve() {
                return config_error(e);
            }
            telemetry::init(config.log_format, "info");
            // The data dir is a setting too: checked before any port is bound.
            let store = match runtime.block_on(app::open_store(&config)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("verriflo-relay: bad setting {e:#}");
                    return ExitCode::from(2);
                }
            };
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(config.listen)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("RELAY_LISTEN: cannot listen on {}: {e}", config.listen)
                    })?;
                app::run_with_store(config, store, listener, shutdown::signal()).await
            })
        }
        Command::Demo {
            data_dir,
            listen,
            tick,
        } => {
            telemetry::init(verriflo_relay::config::LogFormat::Pretty, "warn");
            let opts = demo::DemoOptions {
                data_dir,
                listen,
                tick,
            };
            runtime.block_on(demo::run(opts, shutdown::signal()))
        }
        Command::MockUpstream {
            listen,
            org_id,
            scenario_rooms,
            tick,
        } => {
            telemetry::init(verriflo_relay::config::LogFormat::Pretty, "info");
            runtime.block_on(run_mock(listen, org_id, scenario_rooms, tick))
        }
        Command::Healthcheck => {
            let url = format!("{}/healthz", cli.target.url.trim_end_matches('/'));
            let ok = runtime.block_on(async {
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(3))
                    .build();
                match client {
                    Ok(c) => c
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success()),
                    Err(_) => false,
                }
            });
            return if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Command::Admin(cmd) => {
            return match runtime.block_on(cli::run(&cli.target, cmd)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("verriflo-relay: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("verriflo-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_mock(
    listen: String,
    org_id: Option<String>,
    rooms: Vec<String>,
    tick: std::time::Duration,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen: cannot listen on {listen}: {e}"))?;
    let upstream = mock::MockUpstream::new(org_id);
    let stop = tokio_util::sync::CancellationToken::new();
    if !rooms.is_empty() {
        let scenario = mock::Scenario { rooms, tick };
        tokio::spawn(scenario.run(upstream.clone(), stop.clone()));
    }
    tracing::info!(listen = %listener.local_addr()?, "simulated Verriflo upstream serving (control API under /_control)");
    upstream
        .serve(listener, async move {
            shutdown::signal().await;
            stop.cancel();
        })
        .await?;
    Ok(())
}
