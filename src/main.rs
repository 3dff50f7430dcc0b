//! The `edgedesk` binary: parses the command line, sets up logging, hands over to `cli`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = edgedesk::cli::Cli::parse();
    let json = std::env::var("EDGEDESK_LOG_FORMAT").is_ok_and(|v| v == "json");
    // tantivy warns when a merge ends after a commit emptied its segments (a reply replaces
    // its ticket's document): harmless, and constant under steady writes.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tantivy=error"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    let config = match edgedesk::config::Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("edgedesk: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match edgedesk::runtime::build(config.worker_threads, config.pin_workers) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("edgedesk: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(edgedesk::cli::run(cli, config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("edgedesk: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
