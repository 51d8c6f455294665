//! `dpfleet.cluster.v1.ClusterService`: the cluster API, served by every member.
//!
//! # Where a call is answered
//!
//! - Writes go through `Raft::client_write` on this member. A follower's Raft refuses
//!   them with `ForwardToLeader`; the call is then sent on, unchanged, to the leader's
//!   endpoint (its `BasicNode::addr`) and the leader's answer (or error) is returned.
//! - Reads confirm leadership first (`Raft::ensure_linearizable`, which also waits until
//!   the state machine has applied everything committed before the read), so they see
//!   every write acknowledged before they started, whichever member took the write; a
//!   follower forwards them the same way. With `stale_ok` this member answers from its
//!   own applied state.
//! - Forwarding is one hop: the forwarded call carries [`FORWARDED_BY`]; a member that
//!   gets a forwarded call and is not the leader either answers UNAVAILABLE naming the
//!   leader it knows, so leadership changes cannot make calls bounce around.
//! - Every request is converted and checked for form ([`super::convert`]) before it goes
//!   anywhere: a malformed one is INVALID_ARGUMENT on the member that received it.
//!
//! Errors are mapped in [`super::errors`].

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::cluster_pb as pb;
use super::cluster_pb::cluster_service_client::ClusterServiceClient;
use super::cluster_pb::cluster_service_server::{ClusterService, ClusterServiceServer};
use super::convert::{self, RemoveTargetError};
use super::errors::{self, status};
use crate::gossip::GossipView;
use crate::raft_types::{MemberId, Raft};
use crate::state::{ApplyError, Command, FleetState, NodeState, ObjectKind, Response as StateResponse};
use crate::store::{AppliedState, StateMachineStore};

/// The metadata header of a forwarded call: the id of the member that forwarded it.
pub const FORWARDED_BY: &str = "x-dpfleet-forwarded-by";

/// How long connecting to the leader to forward a call may take.
const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `AddMember` waits for a new member to catch up with the log before making it
/// a voter (a voter that lags far behind would hold up commits).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

type Client = ClusterServiceClient<Channel>;

/// Where a member's cluster API finds the gossip view, once the member gossips: it
/// reports each node's applied generation from it.
pub type GossipSlot = Arc<OnceLock<tokio::sync::watch::Receiver<Arc<GossipView>>>>;

/// Why this member did not answer a call itself.
enum Failure {
    /// The answer: an error.
    Status(Status),
    /// Only the leader can answer: this one (id and endpoint), if known.
    NotLeader(Option<(MemberId, String)>),
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::Status(s)
    }
}

impl From<convert::InvalidRequest> for Failure {
    fn from(e: convert::InvalidRequest) -> Self {
        Failure::Status(errors::invalid_request(&e))
    }
}

impl From<ApplyError> for Failure {
    fn from(e: ApplyError) -> Self {
        Failure::Status(errors::apply_error(&e))
    }
}

type Answer<T> = Result<T, Failure>;

/// The cluster API of one member.
#[derive(Clone)]
pub struct ClusterApi {
    inner: Arc<Inner>,
}

struct Inner {
    id: MemberId,
    raft: Raft,
    state: StateMachineStore,
    /// Clients of the members calls were forwarded to, by endpoint.
    peers: Mutex<BTreeMap<String, Client>>,
    /// This member's gossip view, once it gossips.
    gossip: GossipSlot,
}

impl ClusterApi {
    /// The API of member `id`, answering from `raft` and its applied `state`.
    pub fn new(id: MemberId, raft: Raft, state: StateMachineStore) -> Self {
        let gossip = GossipSlot::default();
        ClusterApi { inner: Arc::new(Inner { id, raft, state, peers: Mutex::new(BTreeMap::new()), gossip }) }
    }

    /// Where to put this member's gossip view (see [`GossipSlot`]).
    pub fn gossip_slot(&self) -> GossipSlot {
        self.inner.gossip.clone()
    }

    /// The tonic service, ready for `Server::add_service`.
    pub fn into_server(self) -> ClusterServiceServer<Self> {
        ClusterServiceServer::new(self)
    }
}

