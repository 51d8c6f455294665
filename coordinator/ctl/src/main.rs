//! `dpfleetctl`: the operator's command line for dpfleet.
//!
//! `dpfleetctl node ...` talks to one node's gRPC API (dpservice-compatible);
//! `dpfleetctl cluster ...` to the coordinator's cluster API (`dpfleet.cluster.v1`). Results go to stdout
//! (table or JSON), errors to stderr as `error: ...`; the exit code says who failed
//! (see [`cli::EXIT_CODES`]).
#![forbid(unsafe_code)]

mod cli;
mod cluster;
mod cluster_cli;
mod cluster_output;
mod error;
mod node;
mod output;
mod request;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::cluster::ClusterCall;
use crate::error::CtlError;
use crate::request::NodeCall;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap's own exit code for usage errors is 2, which we keep for the server.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    match run(&cli) {
        Ok(text) => {
            // A closed stdout (e.g. `| head`) is not worth a panic.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn run(cli: &Cli) -> Result<String, CtlError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Usage(format!("cannot start the async runtime: {e}")))?;
    let output = match &cli.command {
        Command::Node(cmd) => {
            let call = NodeCall::try_from(cmd)?;
            runtime.block_on(node::run(&cli.node, cli.timeout, call))?
        }
        Command::Cluster(args) => {
            let call = ClusterCall::from_args(args, &cluster::fresh_request_id)?;
            runtime.block_on(cluster::run(&cli.coordinator, cli.timeout, call))?
        }
    };
    Ok(output.render(cli.output))
}
