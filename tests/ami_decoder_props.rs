//! Property tests of the AMI decoder/encoder: arbitrary bytes and split points, bounded memory,
//! header injection, old `Response: Follows`, secret redaction.
//!
//! `AMI_FUZZ_SECS=600 cargo test --release --test ami_decoder_props long_random_fuzz_loop -- --nocapture`
//! runs the randomized loop for that long (the fallback when cargo-fuzz cannot run).

use asterisk_operator::ami::{
    Action, DecodeError, Decoder, DeviceState, EncodeError, ExtensionState, Frame, Limits, Message,
    SessionConfig,
};
use asterisk_operator::secret::SecretValue;
use proptest::prelude::*;

fn decode_whole(limits: Limits, input: &[u8]) -> Vec<Result<Frame, DecodeError>> {
    Decoder::with_limits(limits).decode(input)
}

fn decode_split(
    limits: Limits,
    input: &[u8],
    cuts: &[usize],
    max_seen: &mut usize,
) -> Vec<Result<Frame, DecodeError>> {
    let mut d = Decoder::with_limits(limits);
    let mut out = Vec::new();
    let mut prev = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(input.len());
    for c in cuts {
        d.feed(&input[prev..c]);
        *max_seen = (*max_seen).max(d.buffered());
        while let Some(f) = d.next_frame() {
            out.push(f);
        }
        prev = c;
    }
    out
}

/// Bytes that look a lot like AMI, so the interesting paths are hit, mixed with arbitrary bytes.
fn ami_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b": ".to_vec()),
        Just(b"Response: Follows\r\n".to_vec()),
        Just(b"--END COMMAND--".to_vec()),
        Just(b"Event: PeerEntry\r\n".to_vec()),
        Just(b"EventList: Complete\r\n".to_vec()),
        Just(b"Asterisk Call Manager/11.0.0\r\n".to_vec()),
        "[A-Za-z-]{1,8}: [ -~]{0,20}\r\n".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    proptest::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

const SMALL: Limits = Limits { max_line: 48, max_frame: 200, max_lines: 12 };

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_and_splits_never_panic_and_agree(input in ami_ish(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        for limits in [SMALL, Limits::default()] {
            let whole = decode_whole(limits, &input);
            let mut max_seen = 0;
            let split = decode_split(limits, &input, &cuts, &mut max_seen);
            prop_assert_eq!(&whole, &split);
            if limits == SMALL {
                // Unconsumed input ≤ a line (+CR) plus the largest chunk; frame ≤ its limit plus index.
                let chunk = input.len();
                prop_assert!(max_seen <= limits.max_line + 1 + chunk + limits.max_frame + 16 * (limits.max_lines + 1));
            }
        }
    }

    #[test]
    fn pure_random_bytes(input in proptest::collection::vec(any::<u8>(), 0..2000), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let whole = decode_whole(SMALL, &input);
        let mut m = 0;
        prop_assert_eq!(whole, decode_split(SMALL, &input, &cuts, &mut m));
    }

    /// Any message built from printable headers (values with colons, repeated keys) survives
    /// wire encoding and decoding.
    #[test]
    fn messages_round_trip(headers in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,30}"), 1..12), cuts in proptest::collection::vec(any::<usize>(), 0..5)) {
        let mut m = Message::from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // A value that starts with a space loses exactly the one separator space; normalise.
        if m.headers().any(|(_, v)| v.starts_with(' ')) || m.get("Response").is_some_and(|r| r.eq_ignore_ascii_case("Follows")) {
            m = Message::from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.trim_start())).filter(|(k, _)| !k.eq_ignore_ascii_case("Response")));
        }
        let wire = m.to_wire();
        let mut n = 0;
        let got = decode_split(Limits::default(), &[b"Asterisk Call Manager/11.0.0\r\n".as_slice(), &wire].concat(), &cuts, &mut n);
        prop_assert_eq!(got, vec![Ok(Frame::Banner("Asterisk Call Manager/11.0.0".into())), Ok(Frame::Message(m))]);
    }

    #[test]
    fn encoder_rejects_any_line_break(k in "[A-Za-z]{1,8}", pre in "[ -~]{0,10}", brk in prop_oneof![Just("\r"), Just("\n"), Just("\r\n")], post in "[ -~]{0,10}") {
        let v = format!("{pre}{brk}{post}");
        let mut out = b"keep".to_vec();
        let a = Action::new("Setvar").header(k.clone(), v.clone());
        let is_line_break = matches!(a.encode(Some("id-1"), &mut out), Err(EncodeError::LineBreak { .. }));
        prop_assert!(is_line_break);
        prop_assert_eq!(&out, b"keep");
        let a = Action::new("Setvar").header(format!("{k}{brk}"), "x");
        prop_assert!(a.encode(Some("id-1"), &mut out).is_err());
        prop_assert!(Action::new("Ping").encode(Some(&v), &mut out).is_err());
        prop_assert!(Action::new(v).encode(None, &mut out).is_err());
        prop_assert_eq!(&out, b"keep");
    }
}

