//! Arbitrary bytes as a TCP stream, split at arbitrary points: the framer
//! yields messages, each answered with a length-prefixed response.
#![no_main]

use std::time::Instant;

use dns_virt::{Config, Server, TcpFramer, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).max(1);
    let mut framer = TcpFramer::new();
    let mut server = Server::new(Config::default());
    let from = "10.128.0.2:40000".parse().unwrap();
    let now = Instant::now();
    let mut messages = 0;
    for chunk in stream.chunks(cut) {
        framer.push(chunk);
        loop {
            match framer.next_message() {
                Ok(Some(m)) => {
                    let m = m.to_vec();
                    server.handle_input(now, from, Transport::Tcp, &m);
                    messages += 1;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    while let Some(t) = server.poll_transmit() {
        let len = usize::from(u16::from_be_bytes([t.payload[0], t.payload[1]]));
        assert_eq!(len + 2, t.payload.len());
        messages -= 1;
    }
    assert!(messages >= 0);
});
