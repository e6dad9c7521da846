//! Property tests of the TFTP core: the codec round-trips and never panics on any bytes; a
//! transfer delivers exactly the file over a channel that loses and repeats packets in both
//! directions, for any size, block size, mode and option set; netascii round-trips.

use std::collections::VecDeque;

use asterisk_operator::provision::tftp::packet::{
    self, ErrorCode, MAX_BLKSIZE, MIN_BLKSIZE, Mode, Packet, Request, from_netascii, to_netascii,
};
use asterisk_operator::provision::tftp::transfer::{Limits, Step, Transfer};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,40}"
}

fn packet() -> impl Strategy<Value = Packet> {
    let options = proptest::collection::vec(("[a-z]{1,8}", "[0-9a-z]{0,8}"), 0..4);
    let mode = prop_oneof![Just(Mode::Octet), Just(Mode::NetAscii), Just(Mode::Mail)];
    prop_oneof![
        (name(), mode.clone(), options.clone()).prop_map(|(filename, mode, options)| Packet::Rrq(Request {
            filename,
            mode,
            options
        })),
        (name(), mode, options.clone()).prop_map(|(filename, mode, options)| Packet::Wrq(Request {
            filename,
            mode,
            options
        })),
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..600))
            .prop_map(|(block, data)| Packet::Data { block, data }),
        any::<u16>().prop_map(|block| Packet::Ack { block }),
        (prop_oneof![Just(0u16), Just(1), Just(2), Just(4), Just(5), Just(8), Just(7)], "[ -~]{0,30}")
            .prop_map(|(code, message)| Packet::Error { code: ErrorCode::from_code(code), message }),
        options.prop_map(|options| Packet::Oack { options }),
    ]
}

/// A client by the book: acknowledges every block it gets (again for a duplicate), and on its
/// own timeout repeats its last packet. Returns the bytes received when the last block came.
struct Client {
    received: Vec<u8>,
    blksize: usize,
    expected: u16,
    last_sent: Vec<u8>,
    done: bool,
}

impl Client {
    fn on(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        match packet::decode(bytes).expect("the server sends valid packets") {
            Packet::Oack { options } => {
                if let Some((_, v)) = options.iter().find(|(k, _)| k == "blksize") {
                    self.blksize = v.parse().unwrap();
                }
                self.last_sent = Packet::Ack { block: 0 }.encode();
                Some(self.last_sent.clone())
            }
            Packet::Data { block, data } if block == self.expected => {
                self.received.extend_from_slice(&data);
                self.last_sent = Packet::Ack { block }.encode();
                self.expected = self.expected.wrapping_add(1);
                if data.len() < self.blksize {
                    self.done = true;
                }
                Some(self.last_sent.clone())
            }
            Packet::Data { block, .. } if block == self.expected.wrapping_sub(1) => {
                Some(Packet::Ack { block }.encode())
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn packets_round_trip(p in packet()) {
        let decoded = packet::decode(&p.encode()).unwrap();
        // Option names come back in lower case (they are case-insensitive).
        let lower = |o: &Vec<(String, String)>| o.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect::<Vec<_>>();
        let want = match p {
            Packet::Rrq(r) => Packet::Rrq(Request { options: lower(&r.options), ..r }),
            Packet::Wrq(r) => Packet::Wrq(Request { options: lower(&r.options), ..r }),
            Packet::Oack { options } => Packet::Oack { options: lower(&options) },
            other => other,
        };
        prop_assert_eq!(decoded, want);
    }

    #[test]
    fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = packet::decode(&bytes);
    }

    #[test]
    fn netascii_round_trips(text in proptest::collection::vec(any::<u8>(), 0..500)) {
        prop_assert_eq!(from_netascii(&to_netascii(&text)), text);
    }

    /// `losses[i]` drops the i-th datagram (either direction) and `repeats[i]` delivers it
    /// twice; after the listed ones every datagram arrives once. The transfer completes with
    /// exactly the file, unless more packets than retries were lost.
    #[test]
    fn transfers_deliver_the_file_through_loss_and_duplication(
        file in proptest::collection::vec(any::<u8>(), 0..4000),
        blksize in prop_oneof![Just(None), (MIN_BLKSIZE..=1500u16).prop_map(Some), Just(Some(MAX_BLKSIZE))],
        tsize in any::<bool>(),
        netascii in any::<bool>(),
        losses in proptest::collection::vec(any::<bool>(), 0..60),
        repeats in proptest::collection::vec(any::<bool>(), 0..60),
    ) {
        let mut options = Vec::new();
        if let Some(b) = blksize {
            options.push(("blksize".to_owned(), b.to_string()));
        }
        if tsize {
            options.push(("tsize".to_owned(), "0".to_owned()));
        }
        let mode = if netascii { Mode::NetAscii } else { Mode::Octet };
        let request = Request { filename: "f".into(), mode, options };
        let limits = Limits { retries: 5, ..Limits::default() };
        let (mut server, first) = Transfer::start(&request, &file[..], &limits).unwrap();
        let mut client = Client { received: Vec::new(), blksize: 512, expected: 1, last_sent: Vec::new(), done: false };
        // In flight: (to_client, bytes).
        let mut wire: VecDeque<(bool, Vec<u8>)> = VecDeque::from([(true, first)]);
        let mut sent = 0usize;
        let (mut finished, mut failed) = (false, None);
        for _ in 0..100_000 {
            let Some((to_client, bytes)) = wire.pop_front() else {
                // Nothing in flight: both sides time out; the server resends, the client repeats.
                match server.on_timeout() {
                    Step::Send(b) => wire.push_back((true, b)),
                    Step::Failed(why) => { failed = Some(why); break }
                    _ => {}
                }
                if !client.last_sent.is_empty() && !client.done {
                    wire.push_back((false, client.last_sent.clone()));
                }
                continue;
            };
            let i = sent;
            sent += 1;
            if losses.get(i).copied().unwrap_or(false) {
                continue;
            }
            let copies = if repeats.get(i).copied().unwrap_or(false) { 2 } else { 1 };
            for _ in 0..copies {
                if to_client {
                    if let Some(reply) = client.on(&bytes) {
                        wire.push_back((false, reply));
                    }
                } else {
                    match server.on_packet(&bytes) {
                        Step::Send(b) => wire.push_back((true, b)),
                        Step::Finished => finished = true,
                        Step::Failed(why) => failed = Some(why),
                        Step::Wait => {}
                    }
                }
            }
            if finished { break }
        }
        if let Some(why) = failed {
            // Giving up takes more lost packets than retries (each retransmission lost).
            let lost = losses.iter().filter(|l| **l).count();
            prop_assert!(lost as u32 > limits.retries, "failed after only {lost} losses: {why}");
        } else {
            prop_assert!(finished, "neither finished nor failed");
            prop_assert!(client.done);
            let got = if netascii { from_netascii(&client.received) } else { client.received.clone() };
            prop_assert_eq!(got, file);
        }
    }
}
