//! One read transfer as a pure state machine: option negotiation (RFC 2347/2348/2349: blksize,
//! tsize, timeout), lock-step DATA/ACK with retransmission on timeout only (never on a
//! duplicate ACK: the "Sorcerer's Apprentice" bug of RFC 1350), block numbers that wrap after
//! 65535. The UDP shell feeds it datagrams and timeouts and sends what it returns.

use std::sync::Arc;
use std::time::Duration;

use super::packet::{self, DEFAULT_BLKSIZE, ErrorCode, MAX_BLKSIZE, MIN_BLKSIZE, Mode, Packet, Request};

/// What the server allows.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest block size granted (a client asking more gets this).
    pub max_blksize: u16,
    /// Retransmission timeout when the client proposes none.
    pub timeout: Duration,
    /// Retransmissions of one packet before giving up.
    pub retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_blksize: MAX_BLKSIZE, timeout: Duration::from_secs(1), retries: 5 }
    }
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this datagram to the client (then wait for its answer or the timeout).
    Send(Vec<u8>),
    /// Keep waiting: the packet changed nothing.
    Wait,
    /// The client acknowledged the last block.
    Finished,
    /// The transfer is over without success (the client gave up, or never answered).
    Failed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// An OACK was sent; ACK 0 starts the data.
    Options,
    /// Block `n` (1-based, not wrapped) was sent.
    Block(u64),
    Over,
}

/// A read transfer in progress.
#[derive(Debug)]
pub struct Transfer {
    data: Arc<[u8]>,
    blksize: usize,
    blocks: u64,
    phase: Phase,
    timeout: Duration,
    retries_left: u32,
    max_retries: u32,
    /// The last packet sent, for retransmission.
    last: Vec<u8>,
}

impl Transfer {
    /// Starts serving `file` for `request`: the first packet to send is an OACK when the client
    /// asked for options the server understands, else DATA block 1. `Err` is the ERROR packet
    /// to send instead (a mode the server refuses). In octet mode the file is shared, not copied.
    pub fn start(
        request: &Request,
        file: impl Into<Arc<[u8]>>,
        limits: &Limits,
    ) -> Result<(Transfer, Vec<u8>), Vec<u8>> {
        let data: Arc<[u8]> = match request.mode {
            Mode::Octet => file.into(),
            Mode::NetAscii => Arc::from(packet::to_netascii(&file.into())),
            Mode::Mail => {
                return Err(Packet::Error {
                    code: ErrorCode::IllegalOperation,
                    message: "mail mode is not supported".into(),
                }
                .encode());
            }
        };
        let mut blksize = DEFAULT_BLKSIZE;
        let mut timeout = limits.timeout;
        let mut accepted = Vec::new();
        for (name, value) in &request.options {
            match name.as_str() {
                "blksize" => {
                    if let Ok(asked) = value.parse::<u32>()
                        && asked >= u32::from(MIN_BLKSIZE)
                    {
                        blksize = asked.min(u32::from(limits.max_blksize.min(MAX_BLKSIZE))) as u16;
                        accepted.push((name.clone(), blksize.to_string()));
                    }
                }
                "tsize" => accepted.push((name.clone(), data.len().to_string())),
                "timeout" => {
                    if let Ok(seconds) = value.parse::<u8>()
                        && seconds >= 1
                    {
                        timeout = Duration::from_secs(seconds.into());
                        accepted.push((name.clone(), seconds.to_string()));
                    }
                }
                // RFC 2347: options the server does not know are left out of the OACK.
                _ => {}
            }
        }
        let blksize = usize::from(blksize);
        let mut transfer = Transfer {
            blocks: data.len() as u64 / blksize as u64 + 1,
            data,
            blksize,
            phase: Phase::Options,
            timeout,
            retries_left: limits.retries,
            max_retries: limits.retries,
            last: Vec::new(),
        };
        if accepted.is_empty() {
            transfer.send_block(1);
        } else {
            transfer.last = Packet::Oack { options: accepted }.encode();
        }
        let first = transfer.last.clone();
        Ok((transfer, first))
    }

    /// How long to wait for the client's answer to the last packet.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The size of what is sent (after netascii conversion).
    pub fn size(&self) -> usize {
        self.data.len()
    }

    fn send_block(&mut self, n: u64) {
        let start = ((n - 1) as usize) * self.blksize;
        let end = (start + self.blksize).min(self.data.len());
        packet::encode_data(n as u16, &self.data[start.min(end)..end], &mut self.last);
        self.phase = Phase::Block(n);
        self.retries_left = self.max_retries;
    }

    /// A datagram from the client's transfer ID.
    pub fn on_packet(&mut self, bytes: &[u8]) -> Step {
        let expected = match self.phase {
            Phase::Over => return Step::Wait,
            Phase::Options => 0,
            Phase::Block(n) => n,
        };
        match packet::decode(bytes) {
            Ok(Packet::Ack { block }) if block == expected as u16 => {
                if expected == self.blocks {
                    self.phase = Phase::Over;
                    return Step::Finished;
                }
                self.send_block(expected + 1);
                Step::Send(self.last.clone())
            }
            Ok(Packet::Error { code, message }) => {
                self.phase = Phase::Over;
                Step::Failed(format!("the client ended the transfer: error {code:?}: {message}"))
            }
            // A duplicate or stale ACK, or anything else: answering it would double the traffic.
            _ => Step::Wait,
        }
    }