/// Answers `req` here with `local`, or forwards it to the leader with `remote`.
async fn serve<Req, Resp, LF, RF>(
    inner: &Inner,
    req: Request<Req>,
    local: impl FnOnce(Req) -> LF,
    remote: impl FnOnce(Client, Request<Req>) -> RF,
) -> Result<Response<Resp>, Status>
where
    Req: Clone,
    LF: Future<Output = Answer<Resp>>,
    RF: Future<Output = Result<Response<Resp>, Status>>,
{
    let forwarded_by = req.metadata().get(FORWARDED_BY).map(|v| v.to_str().unwrap_or("?").to_owned());
    let timeout = req.metadata().get("grpc-timeout").cloned();
    let msg = req.into_inner();
    let leader = match local(msg.clone()).await {
        Ok(resp) => return Ok(Response::new(resp)),
        Err(Failure::Status(s)) => return Err(s),
        Err(Failure::NotLeader(leader)) => leader,
    };
    let Some((leader_id, addr)) = leader else {
        return Err(errors::no_leader(inner.id));
    };
    if let Some(by) = forwarded_by {
        return Err(status(
            Code::Unavailable,
            "not_leader",
            format!(
                "coordinator member {} is not the leader (the call was forwarded here by member {by}); \
                 the leader is member {leader_id} at {addr}; retry",
                inner.id
            ),
        ));
    }
    let client = inner.peer(&addr)?;
    let mut fwd = Request::new(msg);
    if let Ok(v) = MetadataValue::try_from(inner.id.to_string()) {
        fwd.metadata_mut().insert(FORWARDED_BY, v);
    }
    if let Some(t) = timeout {
        fwd.metadata_mut().insert("grpc-timeout", t);
    }
    tracing::debug!(member = inner.id, leader = leader_id, %addr, "forwarding a cluster API call");
    match remote(client, fwd).await {
        Ok(resp) => Ok(Response::new(resp.into_inner())),
        // The leader's own answers carry the reason trailer; anything else is the transport.
        Err(s) if s.code() == Code::Unavailable && s.metadata().get(errors::ERROR_REASON).is_none() => {
            Err(status(
                Code::Unavailable,
                "leader_unreachable",
                format!("forwarding to the leader, member {leader_id} at {addr}, failed: {}", s.message()),
            ))
        }
        Err(s) => Err(s),
    }
}

macro_rules! cluster_service {
    ($($name:ident($req:ident) -> $resp:ident;)*) => {
        #[tonic::async_trait]
        impl ClusterService for ClusterApi {
            $(
                async fn $name(&self, req: Request<pb::$req>) -> Result<Response<pb::$resp>, Status> {
                    let inner = &*self.inner;
                    serve(inner, req, |m| inner.$name(m), |mut c: Client, r| async move { c.$name(r).await })
                        .await
                }
            )*
        }
    };
}

