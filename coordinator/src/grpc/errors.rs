//! The one place that turns the coordinator's errors into gRPC statuses.
//!
//! | error | gRPC code | `x-dpfleet-error` |
//! |---|---|---|
//! | malformed request ([`InvalidRequest`]) | INVALID_ARGUMENT | `invalid_argument` |
//! | `InvalidArgument`, `InvalidPrefix` | INVALID_ARGUMENT | `invalid_argument`, `invalid_prefix` |
//! | `NotFound` | NOT_FOUND | `not_found` |
//! | `AlreadyExists` | ALREADY_EXISTS | `already_exists` |
//! | `RequestIdReused` | ALREADY_EXISTS | `request_id_reused` |
//! | `InUse`, `AddressInUse`, `OverlappingRange`, `VniMismatch`, `NodeNotAccepting` | FAILED_PRECONDITION | `in_use`, `address_in_use`, `overlapping_range`, `vni_mismatch`, `node_not_accepting` |
//! | `PoolExhausted`, `NoCapacity` | RESOURCE_EXHAUSTED | `pool_exhausted`, `no_capacity` |
//! | no leader, leader unreachable, second forwarding hop, leadership lost during a write without request id, no quorum, member stopping | UNAVAILABLE | `no_leader`, `leader_unreachable`, `not_leader`, `leader_changed`, `no_quorum`, `stopping` |
//! | a membership change in progress | ABORTED | `membership_change_in_progress` |
//! | the last voter removed; a member id taken by another address | FAILED_PRECONDITION | `empty_membership`, `member_exists` |
//! | a new member not caught up within the deadline (it stays a learner) | UNAVAILABLE | `member_lagging` |
//!
//! `RequestIdReused` is ALREADY_EXISTS because the request id (not the object) already
//! exists, bound to another request; the trailer tells it apart from an object that exists.
//! The message is the error's own text, written for an operator.

use openraft::error::{ChangeMembershipError, Fatal, QuorumNotEnough};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use super::convert::InvalidRequest;
use crate::raft_types::MemberId;
use crate::state::ApplyError;

/// The trailer (response metadata) that names the reason of an error.
pub const ERROR_REASON: &str = "x-dpfleet-error";

/// A status with `code`, `message` and the reason trailer.
pub fn status(code: Code, reason: &'static str, message: impl Into<String>) -> Status {
    let mut s = Status::new(code, message);
    s.metadata_mut().insert(ERROR_REASON, MetadataValue::from_static(reason));
    s
}

/// The code and reason of a refused command.
pub fn apply_error_code(e: &ApplyError) -> (Code, &'static str) {
    match e {
        ApplyError::InvalidArgument(_) => (Code::InvalidArgument, "invalid_argument"),
        ApplyError::InvalidPrefix(_) => (Code::InvalidArgument, "invalid_prefix"),
        ApplyError::NotFound { .. } => (Code::NotFound, "not_found"),
        ApplyError::AlreadyExists { .. } => (Code::AlreadyExists, "already_exists"),
        ApplyError::RequestIdReused(_) => (Code::AlreadyExists, "request_id_reused"),
        ApplyError::InUse { .. } => (Code::FailedPrecondition, "in_use"),
        ApplyError::AddressInUse { .. } => (Code::FailedPrecondition, "address_in_use"),
        ApplyError::OverlappingRange { .. } => (Code::FailedPrecondition, "overlapping_range"),
        ApplyError::VniMismatch { .. } => (Code::FailedPrecondition, "vni_mismatch"),
        ApplyError::NodeNotAccepting { .. } => (Code::FailedPrecondition, "node_not_accepting"),
        ApplyError::PoolExhausted { .. } => (Code::ResourceExhausted, "pool_exhausted"),
        ApplyError::NoCapacity(_) => (Code::ResourceExhausted, "no_capacity"),
    }
}

