//! `blindfold-signaling`: the SFU's Matrix user. See the crate docs and the README.

use std::process::ExitCode;

use blindfold_signaling::config::Config;
use blindfold_signaling::service;

fn main() -> ExitCode {
    let cfg = match Config::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(blindfold_signaling::config::ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("blindfold-signaling: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::from(cfg.log_level))
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("blindfold-signaling: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    match rt.block_on(service::run(cfg, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("blindfold-signaling: {e}");
            ExitCode::FAILURE
        }
    }
}