cluster_service! {
    get_status(GetStatusRequest) -> GetStatusResponse;
    list_members(ListMembersRequest) -> ListMembersResponse;
    add_member(AddMemberRequest) -> MembershipResponse;
    remove_member(RemoveMemberRequest) -> MembershipResponse;
    register_node(RegisterNodeRequest) -> WriteResponse;
    list_nodes(ListNodesRequest) -> ListNodesResponse;
    get_node(GetNodeRequest) -> GetNodeResponse;
    drain_node(NodeRequest) -> WriteResponse;
    undrain_node(NodeRequest) -> WriteResponse;
    remove_node(NodeRequest) -> WriteResponse;
    create_vni(VniRequest) -> WriteResponse;
    delete_vni(VniRequest) -> WriteResponse;
    list_vnis(ListVnisRequest) -> ListVnisResponse;
    create_interface(CreateInterfaceRequest) -> CreateInterfaceResponse;
    get_interface(GetInterfaceRequest) -> GetInterfaceResponse;
    list_interfaces(ListInterfacesRequest) -> ListInterfacesResponse;
    delete_interface(DeleteInterfaceRequest) -> WriteResponse;
    add_route(AddRouteRequest) -> WriteResponse;
    delete_route(DeleteRouteRequest) -> WriteResponse;
    list_routes(ListRoutesRequest) -> ListRoutesResponse;
    add_firewall_rule(AddFirewallRuleRequest) -> WriteResponse;
    delete_firewall_rule(DeleteFirewallRuleRequest) -> WriteResponse;
    list_firewall_rules(ListFirewallRulesRequest) -> ListFirewallRulesResponse;
    set_vip(SetVipRequest) -> SetVipResponse;
    delete_vip(DeleteVipRequest) -> WriteResponse;
    get_vip(GetVipRequest) -> GetVipResponse;
    create_nat_gateway(CreateNatGatewayRequest) -> WriteResponse;
    delete_nat_gateway(DeleteNatGatewayRequest) -> WriteResponse;
    list_nat_gateways(ListNatGatewaysRequest) -> ListNatGatewaysResponse;
    get_nat_gateway(GetNatGatewayRequest) -> GetNatGatewayResponse;
    attach_nat(AttachNatRequest) -> AttachNatResponse;
    detach_nat(DetachNatRequest) -> WriteResponse;
    create_load_balancer(CreateLoadBalancerRequest) -> LoadBalancerWriteResponse;
    delete_load_balancer(DeleteLoadBalancerRequest) -> WriteResponse;
    list_load_balancers(ListLoadBalancersRequest) -> ListLoadBalancersResponse;
    get_load_balancer(GetLoadBalancerRequest) -> GetLoadBalancerResponse;
    add_lb_target(AddLbTargetRequest) -> LoadBalancerWriteResponse;
    remove_lb_target(RemoveLbTargetRequest) -> LoadBalancerWriteResponse;
}

fn not_found(kind: ObjectKind, id: impl ToString) -> Failure {
    ApplyError::NotFound { kind, id: id.to_string() }.into()
}

fn unexpected(what: &str, r: &StateResponse) -> Failure {
    Failure::Status(Status::internal(format!("{what}: unexpected state machine answer {r:?}")))
}

fn generation(r: &StateResponse) -> u64 {
    match r {
        StateResponse::Done { generation }
        | StateResponse::Interface { generation, .. }
        | StateResponse::NatBlock { generation, .. }
        | StateResponse::LoadBalancer { generation, .. } => *generation,
    }
}

fn written(r: &StateResponse) -> pb::WriteResponse {
    pb::WriteResponse { generation: generation(r) }
}

fn lb_written(what: &str, r: &StateResponse, target: String) -> Answer<pb::LoadBalancerWriteResponse> {
    match r {
        StateResponse::LoadBalancer { generation, epoch, table } => Ok(pb::LoadBalancerWriteResponse {
            generation: *generation,
            epoch: *epoch,
            table_size: table.map_or(0, |t| t.table_size),
            digest: table.map(|t| t.digest),
            target,
        }),
        other => Err(unexpected(what, other)),
    }
}

/// A `host:port` endpoint.
fn check_endpoint(addr: &str) -> Result<(), Status> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if ok && Endpoint::from_shared(format!("http://{addr}")).is_ok() {
        Ok(())
    } else {
        Err(errors::invalid_request(&convert::InvalidRequest {
            field: "addr".into(),
            reason: format!("{addr:?} is not host:port"),
        }))
    }
}

impl Inner {
    fn metrics(&self) -> RaftMetrics<MemberId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    fn read<T>(&self, f: impl FnOnce(&FleetState) -> T) -> T {
        self.state.read(|a: &AppliedState| f(&a.fleet))
    }

    /// Node `n` with the applied generation this member's gossip last saw it publish.
    fn node(&self, s: &FleetState, n: &crate::state::Node) -> pb::Node {
        let applied = self.gossip.get().and_then(|view| {
            let view = view.borrow();
            view.nodes.get(&n.id).and_then(|g| g.keys.as_ref().ok()).and_then(|k| k.applied_generation)
        });
        pb::Node { applied_generation: applied.unwrap_or(0), ..convert::node(s, n) }
    }