/// A refused command as a status.
pub fn apply_error(e: &ApplyError) -> Status {
    let (code, reason) = apply_error_code(e);
    status(code, reason, e.to_string())
}

/// A malformed request as a status.
pub fn invalid_request(e: &InvalidRequest) -> Status {
    status(Code::InvalidArgument, "invalid_argument", format!("invalid request: {e}"))
}

/// This member is stopping (or Raft failed).
pub fn fatal(e: &Fatal<MemberId>) -> Status {
    status(Code::Unavailable, "stopping", format!("coordinator member cannot serve: {e}"))
}

/// The leader could not confirm its leadership with a quorum.
pub fn no_quorum(e: &QuorumNotEnough<MemberId>) -> Status {
    status(Code::Unavailable, "no_quorum", format!("the leader cannot reach a quorum: {e}"))
}

/// No leader is known.
pub fn no_leader(member: MemberId) -> Status {
    status(
        Code::Unavailable,
        "no_leader",
        format!("coordinator member {member} knows no leader (election in progress or no quorum); retry"),
    )
}

/// A membership change that openraft refused.
pub fn change_membership(e: &ChangeMembershipError<MemberId>) -> Status {
    match e {
        ChangeMembershipError::InProgress(_) => {
            status(Code::Aborted, "membership_change_in_progress", format!("{e}; retry"))
        }
        ChangeMembershipError::EmptyMembership(_) => {
            status(Code::FailedPrecondition, "empty_membership", e.to_string())
        }
        ChangeMembershipError::LearnerNotFound(_) => status(Code::NotFound, "not_found", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::state::{NodeState, ObjectKind};

    #[test]
    fn every_apply_error_has_its_code() {
        let kind = ObjectKind::Interface;
        let cases = [
            (ApplyError::InvalidArgument("x".into()), Code::InvalidArgument),
            (ApplyError::InvalidPrefix("x".into()), Code::InvalidArgument),
            (ApplyError::NotFound { kind, id: "a".into() }, Code::NotFound),
            (ApplyError::AlreadyExists { kind, id: "a".into() }, Code::AlreadyExists),
            (ApplyError::RequestIdReused("r".into()), Code::AlreadyExists),
            (ApplyError::InUse { kind, id: "a".into(), by: "b".into() }, Code::FailedPrecondition),
            (
                ApplyError::AddressInUse { vni: 1, addr: IpAddr::V4(Ipv4Addr::LOCALHOST), by: "b".into() },
                Code::FailedPrecondition,
            ),
            (
                ApplyError::OverlappingRange { ip: Ipv4Addr::LOCALHOST, other: "g".into() },
                Code::FailedPrecondition,
            ),
            (
                ApplyError::VniMismatch { interface: "a".into(), interface_vni: 1, vni: 2 },
                Code::FailedPrecondition,
            ),
            (
                ApplyError::NodeNotAccepting { node: "n".into(), state: NodeState::Draining },
                Code::FailedPrecondition,
            ),
            (ApplyError::PoolExhausted { gateway: "g".into(), blocks: 3 }, Code::ResourceExhausted),
            (ApplyError::NoCapacity("x".into()), Code::ResourceExhausted),
        ];
        for (e, code) in cases {
            let s = apply_error(&e);
            assert_eq!(s.code(), code, "{e:?}");
            assert_eq!(s.message(), e.to_string());
            let reason = s.metadata().get(ERROR_REASON).unwrap().to_str().unwrap();
            assert_eq!(reason, apply_error_code(&e).1);
        }
        let reused = apply_error(&ApplyError::RequestIdReused("r".into()));
        assert_eq!(reused.metadata().get(ERROR_REASON).unwrap(), "request_id_reused");
    }

    #[test]
    fn malformed_requests_are_invalid_argument() {
        let s = invalid_request(&InvalidRequest { field: "ipv4".into(), reason: "bad".into() });
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "invalid request: ipv4: bad");
    }
}
