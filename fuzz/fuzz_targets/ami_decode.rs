//! Fuzz the AMI decoder: arbitrary bytes, fed in arbitrary chunks, with small limits so the
//! oversize paths are reached. Checks: no panic; the frames do not depend on how the input was
//! split; buffered memory stays bounded; the correlator accepts whatever comes out.
#![no_main]

use asterisk_operator::ami::{Correlator, Decoder, Expect, Frame, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let limits = Limits { max_line: 64, max_frame: 256, max_lines: 16 };
    // First byte picks the chunking.
    let (ctl, input) = data.split_at(1);
    let chunk = (ctl[0] as usize % 17) + 1;

    let mut whole = Decoder::with_limits(limits);
    let expected = whole.decode(input);

    let mut split = Decoder::with_limits(limits);
    let mut got = Vec::new();
    for c in input.chunks(chunk) {
        split.feed(c);
        // Bounded: unconsumed input is at most one line limit plus one chunk, the frame at most
        // its limit plus its line index.
        assert!(split.buffered() <= limits.max_line + chunk + limits.max_frame + 64 * 16 + 64);
        while let Some(f) = split.next_frame() {
            got.push(f);
        }
    }
    assert_eq!(expected, got);

    let mut corr: Correlator<u32> = Correlator::new();
    corr.register("a-1".into(), Expect::for_action("IAXpeers"), 1);
    corr.register("a-2".into(), Expect::for_action("IAXnetstats"), 2);
    for f in got.into_iter().flatten() {
        if let Frame::Message(m) = f {
            let _ = serde_json::to_string(&m);
            let _ = asterisk_operator::ami::Event::from_message(m.clone());
            let _ = corr.route(m);
        }
    }
});