    /// The leader named by a `ForwardToLeader` (its endpoint from the membership if the
    /// error did not carry it), or the one the metrics know.
    fn leader(&self, f: ForwardToLeader<MemberId, BasicNode>) -> Option<(MemberId, String)> {
        let m = self.metrics();
        let id = f.leader_id.or(m.current_leader)?;
        let addr = match f.leader_node {
            Some(n) if f.leader_id == Some(id) => n.addr,
            _ => m.membership_config.membership().get_node(&id)?.addr.clone(),
        };
        Some((id, addr))
    }

    /// A client for the member at `addr` (connected lazily, kept for later calls).
    fn peer(&self, addr: &str) -> Result<Client, Status> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(format!("leader endpoint {addr:?} is not usable: {e}")))?
            .connect_timeout(FORWARD_CONNECT_TIMEOUT);
        let client = ClusterServiceClient::new(endpoint.connect_lazy());
        peers.insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    fn write_error(&self, e: RaftError<MemberId, ClientWriteError<MemberId, BasicNode>>) -> Failure {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Failure::NotLeader(self.leader(f)),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                errors::change_membership(&e).into()
            }
            RaftError::Fatal(f) => errors::fatal(&f).into(),
        }
    }

    /// Proposes `cmd` and waits until it is committed and applied here.
    ///
    /// A follower's Raft refuses the write before appending it, so forwarding it is
    /// safe. A leader that loses its leadership while the write is in flight also answers
    /// `ForwardToLeader`, but the entry may still be committed by the next leader: the
    /// write is forwarded then only if it carries a request id (the state machine applies
    /// it once); without one the client is told the outcome is unknown.
    async fn write(&self, cmd: Command) -> Answer<StateResponse> {
        let has_id = cmd.request_id.is_some();
        let was_leader = self.raft.metrics().borrow().current_leader == Some(self.id);
        match self.raft.client_write(cmd).await {
            Ok(reply) => Ok(reply.data?),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) if was_leader && !has_id => {
                let next = self
                    .leader(f)
                    .map_or_else(|| "unknown".to_owned(), |(id, a)| format!("member {id} at {a}"));
                Err(status(
                    Code::Unavailable,
                    "leader_changed",
                    format!(
                        "coordinator member {} lost its leadership while the write was in flight; it may or may \
                         not be applied (the new leader is {next}); send writes with a request_id to retry them safely",
                        self.id
                    ),
                )
                .into())
            }
            Err(e) => Err(self.write_error(e)),
        }
    }

    /// Unless `stale_ok`: makes sure this member is the leader and has applied everything
    /// committed, so that a read of the local state is linearizable. Returns the read's
    /// log index (the commit index the leader confirmed).
    async fn linearizable(&self, stale_ok: bool) -> Answer<Option<u64>> {
        if stale_ok {
            return Ok(None);
        }
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map(|l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(Failure::NotLeader(self.leader(f)))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => {
                Err(errors::no_quorum(&q).into())
            }
            Err(RaftError::Fatal(f)) => Err(errors::fatal(&f).into()),
        }
    }

    fn members(&self, m: &RaftMetrics<MemberId, BasicNode>) -> Vec<pb::Member> {
        let membership = m.membership_config.membership();
        let voters: BTreeSet<MemberId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(&id, node)| pb::Member {
                id,
                addr: node.addr.clone(),
                voter: voters.contains(&id),
                leader: m.current_leader == Some(id),
                matched_index: m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).copied().flatten())
                    .map(|l| l.index)
                    .or_else(|| (id == self.id).then_some(m.last_log_index).flatten()),
            })
            .collect()
    }

    // ---- status and members ----

    async fn get_status(&self, r: pb::GetStatusRequest) -> Answer<pb::GetStatusResponse> {
        let commit_index = self.linearizable(r.stale_ok).await?;
        let m = self.metrics();
        let leader_addr = m
            .current_leader
            .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()))
            .unwrap_or_default();
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().count();
        let learners = membership.learner_ids().count();
        Ok(self.read(|s| {
            let mut nodes = pb::NodeCounts::default();
            for n in s.nodes().values() {
                match n.state {
                    NodeState::Joining => nodes.joining += 1,
                    NodeState::Active => nodes.active += 1,
                    NodeState::Draining => nodes.draining += 1,
                    NodeState::Down => nodes.down += 1,
                }
            }
            pb::GetStatusResponse {
                member_id: self.id,
                leader_id: m.current_leader,
                leader_addr,
                term: m.current_term,
                commit_index,
                applied_index: m.last_applied.map(|l| l.index),
                last_log_index: m.last_log_index,
                generation: s.generation(),
                nodes: Some(nodes),
                vnis: convert::count(s.vnis().len()),
                interfaces: convert::count(s.interfaces().len()),
                routes: convert::count(s.routes().count()),
                nat_gateways: convert::count(s.nat_gateways().len()),
                load_balancers: convert::count(s.load_balancers().len()),
                voters: convert::count(voters),
                learners: convert::count(learners),
            }
        }))
    }

    async fn list_members(&self, r: pb::ListMembersRequest) -> Answer<pb::ListMembersResponse> {
        self.linearizable(r.stale_ok).await?;
        let m = self.metrics();
        Ok(pb::ListMembersResponse {
            members: self.members(&m),
            leader_id: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            membership_index: m.membership_config.log_id().map(|l| l.index),
            generation: self.read(FleetState::generation),
        })
    }

    fn membership_response(&self, log_index: Option<u64>) -> pb::MembershipResponse {
        pb::MembershipResponse {
            members: self.members(&self.metrics()),
            log_index,
            generation: self.read(FleetState::generation),
        }
    }

    async fn add_member(&self, r: pb::AddMemberRequest) -> Answer<pb::MembershipResponse> {
        if r.id == 0 {
            return Err(errors::invalid_request(&convert::InvalidRequest {
                field: "id".into(),
                reason: "member ids start at 1".into(),
            })
            .into());
        }
        check_endpoint(&r.addr)?;
        // On the leader, with the membership as committed.
        self.linearizable(false).await?;
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == r.id);
        match membership.get_node(&r.id) {
            Some(node) if node.addr != r.addr => {
                return Err(status(
                    Code::FailedPrecondition,
                    "member_exists",
                    format!("member {} is already in the cluster at {}; remove it first", r.id, node.addr),
                )
                .into());
            }
            Some(_) if is_voter || r.learner_only => return Ok(self.membership_response(None)),
            _ => {}
        }
        let mut log_index = None;
        if membership.get_node(&r.id).is_none() {
            let reply = self
                .raft
                .add_learner(r.id, BasicNode::new(&r.addr), false)
                .await
                .map_err(|e| self.write_error(e))?;
            log_index = Some(reply.log_id.index);
            tracing::info!(member = r.id, addr = %r.addr, "added a learner");
        }
        if r.learner_only {
            return Ok(self.membership_response(log_index));
        }
        let want = log_index.or(m.last_log_index).unwrap_or(0);
        let id = r.id;
        let caught_up = self
            .raft
            .wait(Some(CATCH_UP_TIMEOUT))
            .metrics(
                |x| {
                    x.replication
                        .as_ref()
                        .and_then(|rep| rep.get(&id).copied().flatten())
                        .is_some_and(|l| l.index >= want)
                },
                "the new member catches up",
            )
            .await;
        if caught_up.is_err() {
            return Err(status(
                Code::Unavailable,
                "member_lagging",
                format!(
                    "member {id} at {} is a learner now but has not caught up with the log within {:?} \
                     (is it running?); call AddMember again to make it a voter",
                    r.addr, CATCH_UP_TIMEOUT
                ),
            )
            .into());
        }
        let reply = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.write_error(e))?;
        tracing::info!(member = id, "member is a voter");
        Ok(self.membership_response(Some(reply.log_id.index)))
    }

    async fn remove_member(&self, r: pb::RemoveMemberRequest) -> Answer<pb::MembershipResponse> {
        self.linearizable(false).await?;
        let m = self.metrics();
        let membership = m.membership_config.membership();
        if membership.get_node(&r.id).is_none() {
            return Err(
                status(Code::NotFound, "not_found", format!("unknown coordinator member {}", r.id)).into()
            );
        }
        let change = if membership.voter_ids().any(|v| v == r.id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([r.id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([r.id]))
        };
        let reply = self.raft.change_membership(change, false).await.map_err(|e| self.write_error(e))?;
        tracing::info!(member = r.id, "member removed");
        Ok(self.membership_response(Some(reply.log_id.index)))
    }

    // ---- nodes ----

    async fn register_node(&self, r: pb::RegisterNodeRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::register_node(r)?).await?))
    }

    async fn list_nodes(&self, r: pb::ListNodesRequest) -> Answer<pb::ListNodesResponse> {
        self.linearizable(r.stale_ok).await?;
        Ok(self.read(|s| pb::ListNodesResponse {
            nodes: s.nodes().values().map(|n| self.node(s, n)).collect(),
            generation: s.generation(),
        }))
    }

    async fn get_node(&self, r: pb::GetNodeRequest) -> Answer<pb::GetNodeResponse> {
        self.linearizable(r.stale_ok).await?;
        self.read(|s| {
            let n = s.nodes().get(&r.id).ok_or_else(|| not_found(ObjectKind::Node, &r.id))?;
            Ok(pb::GetNodeResponse { node: Some(self.node(s, n)), generation: s.generation() })
        })
    }

    async fn drain_node(&self, r: pb::NodeRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::set_node_state(r, NodeState::Draining)?).await?))
    }

    async fn undrain_node(&self, r: pb::NodeRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::set_node_state(r, NodeState::Active)?).await?))
    }

    async fn remove_node(&self, r: pb::NodeRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::remove_node(r)?).await?))
    }

    // ---- VNIs ----

    async fn create_vni(&self, r: pb::VniRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::create_vni(&r)).await?))
    }

    async fn delete_vni(&self, r: pb::VniRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::delete_vni(&r)).await?))
    }

    async fn list_vnis(&self, r: pb::ListVnisRequest) -> Answer<pb::ListVnisResponse> {
        self.linearizable(r.stale_ok).await?;
        Ok(self.read(|s| {
            let mut vnis: BTreeMap<u32, pb::Vni> =
                s.vnis().iter().map(|&vni| (vni, pb::Vni { vni, ..Default::default() })).collect();
            for i in s.interfaces().values() {
                if let Some(v) = vnis.get_mut(&i.vni) {
                    v.interfaces += 1;
                }
            }
            for rt in s.routes() {
                if let Some(v) = vnis.get_mut(&rt.vni) {
                    v.routes += 1;
                }
            }
            pb::ListVnisResponse { vnis: vnis.into_values().collect(), generation: s.generation() }
        }))
    }

    // ---- interfaces ----

    async fn create_interface(&self, r: pb::CreateInterfaceRequest) -> Answer<pb::CreateInterfaceResponse> {
        let resp = self.write(convert::create_interface(r)?).await?;
        match resp {
            StateResponse::Interface { generation, interface } => Ok(pb::CreateInterfaceResponse {
                generation,
                interface: Some(self.read(|s| convert::interface(s, &interface))),
            }),
            other => Err(unexpected("CreateInterface", &other)),
        }
    }

    async fn get_interface(&self, r: pb::GetInterfaceRequest) -> Answer<pb::GetInterfaceResponse> {
        self.linearizable(r.stale_ok).await?;
        self.read(|s| {
            let i = s.interfaces().get(&r.id).ok_or_else(|| not_found(ObjectKind::Interface, &r.id))?;
            Ok(pb::GetInterfaceResponse {
                interface: Some(convert::interface(s, i)),
                generation: s.generation(),
            })
        })
    }

    async fn list_interfaces(&self, r: pb::ListInterfacesRequest) -> Answer<pb::ListInterfacesResponse> {
        self.linearizable(r.stale_ok).await?;
        Ok(self.read(|s| pb::ListInterfacesResponse {
            interfaces: s
                .interfaces()
                .values()
                .filter(|i| r.node.is_empty() || i.node == r.node)
                .filter(|i| r.vni.is_none_or(|v| i.vni == v))
                .map(|i| convert::interface(s, i))
                .collect(),
            generation: s.generation(),
        }))
    }

    async fn delete_interface(&self, r: pb::DeleteInterfaceRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::delete_interface(r)?).await?))
    }

    // ---- routes ----

    async fn add_route(&self, r: pb::AddRouteRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::add_route(r)?).await?))
    }

    async fn delete_route(&self, r: pb::DeleteRouteRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::delete_route(&r)?).await?))
    }

    async fn list_routes(&self, r: pb::ListRoutesRequest) -> Answer<pb::ListRoutesResponse> {
        self.linearizable(r.stale_ok).await?;
        Ok(self.read(|s| pb::ListRoutesResponse {
            routes: s.routes().filter(|rt| r.vni.is_none_or(|v| rt.vni == v)).map(convert::route).collect(),
            generation: s.generation(),
        }))
    }

    // ---- firewall rules ----

    async fn add_firewall_rule(&self, r: pb::AddFirewallRuleRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::add_firewall_rule(r)?).await?))
    }

    async fn delete_firewall_rule(&self, r: pb::DeleteFirewallRuleRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::delete_firewall_rule(r)?).await?))
    }

    async fn list_firewall_rules(
        &self,
        r: pb::ListFirewallRulesRequest,
    ) -> Answer<pb::ListFirewallRulesResponse> {
        self.linearizable(r.stale_ok).await?;
        self.read(|s| {
            let i = s
                .interfaces()
                .get(&r.interface)
                .ok_or_else(|| not_found(ObjectKind::Interface, &r.interface))?;
            Ok(pb::ListFirewallRulesResponse {
                rules: convert::firewall_rules(i),
                generation: s.generation(),
            })
        })
    }

    // ---- VIPs ----

    async fn set_vip(&self, r: pb::SetVipRequest) -> Answer<pb::SetVipResponse> {
        let resp = self.write(convert::set_vip(&r)?).await?;
        // The state's answer is the generation; the VIP's underlay address is read right
        // after the write (it is absent only if a later write already removed the VIP).
        let vip = self.read(|s| {
            s.interfaces().get(&r.interface).and_then(|i| i.vip).filter(|v| v.ip.to_string() == r.ip)
        });
        Ok(pb::SetVipResponse { generation: generation(&resp), vip: vip.as_ref().map(convert::vip) })
    }

    async fn delete_vip(&self, r: pb::DeleteVipRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::delete_vip(r)?).await?))
    }

    async fn get_vip(&self, r: pb::GetVipRequest) -> Answer<pb::GetVipResponse> {
        self.linearizable(r.stale_ok).await?;
        self.read(|s| {
            let i = s
                .interfaces()
                .get(&r.interface)
                .ok_or_else(|| not_found(ObjectKind::Interface, &r.interface))?;
            let vip =
                i.vip.as_ref().ok_or_else(|| not_found(ObjectKind::Vip, format!("of {}", r.interface)))?;
            Ok(pb::GetVipResponse { vip: Some(convert::vip(vip)), generation: s.generation() })
        })
    }

    // ---- NAT gateways ----

    async fn create_nat_gateway(&self, r: pb::CreateNatGatewayRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::create_nat_gateway(r)?).await?))
    }

    async fn delete_nat_gateway(&self, r: pb::DeleteNatGatewayRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::delete_nat_gateway(r)?).await?))
    }

    async fn list_nat_gateways(&self, r: pb::ListNatGatewaysRequest) -> Answer<pb::ListNatGatewaysResponse> {
        self.linearizable(r.stale_ok).await?;
        Ok(self.read(|s| pb::ListNatGatewaysResponse {
            gateways: s.nat_gateways().values().map(convert::nat_gateway).collect(),
            generation: s.generation(),
        }))
    }

    async fn get_nat_gateway(&self, r: pb::GetNatGatewayRequest) -> Answer<pb::GetNatGatewayResponse> {
        self.linearizable(r.stale_ok).await?;
        self.read(|s| {
            let g = s.nat_gateways().get(&r.id).ok_or_else(|| not_found(ObjectKind::NatGateway, &r.id))?;
            Ok(pb::GetNatGatewayResponse {
                gateway: Some(convert::nat_gateway(g)),
                allocations: convert::nat_allocations(s, g),
                generation: s.generation(),
            })
        })
    }

    async fn attach_nat(&self, r: pb::AttachNatRequest) -> Answer<pb::AttachNatResponse> {
        match self.write(convert::attach_nat(r)?).await? {
            StateResponse::NatBlock { generation, block, underlay } => Ok(pb::AttachNatResponse {
                generation,
                block: Some(convert::nat_block(&block)),
                underlay: underlay.to_string(),
            }),
            other => Err(unexpected("AttachNat", &other)),
        }
    }

    async fn detach_nat(&self, r: pb::DetachNatRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::detach_nat(r)?).await?))
    }

    // ---- load balancers ----

    async fn create_load_balancer(
        &self,
        r: pb::CreateLoadBalancerRequest,
    ) -> Answer<pb::LoadBalancerWriteResponse> {
        lb_written("CreateLoadBalancer", &self.write(convert::create_load_balancer(r)?).await?, String::new())
    }

    async fn delete_load_balancer(&self, r: pb::DeleteLoadBalancerRequest) -> Answer<pb::WriteResponse> {
        Ok(written(&self.write(convert::delete_load_balancer(r)?).await?))
    }

    async fn list_load_balancers(
        &self,
        r: pb::ListLoadBalancersRequest,
    ) -> Answer<pb::ListLoadBalancersResponse> {
        self.linearizable(r.stale_ok).await?;
        Ok(self.read(|s| pb::ListLoadBalancersResponse {
            load_balancers: s.load_balancers().values().map(convert::load_balancer).collect(),
            generation: s.generation(),
        }))
    }

    async fn get_load_balancer(&self, r: pb::GetLoadBalancerRequest) -> Answer<pb::GetLoadBalancerResponse> {
        self.linearizable(r.stale_ok).await?;
        self.read(|s| {
            let lb =
                s.load_balancers().get(&r.id).ok_or_else(|| not_found(ObjectKind::LoadBalancer, &r.id))?;
            Ok(pb::GetLoadBalancerResponse {
                load_balancer: Some(convert::load_balancer(lb)),
                generation: s.generation(),
            })
        })
    }

    async fn add_lb_target(&self, r: pb::AddLbTargetRequest) -> Answer<pb::LoadBalancerWriteResponse> {
        use pb::add_lb_target_request::Target;
        let cmd = convert::add_lb_target(r.clone())?;
        let resp = self.write(cmd).await?;
        let target = match &r.target {
            Some(Target::Underlay(a)) => {
                a.parse::<std::net::Ipv6Addr>().map(|a| a.to_string()).unwrap_or_default()
            }
            // The address chosen for the interface's load-balancer prefix, read right
            // after the write.
            Some(Target::Interface(i)) => self.read(|s| {
                s.load_balancers()
                    .get(&r.lb)
                    .and_then(|lb| lb.interface_targets.get(i))
                    .map(ToString::to_string)
                    .unwrap_or_default()
            }),
            None => String::new(),
        };
        lb_written("AddLbTarget", &resp, target)
    }

    async fn remove_lb_target(&self, r: pb::RemoveLbTargetRequest) -> Answer<pb::LoadBalancerWriteResponse> {
        use pb::remove_lb_target_request::Target;
        // A target named by interface is resolved in the leader's current state.
        if matches!(r.target, Some(Target::Interface(_))) {
            self.linearizable(false).await?;
        }
        let cmd = self.read(|s| convert::remove_lb_target(r, s)).map_err(|e| match e {
            RemoveTargetError::Invalid(e) => Failure::from(e),
            RemoveTargetError::UnknownLb(lb) => not_found(ObjectKind::LoadBalancer, lb),
            RemoveTargetError::NotATarget { lb, interface } => {
                not_found(ObjectKind::LbTarget, format!("{interface} of {lb}"))
            }
        })?;
        let target = match &cmd.op {
            crate::state::Op::RemoveLbTarget { addr, .. } => addr.to_string(),
            _ => String::new(),
        };
        lb_written("RemoveLbTarget", &self.write(cmd).await?, target)
    }
}
