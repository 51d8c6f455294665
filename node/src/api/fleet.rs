//! dpfleet's own node API, `dpfleet.node.v1.FleetNode`, served beside dpservice's on the
//! same port: what the node has applied (for the coordinator's reconciler) and the
//! coordinator's Maglev tables.
//!
//! Unlike `dpdkironcore.v1`, outcomes are plain gRPC status codes:
//! - SetAppliedGeneration: FAILED_PRECONDITION for a generation below the current one
//!   without `force`.
//! - SetLoadBalancerTable: INVALID_ARGUMENT (empty id, an address that is not 16
//!   octets, an invalid Maglev input, more than 64 targets), NOT_FOUND (no such load
//!   balancer), FAILED_PRECONDITION (epoch older than the installed one, or the
//!   installed epoch with another digest), ABORTED (this node built a table with
//!   another digest than `expected_digest`: logged at error level and counted in
//!   `dpfleet_maglev_digest_mismatches_total`). Nothing changes on any error.
//!
//! Neither call needs Initialize.

use std::net::Ipv6Addr;
use std::sync::Arc;

use dpfleet_proto::dpfleet::node::v1 as fpb;
use dpfleet_proto::dpfleet::node::v1::fleet_node_server::{FleetNode, FleetNodeServer};
use dpfleet_proto::maglev::{MaglevInput, Target};
use tonic::{Request, Response, Status};

use super::conv::{fits, lookup_key, IFACE_ID_CAP};
use crate::control::lb::{FleetTableError, FleetTableRequest};
use crate::control::Control;

/// The node's version as GetNodeStatus and gossip report it (the crate version).
pub const NODE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `FleetNode` service over a [`Control`] plane.
pub struct FleetApi {
    control: Arc<Control>,
    node_name: String,
}

impl FleetApi {
    /// The service for `control` on the node called `node_name`.
    pub fn new(control: Arc<Control>, node_name: String) -> Self {
        FleetApi { control, node_name }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> FleetNodeServer<Self> {
        FleetNodeServer::new(self)
    }
}

/// SetLoadBalancerTable's request in domain types, checked for form.
pub fn table_request(r: &fpb::SetLoadBalancerTableRequest) -> Result<(String, FleetTableRequest), Status> {
    if !fits(&r.loadbalancer_id, IFACE_ID_CAP) {
        return Err(Status::invalid_argument("invalid loadbalancer_id (1 to 63 bytes)"));
    }
    let targets = r
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let octets: [u8; 16] = t.underlay_address.as_slice().try_into().map_err(|_| {
                Status::invalid_argument(format!(
                    "targets[{i}].underlay_address has {} bytes, not 16",
                    t.underlay_address.len()
                ))
            })?;
            Ok(Target { addr: Ipv6Addr::from(octets), weight: t.weight })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let input = MaglevInput { targets, table_size: r.table_size, seed: r.seed };
    Ok((
        lookup_key(&r.loadbalancer_id),
        FleetTableRequest { epoch: r.epoch, input, expected_digest: r.expected_digest },
    ))
}

/// The gRPC status of a refused table.
pub fn table_status(e: &FleetTableError) -> Status {
    let msg = e.to_string();
    match e {
        FleetTableError::NoLb(_) => Status::not_found(msg),
        FleetTableError::Invalid(_) | FleetTableError::TooManyTargets(_) => Status::invalid_argument(msg),
        FleetTableError::StaleEpoch { .. } | FleetTableError::EpochConflict { .. } => {
            Status::failed_precondition(msg)
        }
        FleetTableError::DigestMismatch { .. } => Status::aborted(msg),
    }
}

#[tonic::async_trait]
impl FleetNode for FleetApi {
    async fn get_node_status(
        &self,
        _: Request<fpb::GetNodeStatusRequest>,
    ) -> Result<Response<fpb::GetNodeStatusResponse>, Status> {
        let load_balancers = self
            .control
            .lb_tables()
            .into_iter()
            .map(|t| fpb::LoadBalancerTableStatus {
                loadbalancer_id: t.id.into_bytes(),
                epoch: t.epoch,
                digest: t.digest,
                table_size: t.table_size,
                targets: t.targets,
            })
            .collect();
        Ok(Response::new(fpb::GetNodeStatusResponse {
            node_name: self.node_name.clone(),
            version: NODE_VERSION.into(),
            applied_generation: self.control.applied_generation(),
            load_balancers,
        }))
    }

    async fn set_applied_generation(
        &self,
        req: Request<fpb::SetAppliedGenerationRequest>,
    ) -> Result<Response<fpb::SetAppliedGenerationResponse>, Status> {
        let r = req.get_ref();
        match self.control.set_applied_generation(r.generation, r.force) {
            Ok(()) => {
                tracing::info!(generation = r.generation, force = r.force, "SetAppliedGeneration");
                Ok(Response::new(fpb::SetAppliedGenerationResponse {}))
            }
            Err(current) => Err(Status::failed_precondition(format!(
                "generation {} is lower than the applied generation {current} (set force to lower it)",
                r.generation
            ))),
        }
    }

    async fn set_load_balancer_table(
        &self,
        req: Request<fpb::SetLoadBalancerTableRequest>,
    ) -> Result<Response<fpb::SetLoadBalancerTableResponse>, Status> {
        let (id, table) = table_request(req.get_ref())?;
        // Cheap refusals first; the build may take a while for large tables.
        if self.control.get_lb(&id).is_err() {
            return Err(table_status(&FleetTableError::NoLb(id)));
        }
        let epoch = table.epoch;
        let built = tokio::task::spawn_blocking(move || table.build())
            .await
            .map_err(|e| Status::internal(format!("building the Maglev table failed: {e}")))?;
        let result = built.and_then(|b| self.control.set_lb_table(&id, b));
        match result {
            Ok(digest) => {
                let digest_hex = format!("{digest:#018x}");
                tracing::info!(id = %id, epoch, digest = %digest_hex, "SetLoadBalancerTable");
                Ok(Response::new(fpb::SetLoadBalancerTableResponse { digest }))
            }
            Err(e) => {
                if let FleetTableError::DigestMismatch { .. } = e {
                    self.control.count_digest_mismatch();
                    tracing::error!(id = %id, epoch, "refusing the coordinator's Maglev table: {e}");
                } else {
                    tracing::warn!(id = %id, epoch, "SetLoadBalancerTable refused: {e}");
                }
                Err(table_status(&e))
            }
        }
    }
}