#[test]
fn endless_header_line_keeps_memory_bounded_and_resyncs() {
    let limits = Limits { max_line: 4096, max_frame: 1 << 16, max_lines: 100 };
    let mut d = Decoder::with_limits(limits);
    let mut errors = Vec::new();
    d.feed(b"Asterisk Call Manager/11.0.0\r\nEvent: X\r\nGarbage: ");
    let chunk = vec![b'a'; 65536];
    // 256 MiB of a header line that never ends.
    for _ in 0..4096 {
        d.feed(&chunk);
        while let Some(f) = d.next_frame() {
            if let Err(e) = f {
                errors.push(e);
            }
        }
        assert!(d.buffered() <= limits.max_line + 1 + chunk.len(), "{}", d.buffered());
    }
    assert_eq!(errors, [DecodeError::LineTooLong { limit: 4096 }]);
    // The line ends, the rest of that frame is dropped, and the next frame decodes.
    let out = d.decode(b"aaa\r\nMore: x\r\n\r\nResponse: Success\r\nActionID: a-1\r\nPing: Pong\r\n\r\n");
    assert_eq!(
        out,
        vec![Ok(Frame::Message(Message::from_headers([
            ("Response", "Success"),
            ("ActionID", "a-1"),
            ("Ping", "Pong")
        ])))]
    );
}

#[test]
fn oversized_frame_and_too_many_lines_are_dropped() {
    let limits = Limits { max_line: 100, max_frame: 300, max_lines: 5 };
    let mut d = Decoder::with_limits(limits);
    let mut input = b"Asterisk Call Manager/11.0.0\r\n".to_vec();
    for i in 0..20 {
        input.extend(format!("Output: line {i} {}\r\n", "x".repeat(30)).as_bytes());
    }
    input.extend(b"\r\nEvent: A\r\n1: a\r\n2: b\r\n3: c\r\n4: d\r\n5: e\r\n\r\nEvent: Ok\r\n\r\n");
    let out = d.decode(&input);
    assert_eq!(out.len(), 4, "{out:?}");
    assert!(matches!(
        out[1],
        Err(DecodeError::TooManyLines { limit: 5 }) | Err(DecodeError::FrameTooLarge { .. })
    ));
    assert_eq!(out[2], Err(DecodeError::TooManyLines { limit: 5 }));
    assert_eq!(out[3], Ok(Frame::Message(Message::from_headers([("Event", "Ok")]))));
    let mut d = Decoder::with_limits(Limits { max_line: 100, max_frame: 300, max_lines: 1000 });
    let out = d.decode(&input);
    assert_eq!(out[1], Err(DecodeError::FrameTooLarge { limit: 300 }));
}

#[test]
fn response_follows_from_older_servers() {
    let wire = b"Asterisk Call Manager/1.1\r\nResponse: Follows\r\nPrivilege: Command\r\nActionID: c-1\r\n\
Channel              Location             State   Application(Data)\n\
\n\
0 active channels\n--END COMMAND--\r\n\r\nResponse: Success\r\nActionID: p-2\r\nPing: Pong\r\n\r\n";
    let mut d = Decoder::new();
    let out: Vec<Frame> = d.decode(wire).into_iter().map(Result::unwrap).collect();
    assert_eq!(out.len(), 3, "{out:?}");
    let Frame::Message(m) = &out[1] else { panic!() };
    assert_eq!(m.response(), Some("Follows"));
    assert_eq!(m.action_id(), Some("c-1"));
    assert_eq!(m.get("Privilege"), Some("Command"));
    assert_eq!(
        m.raw_lines().collect::<Vec<_>>(),
        ["Channel              Location             State   Application(Data)", "", "0 active channels"]
    );
    assert!(!m.is_error());
    // The typed Command reads the raw body.
    let reply = asterisk_operator::ami::Reply { response: m.clone(), ..Default::default() };
    use asterisk_operator::ami::TypedAction;
    let lines = asterisk_operator::ami::actions::Command::parse(reply).unwrap();
    assert_eq!(lines[2], "0 active channels");
    // END marker glued to the last output line.
    let mut d = Decoder::without_banner();
    let out = d.decode(b"Response: Follows\r\nActionID: c-3\r\nonly line--END COMMAND--\r\n\r\n");
    let Ok(Frame::Message(m)) = &out[0] else { panic!("{out:?}") };
    assert_eq!(m.raw_lines().collect::<Vec<_>>(), ["only line"]);
}

