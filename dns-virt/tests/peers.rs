//! Real resolvers against `dns-serve` in network namespaces: `dig`
//! (bind9-dnsutils) checked field by field, and glibc's stub resolver through
//! `getent hosts` with a per-namespace resolv.conf.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wow_test_hosts::{Netns, Process, TempDir, example_bin, require, wait_until};

const SERVER: &str = "10.99.0.1";

/// Server and client namespaces joined by a veth pair, with dns-serve on
/// port 53 (normal) and port 5300 (UDP responses capped at 60 octets).
struct Setup {
    client: Netns,
    _server: Netns,
    _procs: Vec<Process>,
    _dir: TempDir,
}

fn setup() -> Setup {
    let server = Netns::new("ds").unwrap();
    let client = Netns::new("dc").unwrap();
    server.veth_to(&client, "vs", "vc").unwrap();
    server.addr_add("vs", &format!("{SERVER}/24")).unwrap();
    client.addr_add("vc", "10.99.0.2/24").unwrap();
    let dir = TempDir::new("dn").unwrap();
    let names = dir.path().join("names");
    std::fs::write(
        &names,
        "web 10.128.0.9\n10.128.1.7 db.rack1.wow.internal\nmail.wow.internal. 10.128.0.25\n",
    )
    .unwrap();
    let bin = example_bin("dns-serve");
    let names = names.to_str().unwrap();
    let mut procs = Vec::new();
    for (port, max_udp) in [("53", "1232"), ("5300", "60")] {
        let listen = format!("{SERVER}:{port}");
        procs.push(
            server
                .spawn(
                    &bin,
                    &[
                        "--listen",
                        &listen,
                        "--zone",
                        "wow.internal",
                        "--network",
                        "10.128.0.0/9",
                        "--names",
                        names,
                        "--threads",
                        "1",
                        "--max-udp",
                        max_udp,
                    ],
                )
                .unwrap(),
        );
    }
    let s = Setup {
        client,
        _server: server,
        _procs: procs,
        _dir: dir,
    };
    for port in ["53", "5300"] {
        let up = wait_until(Duration::from_secs(15), || {
            s.dig(&["-p", port, "+tcp", "web.wow.internal", "A"])
                .contains("status: NOERROR")
        });
        assert!(up, "dns-serve on port {port} never answered");
    }
    s
}