    /// The timeout passed without an answer.
    pub fn on_timeout(&mut self) -> Step {
        if self.phase == Phase::Over {
            return Step::Wait;
        }
        if self.retries_left == 0 {
            self.phase = Phase::Over;
            return Step::Failed(format!("no answer after {} retransmissions", self.max_retries));
        }
        self.retries_left -= 1;
        Step::Send(self.last.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(mode: Mode, options: &[(&str, &str)]) -> Request {
        Request {
            filename: "f".into(),
            mode,
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn data(step: &Step) -> (u16, usize) {
        let Step::Send(bytes) = step else { panic!("expected a send, got {step:?}") };
        match packet::decode(bytes).unwrap() {
            Packet::Data { block, data } => (block, data.len()),
            other => panic!("expected DATA, got {other:?}"),
        }
    }

    fn ack(block: u16) -> Vec<u8> {
        Packet::Ack { block }.encode()
    }

    #[test]
    fn without_options_data_starts_at_once_and_a_full_last_block_is_followed_by_an_empty_one() {
        let file = vec![7u8; 1024];
        let (mut t, first) = Transfer::start(&rrq(Mode::Octet, &[]), &file[..], &Limits::default()).unwrap();
        assert_eq!(data(&Step::Send(first)), (1, 512));
        assert_eq!(data(&t.on_packet(&ack(1))), (2, 512));
        assert_eq!(data(&t.on_packet(&ack(2))), (3, 0));
        assert_eq!(t.on_packet(&ack(3)), Step::Finished);
    }

    #[test]
    fn options_are_granted_within_limits_and_acknowledged_by_ack_zero() {
        let limits = Limits { max_blksize: 1468, ..Limits::default() };
        let asked = [("blksize", "8192"), ("tsize", "0"), ("timeout", "3"), ("windowsize", "4")];
        let (mut t, first) = Transfer::start(&rrq(Mode::Octet, &asked), &[1u8; 3000][..], &limits).unwrap();
        assert_eq!(
            packet::decode(&first).unwrap(),
            Packet::Oack {
                options: vec![
                    ("blksize".into(), "1468".into()),
                    ("tsize".into(), "3000".into()),
                    ("timeout".into(), "3".into())
                ]
            }
        );
        assert_eq!(t.timeout(), Duration::from_secs(3));
        assert_eq!(data(&t.on_packet(&ack(0))), (1, 1468));
        assert_eq!(data(&t.on_packet(&ack(1))), (2, 1468));
        assert_eq!(data(&t.on_packet(&ack(2))), (3, 64));
        assert_eq!(t.on_packet(&ack(3)), Step::Finished);
    }

    #[test]
    fn bad_option_values_are_left_out_not_fatal() {
        let (_, first) = Transfer::start(
            &rrq(Mode::Octet, &[("blksize", "4"), ("timeout", "0")]),
            &b"x"[..],
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(data(&Step::Send(first)), (1, 1));
    }

    #[test]
    fn duplicate_acks_are_ignored_and_timeouts_resend_until_the_retries_run_out() {
        let limits = Limits { retries: 2, ..Limits::default() };
        let (mut t, first) = Transfer::start(&rrq(Mode::Octet, &[]), &[0u8; 600][..], &limits).unwrap();
        let second = t.on_packet(&ack(1));
        assert_eq!(data(&second), (2, 88));
        assert_eq!(t.on_packet(&ack(1)), Step::Wait, "no Sorcerer's Apprentice");
        assert_eq!(t.on_packet(&ack(7)), Step::Wait);
        assert_eq!(t.on_timeout(), second);
        assert_eq!(t.on_timeout(), second);
        assert!(matches!(t.on_timeout(), Step::Failed(_)));
        assert_eq!(t.on_packet(&ack(2)), Step::Wait, "over is over");
        let _ = first;
    }

    #[test]
    fn a_client_error_ends_the_transfer() {
        let (mut t, _) =
            Transfer::start(&rrq(Mode::Octet, &[("tsize", "0")]), &[0u8; 10][..], &Limits::default())
                .unwrap();
        let err = Packet::Error { code: ErrorCode::OptionRefused, message: "no".into() }.encode();
        assert!(matches!(t.on_packet(&err), Step::Failed(m) if m.contains("OptionRefused")));
    }

    #[test]
    fn netascii_sends_converted_text_and_mail_mode_is_refused() {
        let (t, first) =
            Transfer::start(&rrq(Mode::NetAscii, &[("tsize", "0")]), &b"a\nb\n"[..], &Limits::default())
                .unwrap();
        assert_eq!(t.size(), 6);
        assert!(matches!(packet::decode(&first).unwrap(), Packet::Oack { options } if options[0].1 == "6"));
        let err = Transfer::start(&rrq(Mode::Mail, &[]), &b"x"[..], &Limits::default()).unwrap_err();
        assert!(matches!(
            packet::decode(&err).unwrap(),
            Packet::Error { code: ErrorCode::IllegalOperation, .. }
        ));
    }

    #[test]
    fn block_numbers_wrap_after_65535() {
        // 65536 blocks of 8 bytes and an empty last one: block 65536 goes out as 0.
        let file = vec![1u8; 8 * 65536];
        let (mut t, _) =
            Transfer::start(&rrq(Mode::Octet, &[("blksize", "8")]), &file[..], &Limits::default()).unwrap();
        let mut step = t.on_packet(&ack(0));
        let mut n: u64 = 1;
        loop {
            let (block, len) = data(&step);
            assert_eq!(block, n as u16);
            step = t.on_packet(&ack(block));
            if len < 8 {
                assert_eq!(step, Step::Finished);
                break;
            }
            n += 1;
        }
        assert_eq!(n, 65537);
    }
}