#[test]
fn values_with_colons_repeated_keys_and_non_utf8() {
    let mut d = Decoder::without_banner();
    let out = d.decode(b"Event: VarSet\r\nValue: a: b:c\r\nVariable: X\r\nVariable: Y\r\nCallerIDName: Caf\xe9\r\nEmpty:\r\n\r\n");
    let Ok(Frame::Message(m)) = &out[0] else { panic!() };
    assert_eq!(m.get("value"), Some("a: b:c"));
    assert_eq!(m.get_all("Variable").collect::<Vec<_>>(), ["X", "Y"]);
    assert_eq!(m.get("CallerIDName"), Some("Caf\u{fffd}"));
    assert_eq!(m.get("Empty"), Some(""));
    let json = serde_json::to_value(m).unwrap();
    assert_eq!(json["Variable"], serde_json::json!(["X", "Y"]));
}

#[test]
fn secrets_never_show_in_debug_or_json() {
    let s = SecretValue::new("labsecret");
    let a = Action::new("Login").header("Username", "admin").header("Secret", s.expose());
    let cfg = SessionConfig::new("127.0.0.1:5038", "admin", s.clone());
    let m = Message::from_headers([("Action", "Login"), ("Secret", "labsecret"), ("Key", "labsecret")]);
    for text in [
        format!("{a:?}"),
        format!("{cfg:?}"),
        format!("{s:?} {s}"),
        format!("{m:?}"),
        serde_json::to_string(&m).unwrap(),
    ] {
        assert!(!text.contains("labsecret"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
    // The wire form, of course, has it.
    let mut out = Vec::new();
    a.encode(Some("l-1"), &mut out).unwrap();
    assert!(String::from_utf8(out).unwrap().contains("Secret: labsecret\r\n"));
}

#[test]
fn extension_and_device_state_mappings() {
    for (code, st, text) in [
        (0, ExtensionState::Idle, "Idle"),
        (1, ExtensionState::InUse, "InUse"),
        (2, ExtensionState::Busy, "Busy"),
        (4, ExtensionState::Unavailable, "Unavailable"),
        (8, ExtensionState::Ringing, "Ringing"),
        (9, ExtensionState::InUseRinging, "InUse&Ringing"),
        (16, ExtensionState::Hold, "Hold"),
        (-1, ExtensionState::Unknown, "Unknown"),
    ] {
        assert_eq!(ExtensionState::from_code(code), Some(st));
        assert_eq!((st.code(), st.text()), (code, text));
        // Mirroring a state onto a Custom: device and reading the hint back gives the same state,
        // except Unknown, which is mirrored as Unavailable (Setvar refuses UNKNOWN).
        let back = ExtensionState::from(st.to_device_state());
        if st == ExtensionState::Unknown {
            assert_eq!(back, ExtensionState::Unavailable);
        } else {
            assert_eq!(back, st);
        }
    }
    assert_eq!(ExtensionState::from_code(3), None);
    for d in DeviceState::ALL {
        assert_eq!(d.as_str().parse::<DeviceState>(), Ok(d));
        assert_eq!(d.as_str().to_lowercase().parse::<DeviceState>(), Ok(d));
    }
    assert!("BOGUS".parse::<DeviceState>().is_err());
}

/// The long randomized fuzz loop (cargo-fuzz is the primary harness; this runs anywhere).
/// Runs 2 seconds by default; `AMI_FUZZ_SECS` sets the duration.
#[test]
fn long_random_fuzz_loop() {
    use rand::{Rng, SeedableRng};
    let secs: u64 = std::env::var("AMI_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let seed: u64 = std::env::var("AMI_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let corpus: Vec<Vec<u8>> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ami"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut execs = 0u64;
    while std::time::Instant::now() < end {
        for _ in 0..64 {
            // Mutate a slice of a real capture: flips, inserts of CR/LF/':'/bytes, truncations.
            let src = &corpus[rng.random_range(0..corpus.len())];
            let a = rng.random_range(0..src.len());
            let b = (a + rng.random_range(0..2048)).min(src.len());
            let mut input = src[a..b].to_vec();
            for _ in 0..rng.random_range(0..8) {
                let pos = rng.random_range(0..=input.len());
                let byte =
                    *[b'\r', b'\n', b':', b' ', 0xff, rng.random()].get(rng.random_range(0..6)).unwrap();
                if rng.random_bool(0.5) && pos < input.len() {
                    input[pos] = byte;
                } else {
                    input.insert(pos, byte);
                }
            }
            let cuts: Vec<usize> =
                (0..rng.random_range(0..10)).map(|_| rng.random::<u32>() as usize).collect();
            let limits = if rng.random_bool(0.5) { SMALL } else { Limits::default() };
            let whole = decode_whole(limits, &input);
            let mut m = 0;
            assert_eq!(
                whole,
                decode_split(limits, &input, &cuts, &mut m),
                "seed {seed} input {input:?} cuts {cuts:?}"
            );
            execs += 1;
        }
    }
    eprintln!("long_random_fuzz_loop: {execs} execs in {secs} s, no findings");
    assert!(execs > 0);
}
