//! The underlay socket's UDP GSO and GRO.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::net::UdpSocket;
use wow_node::udp::{cmsg_buffer, enable_gro, send_segments, try_recv};

/// A GSO run of three full segments and a shorter last one arrives as
/// those four datagrams, in order (coalesced by GRO or not).
#[tokio::test]
async fn gso_run_arrives_as_its_datagrams() {
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    enable_gro(&b);
    let mut run = Vec::new();
    for i in 0..3u8 {
        run.extend_from_slice(&[i; 100]);
    }
    run.extend_from_slice(&[9; 50]);
    send_segments(&a, &run, 100, b.local_addr().unwrap())
        .await
        .unwrap();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut cmsg = cmsg_buffer();
    let receive = async {
        while got.len() < 4 {
            b.readable().await.unwrap();
            match try_recv(&b, &mut buf, &mut cmsg) {
                Ok((len, from, segment)) => {
                    assert_eq!(from, a.local_addr().unwrap());
                    got.extend(buf[..len].chunks(segment).map(<[u8]>::to_vec));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), receive)
        .await
        .expect("the run never arrived");
    assert_eq!(
        got,
        vec![vec![0; 100], vec![1; 100], vec![2; 100], vec![9; 50]]
    );
}