impl Setup {
    fn dig(&self, args: &[&str]) -> String {
        let server = format!("@{SERVER}");
        let mut all = vec![server.as_str(), "+time=2", "+tries=2"];
        all.extend_from_slice(args);
        let out = self.client.run("dig", &all).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// dig's output, split into the fields we check.
#[derive(Debug, Default)]
struct Dig {
    opcode: String,
    status: String,
    id: u16,
    flags: Vec<String>,
    counts: [u16; 4],
    answer: Vec<Vec<String>>,
    authority: Vec<Vec<String>>,
    opt: Option<String>,
    question: Vec<String>,
    truncated_retry: bool,
}

fn parse_dig(text: &str) -> Dig {
    let mut d = Dig::default();
    let mut section = "";
    for line in text.lines() {
        if line.contains("Truncated, retrying in TCP mode") {
            d.truncated_retry = true;
        }
        if let Some(rest) = line.strip_prefix(";; ->>HEADER<<- ") {
            for field in rest.split(", ") {
                let (k, v) = field.split_once(": ").unwrap();
                match k {
                    "opcode" => d.opcode = v.to_string(),
                    "status" => d.status = v.to_string(),
                    "id" => d.id = v.parse().unwrap(),
                    _ => {}
                }
            }
            // A retried query prints a second header: keep the last one.
            d.answer.clear();
            d.authority.clear();
            d.opt = None;
            continue;
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            let (flags, counts) = rest.split_once("; ").unwrap();
            d.flags = flags.split_whitespace().map(str::to_string).collect();
            for (i, c) in counts.split(", ").enumerate() {
                d.counts[i] = c.split_once(": ").unwrap().1.parse().unwrap();
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("; EDNS: ") {
            d.opt = Some(rest.to_string());
            continue;
        }
        if line.starts_with(";; ") && line.ends_with("SECTION:") {
            section = line;
            continue;
        }
        if line.is_empty() {
            section = "";
            continue;
        }
        let fields: Vec<String> = line
            .trim_start_matches(';')
            .split_whitespace()
            .map(str::to_string)
            .collect();
        match section {
            ";; QUESTION SECTION:" => d.question = fields,
            ";; ANSWER SECTION:" => d.answer.push(fields),
            ";; AUTHORITY SECTION:" => d.authority.push(fields),
            _ => {}
        }
    }
    d
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn assert_soa(rr: &[String], owner: &str) {
    let rr = strs(rr);
    assert_eq!(rr[0], owner);
    assert_eq!(&rr[2..5], ["IN", "SOA", "ns.wow.internal."]);
    assert_eq!(rr[5], "hostmaster.wow.internal.");
    assert!(rr[6].parse::<u32>().unwrap() >= 1, "serial {}", rr[6]);
    assert_eq!(&rr[7..], ["3600", "600", "86400", "30"]);
}

#[test]
fn dig_checks_every_answer_kind() {
    if !require("dig_checks_every_answer_kind", &["dig"]) {
        return;
    }
    let s = setup();

    // A, case preserved, authoritative, ID echoed.
    let d = parse_dig(&s.dig(&["WeB.Wow.Internal", "A"]));
    assert_eq!((d.opcode.as_str(), d.status.as_str()), ("QUERY", "NOERROR"));
    assert_eq!(strs(&d.flags), ["qr", "aa", "rd"]);
    assert_eq!(d.counts, [1, 1, 0, 1]);
    assert_eq!(strs(&d.question), ["WeB.Wow.Internal.", "IN", "A"]);
    assert_eq!(
        strs(&d.answer[0]),
        ["WeB.Wow.Internal.", "60", "IN", "A", "10.128.0.9"]
    );
    let d = parse_dig(&s.dig(&["db.rack1.wow.internal", "A"]));
    assert_eq!(d.answer[0][4], "10.128.1.7");
    let d = parse_dig(&s.dig(&["c010200003004.wow.internal", "A"]));
    assert_eq!(d.answer[0][4], "10.200.3.4");

    // PTR: registered name, then rule name.
    let d = parse_dig(&s.dig(&["-x", "10.128.0.9"]));
    assert_eq!(d.status, "NOERROR");
    assert_eq!(
        strs(&d.answer[0]),
        [
            "9.0.128.10.in-addr.arpa.",
            "60",
            "IN",
            "PTR",
            "web.wow.internal."
        ]
    );
    let d = parse_dig(&s.dig(&["-x", "10.200.3.4"]));
    assert_eq!(d.answer[0][4], "c010200003004.wow.internal.");

    // SOA at the apex.
    let d = parse_dig(&s.dig(&["wow.internal", "SOA"]));
    assert_eq!(d.status, "NOERROR");
    assert_eq!(d.counts[1], 1);
    assert_soa(&d.answer[0], "wow.internal.");
    assert_eq!(d.answer[0][1], "60");

    // NXDOMAIN with the SOA in authority, TTL = MINIMUM.
    let d = parse_dig(&s.dig(&["nope.wow.internal", "A"]));
    assert_eq!(d.status, "NXDOMAIN");
    assert!(d.flags.iter().any(|f| f == "aa"));
    assert_eq!(d.counts, [1, 0, 1, 1]);
    assert_soa(&d.authority[0], "wow.internal.");
    assert_eq!(d.authority[0][1], "30");

    // NODATA: the name exists, AAAA does not.
    let d = parse_dig(&s.dig(&["web.wow.internal", "AAAA"]));
    assert_eq!(d.status, "NOERROR");
    assert_eq!(d.counts, [1, 0, 1, 1]);
    assert_soa(&d.authority[0], "wow.internal.");

    // REFUSED outside the zones, not authoritative.
    let d = parse_dig(&s.dig(&["example.com", "A"]));
    assert_eq!(d.status, "REFUSED");
    assert!(!d.flags.iter().any(|f| f == "aa"));
    assert_eq!(d.counts[1], 0);

    // EDNS: our payload size is advertised; none without EDNS; BADVERS.
    let d = parse_dig(&s.dig(&["+bufsize=4096", "web.wow.internal", "A"]));
    let opt = d.opt.expect("OPT pseudosection");
    assert!(opt.starts_with("version: 0"), "{opt}");
    assert!(opt.ends_with("udp: 1232"), "{opt}");
    let d = parse_dig(&s.dig(&["+noedns", "web.wow.internal", "A"]));
    assert_eq!(d.opt, None);
    assert_eq!(d.counts, [1, 1, 0, 0]);
    let d = parse_dig(&s.dig(&["+edns=1", "+noednsnegotiation", "web.wow.internal", "A"]));
    assert_eq!(d.status, "BADVERS");

    // TC over UDP, then dig's own retry over TCP gets the answer.
    let d = parse_dig(&s.dig(&["-p", "5300", "+ignore", "web.wow.internal", "A"]));
    assert!(d.flags.iter().any(|f| f == "tc"), "{:?}", d.flags);
    assert_eq!(d.counts[1], 0);
    let d = parse_dig(&s.dig(&["-p", "5300", "web.wow.internal", "A"]));
    assert!(d.truncated_retry);
    assert!(!d.flags.iter().any(|f| f == "tc"));
    assert_eq!(
        strs(&d.answer[0]),
        ["web.wow.internal.", "60", "IN", "A", "10.128.0.9"]
    );
    // Straight over TCP, several queries on one connection.
    let out = s.dig(&[
        "+tcp",
        "+keepopen",
        "web.wow.internal",
        "A",
        "mail.wow.internal",
        "A",
    ]);
    assert!(
        out.contains("10.128.0.9") && out.contains("10.128.0.25"),
        "{out}"
    );
}

#[test]
fn glibc_resolves_through_resolv_conf() {
    if !require("glibc_resolves_through_resolv_conf", &["getent", "dig"]) {
        return;
    }
    let s = setup();
    s.client
        .set_resolv_conf(&format!(
            "nameserver {SERVER}\nsearch wow.internal\noptions timeout:2 attempts:2\n"
        ))
        .unwrap();
    let out = s
        .client
        .run_ok("getent", &["hosts", "web.wow.internal"])
        .unwrap();
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields, ["10.128.0.9", "web.wow.internal"], "{out}");
    // Through the search list.
    let out = s.client.run_ok("getent", &["hosts", "mail"]).unwrap();
    assert_eq!(out.split_whitespace().next(), Some("10.128.0.25"), "{out}");
    // Reverse, through PTR.
    let out = s.client.run_ok("getent", &["hosts", "10.128.1.7"]).unwrap();
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields, ["10.128.1.7", "db.rack1.wow.internal"], "{out}");
    // Unknown names fail.
    let missing = s
        .client
        .run("getent", &["hosts", "nope.wow.internal"])
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

/// dnsperf (one socket, 100 queries outstanding) gets batches of answers,
/// equal-size ones sent as one UDP GSO message: every query is answered
/// exactly once, with the right response code, in the file's proportions.
#[test]
fn dnsperf_gets_every_batched_answer() {
    if !require("dnsperf_gets_every_batched_answer", &["dnsperf", "dig"]) {
        return;
    }
    let s = setup();
    let dir = TempDir::new("dp").unwrap();
    let queries = dir.path().join("queries");
    // Per cycle of 10: 6 NOERROR with an A (two sizes), 1 NOERROR NODATA,
    // 2 NXDOMAIN, 1 REFUSED.
    std::fs::write(
        &queries,
        "web.wow.internal A\nmail.wow.internal A\nWEB.wow.internal A\n\
         db.rack1.wow.internal A\nweb.wow.internal A\nc010128000005.wow.internal A\n\
         web.wow.internal AAAA\nnope.wow.internal A\nnope2.wow.internal A\nexample.com A\n",
    )
    .unwrap();
    let out = s
        .client
        .run_ok(
            "dnsperf",
            &[
                "-s",
                SERVER,
                "-d",
                queries.to_str().unwrap(),
                "-l",
                "2",
                "-c",
                "1",
            ],
        )
        .unwrap();
    let field = |key: &str| -> u64 {
        let line = out.lines().find(|l| l.contains(key)).unwrap_or("");
        let rest = line.split(key).nth(1).unwrap_or("");
        rest.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in\n{out}"))
    };
    let sent = field("Queries sent:");
    let completed = field("Queries completed:");
    assert!(sent > 1000, "{out}");
    assert_eq!(completed, sent, "{out}");
    assert_eq!(field("Queries lost:"), 0, "{out}");
    // dnsperf sends the file in order, over and over.
    let near = |got: u64, per_ten: u64| got.abs_diff(sent * per_ten / 10) <= 10;
    assert!(near(field("NOERROR"), 7), "{out}");
    assert!(near(field("NXDOMAIN"), 2), "{out}");
    assert!(near(field("REFUSED"), 1), "{out}");
}

/// `benches/vs-dnsmasq.sh` in its short mode (10,000 names, 1 s of dnsperf)
/// against this build's dns-serve: both servers answer and the table of
/// ratios, with answers per server CPU-second, comes out.
#[test]
fn bench_script_short_mode_measures_both_servers() {
    if !require(
        "bench_script_short_mode_measures_both_servers",
        &["dnsmasq", "dnsperf", "dig"],
    ) {
        return;
    }
    let dir = TempDir::new("vs").unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/vs-dnsmasq.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .env("SHORT", "1")
        .env("DUR", "1")
        .env("DNS_SERVE", example_bin("dns-serve"))
        .env("RESULTS_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("answers per server CPU-second"))
        .unwrap_or_else(|| panic!("no ratio table:\n{stdout}\n{stderr}"));
    let numbers: Vec<f64> = row
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches('x').parse().ok())
        .collect();
    assert_eq!(numbers.len(), 3, "{row}");
    assert!(numbers.iter().all(|n| *n > 0.0), "{row}");
    for server in ["\tdnsmasq\t", "\tdns-serve\t"] {
        let line = stdout.lines().find(|l| l.contains(server)).unwrap();
        assert!(line.contains("lost=0 "), "{line}");
    }
}
