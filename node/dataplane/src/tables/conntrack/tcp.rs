//! The TCP connection state a flow entry tracks, after dpservice's coarse model.
//!
//! The state advances on the TCP flags of every packet of the flow, whichever direction
//! it travels in (as dpservice does: it neither checks sequence numbers nor which side
//! sent a flag). The state only decides the flow's idle timeout: an established
//! connection may idle for a long time (24 hours by default), every other state for the
//! short `--flow-timeout`.

/// The FIN flag of the TCP header's flags byte.
pub const FIN: u8 = 0x01;
/// The SYN flag.
pub const SYN: u8 = 0x02;
/// The RST flag.
pub const RST: u8 = 0x04;
/// The ACK flag.
pub const ACK: u8 = 0x10;

/// Where a TCP connection is, as far as the flow table cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    /// No SYN seen yet (a flow created by a packet without SYN, e.g. mid-connection
    /// after a restart).
    #[default]
    None,
    /// A SYN was seen.
    SynSent,
    /// A SYN+ACK followed the SYN.
    SynRecv,
    /// An ACK followed the SYN+ACK: the handshake completed.
    Established,
    /// A FIN was seen on an established connection; the other side has not closed yet.
    FinWait,
    /// Reset, or closed from both sides (a FIN outside the established state). A new SYN
    /// reopens the flow (port reuse).
    Closed,
}

impl TcpState {
    /// The state after a packet with TCP flags `flags`.
    ///
    /// - RST closes the connection from any state.
    /// - FIN moves an established connection to [`TcpState::FinWait`]; a FIN in any other
    ///   state (the second FIN, or a FIN before the handshake completed) closes it.
    /// - Otherwise the handshake advances: SYN (from `None` or `Closed`), then SYN+ACK,
    ///   then ACK. Packets that fit no step leave the state alone.
    #[must_use]
    pub fn next(self, flags: u8) -> TcpState {
        if flags & RST != 0 {
            return TcpState::Closed;
        }
        if flags & FIN != 0 {
            return if self == TcpState::Established { TcpState::FinWait } else { TcpState::Closed };
        }
        match self {
            TcpState::None | TcpState::Closed if flags & SYN != 0 => TcpState::SynSent,
            TcpState::SynSent if flags & (SYN | ACK) == SYN | ACK => TcpState::SynRecv,
            TcpState::SynRecv if flags & ACK != 0 => TcpState::Established,
            s => s,
        }
    }

    pub(super) fn from_u8(v: u8) -> TcpState {
        match v {
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::Closed,
            _ => TcpState::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(flags: &[u8]) -> TcpState {
        flags.iter().fold(TcpState::None, |s, &f| s.next(f))
    }

    #[test]
    fn handshake_establishes() {
        assert_eq!(run(&[SYN]), TcpState::SynSent);
        assert_eq!(run(&[SYN, SYN | ACK]), TcpState::SynRecv);
        assert_eq!(run(&[SYN, SYN | ACK, ACK]), TcpState::Established);
        // Retransmitted SYN and data in between do not confuse it.
        assert_eq!(run(&[SYN, SYN, SYN | ACK, SYN | ACK, ACK, ACK]), TcpState::Established);
    }

    #[test]
    fn out_of_order_steps_do_not_advance() {
        // ACK before SYN+ACK, SYN+ACK without SYN.
        assert_eq!(run(&[SYN, ACK]), TcpState::SynSent);
        assert_eq!(run(&[SYN | ACK]), TcpState::SynSent, "SYN+ACK carries SYN: counts as a SYN");
        assert_eq!(run(&[ACK, ACK]), TcpState::None);
    }

    #[test]
    fn fin_and_rst_close() {
        let est = [SYN, SYN | ACK, ACK];
        let mut f = est.to_vec();
        f.push(FIN | ACK);
        assert_eq!(run(&f), TcpState::FinWait);
        f.push(ACK);
        assert_eq!(run(&f), TcpState::FinWait);
        f.push(FIN | ACK);
        assert_eq!(run(&f), TcpState::Closed);
        // RST from anywhere.
        for s in [TcpState::None, TcpState::SynSent, TcpState::Established, TcpState::FinWait] {
            assert_eq!(s.next(RST | ACK), TcpState::Closed);
        }
        // FIN before the handshake completed closes at once.
        assert_eq!(run(&[SYN, FIN]), TcpState::Closed);
        // A new SYN reopens a closed flow.
        assert_eq!(TcpState::Closed.next(SYN), TcpState::SynSent);
        assert_eq!(TcpState::FinWait.next(SYN), TcpState::FinWait);
    }

    #[test]
    fn u8_round_trip() {
        for s in [
            TcpState::None,
            TcpState::SynSent,
            TcpState::SynRecv,
            TcpState::Established,
            TcpState::FinWait,
            TcpState::Closed,
        ] {
            assert_eq!(TcpState::from_u8(s as u8), s);
        }
    }
}
