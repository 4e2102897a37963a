//! `swrm`: the server and its admin command line.

use clap::{Parser, Subcommand, ValueEnum};
use std::os::unix::process::CommandExt;
use swrm::{config::StorageArgs, core::orgs};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "swrm",
    version,
    about = "Backend for fleets of edge AI devices: one binary for pairing, ingest, captures, models and commands."
)]
struct Cli {
    /// Log format.
    #[arg(long, env = "SWRM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: REST, gRPC and gRPC-web on one port.
    Serve(Box<swrm::Config>),
    /// Administer the database directly (same --data-dir / --database-url as serve).
    Admin {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an organization; prints {"org_id", "api_key"} (an owner key, shown once).
    CreateOrg { name: String },
    /// Create devices from a CSV factory list, all or nothing. Columns:
    /// name, serial, group, location, tags (group and location by id or
    /// name; tags separated by ';'; a header row is skipped). Bad lines are
    /// reported by number and nothing is imported. The one-time provisioning
    /// tokens go to a new file, mode 0600.
    ImportDevices {
        /// The CSV file.
        file: std::path::PathBuf,
        /// Where to write the tokens (a file that does not exist yet).
        #[arg(long)]
        tokens_out: std::path::PathBuf,
        /// The organization's id (default: the only one).
        #[arg(long)]
        org: Option<uuid::Uuid>,
        /// Lifetime of the provisioning tokens, in seconds.
        #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
        token_ttl_seconds: u64,
    },
}

fn main() -> std::process::ExitCode {
    lean_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the runtime")
        .block_on(run())
}

/// mimalloc commits its first arena eagerly on Linux and then keeps freed
/// pages resident, so what a burst of requests freed stays counted against
/// the process. Committed on demand, it goes back: a waiting device's
/// resident cost fell from 42–47 KiB to 33–36 KiB (`loadgen waiters`), and
/// request rates did not move beyond the machine's noise (`loadgen`, four
/// alternating runs). mimalloc takes the setting only from its environment,
/// read before `main` (its API is too late: the Rust runtime's first
/// allocation has already reserved the arena), so the process sets it and
/// starts itself again, once, with the same pid and arguments. An operator's own value is left alone, and if the new start
/// fails the server runs as it is.
fn lean_allocator() {
    const EAGER_COMMIT: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
    if std::env::var_os(EAGER_COMMIT).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var(EAGER_COMMIT, "0") };
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        again.arg0(arg0);
    }
    // Returns only if the exec failed.
    let _ = again.args(args).exec();
}

async fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("SWRM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    let result = match cli.command {
        Command::Serve(config) => serve(*config).await,
        Command::Admin { storage, command } => admin(storage, command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swrm: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: swrm::Config) -> Result<(), Box<dyn std::error::Error>> {
    let listen = config.listen;
    let (app, created) = swrm::build(config).await?;
    if let Some(org) = created {
        // Printed once, on stdout only, never logged.
        println!("Created organization \"default\" ({}).", org.org_id);
        println!("Owner API key (shown once, store it now): {}", org.api_key);
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "swrm listening (REST, gRPC, gRPC-web)");
    swrm::serve(app, listener, shutdown_signal()).await?;
    tracing::info!("swrm stopped");
    Ok(())
}

async fn admin(
    storage: StorageArgs,
    command: AdminCommand,
) -> Result<(), Box<dyn std::error::Error>> {
    let store =
        swrm::store::Store::connect(&storage.database_url(), storage.database_timeout()).await?;
    match command {
        AdminCommand::CreateOrg { name } => {
            let org = orgs::create_org(&store, &name).await?;
            println!(
                "{}",
                serde_json::json!({"org_id": org.org_id, "api_key": org.api_key})
            );
        }
        AdminCommand::ImportDevices {
            file,
            tokens_out,
            org,
            token_ttl_seconds,
        } => {
            let org_id = match org {
                Some(id) => id,
                None => orgs::the_only_org(&store).await?,
            };
            let mut config = swrm::Config::for_data_dir(&storage.data_dir);
            config.storage = storage;
            config.provisioning_token_ttl_seconds = token_ttl_seconds;
            let blobs = swrm::blobs::open(&config.blobs, &config.storage.data_dir).await?;
            let core = swrm::core::Core::new(
                store,
                swrm::core::Clock::system(),
                swrm::app::settings(&config),
                blobs,
            );
            let access = swrm::auth::OrgWrite::operator(org_id);
            let created =
                swrm::core::device_import::import_devices(&core, &access, &file, &tokens_out)
                    .await?;
            println!(
                "{}",
                serde_json::json!({"org_id": org_id, "created": created, "tokens": tokens_out})
            );
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
