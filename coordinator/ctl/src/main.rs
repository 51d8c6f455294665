//! `dpfleetctl`: the operator's command line for dpfleet.
//!
//! `dpfleetctl node ...` talks to one node's gRPC API (dpservice-compatible); a
//! `cluster` group for the coordinator's API will sit beside it. Results go to stdout
//! (table or JSON), errors to stderr as `error: ...`; the exit code says who failed
//! (see [`cli::EXIT_CODES`]).
#![forbid(unsafe_code)]

mod cli;
mod error;
mod node;
mod output;
mod request;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
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
    let Command::Node(cmd) = &cli.command;
    let call = NodeCall::try_from(cmd)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Usage(format!("cannot start the async runtime: {e}")))?;
    let output = runtime.block_on(node::run(&cli.node, cli.timeout, call))?;
    Ok(output.render(cli.output))
}
