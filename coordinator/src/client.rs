//! Connecting to the cluster API: any member answers any call (followers forward to the
//! leader), so a client needs only one member that accepts a connection.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::grpc::cluster_pb::cluster_service_client::ClusterServiceClient;

/// A cluster API client.
pub type ClusterClient = ClusterServiceClient<Channel>;

/// No member could be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// An endpoint is not a usable URI.
    #[error("invalid coordinator address {addr:?}: {reason}")]
    Invalid {
        /// The address as given.
        addr: String,
        /// Why it is not usable.
        reason: String,
    },
    /// Every endpoint refused or timed out (`endpoint: reason`, in the order tried).
    #[error("cannot connect to any coordinator member: {}", .0.join("; "))]
    Unreachable(Vec<String>),
    /// No endpoint was given.
    #[error("no coordinator address given")]
    NoEndpoint,
}

/// `addr` as a URI: `HOST:PORT` without a scheme means `http://HOST:PORT`.
pub fn uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// The error and its causes, `: `-separated (a transport error's top-level message alone
/// says only "transport error"); a cause repeating its parent's text is left out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// Connects to the first of `endpoints` that accepts a connection within `timeout`
/// each, in order; returns it with a client.
pub async fn connect_any(
    endpoints: &[String],
    timeout: Duration,
) -> Result<(String, ClusterClient), ConnectError> {
    if endpoints.is_empty() {
        return Err(ConnectError::NoEndpoint);
    }
    let mut failures = Vec::new();
    for addr in endpoints {
        let endpoint = Endpoint::from_shared(uri(addr))
            .map_err(|e| ConnectError::Invalid { addr: addr.clone(), reason: e.to_string() })?
            .connect_timeout(timeout);
        match tokio::time::timeout(timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => return Ok((addr.clone(), ClusterServiceClient::new(channel))),
            Ok(Err(e)) => failures.push(format!("{addr}: {}", error_chain(&e))),
            Err(_) => failures.push(format!("{addr}: no connection within {timeout:?}")),
        }
    }
    Err(ConnectError::Unreachable(failures))
}
