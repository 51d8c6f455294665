//! Why a command failed, and the exit code that tells a script.

use std::process::ExitCode;
use std::time::Duration;

/// A failed command. `main` prints it as `error: <Display>` on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The arguments do not make a valid request.
    #[error("{0}")]
    Usage(String),
    /// No connection to the API.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address as given.
        addr: String,
        /// What went wrong, as the transport says it.
        reason: String,
    },
    /// No answer within `--timeout`.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// The address as given.
        addr: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The node answered, with a nonzero status code (dpservice reports errors this way).
    #[error("{message} (code {code})")]
    Server {
        /// The error number, e.g. 202.
        code: u32,
        /// The error name, e.g. `ALREADY_EXISTS`.
        message: String,
    },
    /// The call failed with a gRPC error status (malformed request, not initialized,
    /// unimplemented call, connection lost during the call).
    #[error("{} (gRPC {:?})", .0.message(), .0.code())]
    Rpc(tonic::Status),
}

impl CtlError {
    /// 1: usage, client or connection problem; 2: the server refused the request.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CtlError::Usage(_) | CtlError::Connect { .. } | CtlError::Timeout { .. } => ExitCode::from(1),
            CtlError::Server { .. } | CtlError::Rpc(_) => ExitCode::from(2),
        }
    }
}

impl From<tonic::Status> for CtlError {
    fn from(s: tonic::Status) -> Self {
        CtlError::Rpc(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_exit_codes() {
        let cases = [
            (CtlError::Usage("bad".into()), "bad", 1),
            (
                CtlError::Connect { addr: "http://[::1]:1".into(), reason: "refused".into() },
                "cannot connect to http://[::1]:1: refused",
                1,
            ),
            (
                CtlError::Timeout { addr: "http://x:1".into(), timeout: Duration::from_secs(5) },
                "no answer from http://x:1 within 5s",
                1,
            ),
            (
                CtlError::Server { code: 202, message: "ALREADY_EXISTS".into() },
                "ALREADY_EXISTS (code 202)",
                2,
            ),
            (CtlError::Rpc(tonic::Status::aborted("not initialized")), "not initialized (gRPC Aborted)", 2),
        ];
        for (e, text, code) in cases {
            assert_eq!(e.to_string(), text);
            assert_eq!(e.exit_code(), ExitCode::from(code), "{text}");
        }
    }
}
