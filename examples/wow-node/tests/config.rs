//! The node's configuration file: defaults, the documented example, the
//! README's reference, secrets and unknown keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use wow_node::config::{AllocationMode, Config, ConfigError};

/// The example in the module docs, verbatim.
fn documented_example() -> Config {
    let doc = include_str!("../src/config.rs");
    let start = doc.find("//! ```toml").unwrap();
    let end = doc[start + 10..].find("//! ```").unwrap() + start + 10;
    let text: String = doc[start..end]
        .lines()
        .skip(1)
        .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
        .collect::<Vec<_>>()
        .join("\n");
    toml::from_str(&text).unwrap()
}

#[test]
fn empty_file_is_all_defaults() {
    let c: Config = toml::from_str("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.network.gateway_addr(), Ipv4Addr::new(10, 128, 0, 1));
}

#[test]
fn documented_example_parses() {
    let c = documented_example();
    assert_eq!(c.node.bootstrap, vec!["192.0.2.1:4000".parse().unwrap()]);
    assert_eq!(c.network.allocation, AllocationMode::Dht);
    assert_eq!(c.confine.allow_tcp_ports, vec![22]);
    assert_eq!(c.tap.underlay_mtu, 1500);
    assert_eq!(c.service.len(), 1);
    let (name, service) = c.service[0].registration().unwrap();
    assert_eq!((name.as_str(), service.port), ("_slurmctld._tcp", 6817));
}

#[test]
fn bad_services_are_refused() {
    let c: Config = toml::from_str("[[service]]\nname = \"slurmctld\"\nport = 1\n").unwrap();
    assert!(c.service[0].registration().is_err());
    let c: Config =
        toml::from_str("[[service]]\nname = \"_a._tcp\"\ntxt = [\"x\"]\nport = 1\n").unwrap();
    assert_eq!(c.service[0].registration().unwrap().1.txt, [b"x".to_vec()]);
    assert!(toml::from_str::<Config>("[[service]]\nname = \"_a._tcp\"\nhost = \"x\"\n").is_err());
}

#[test]
fn readme_reference_parses_to_the_same_configuration() {
    let readme = include_str!("../README.md");
    let start = readme.find("```toml\n[node]").unwrap() + "```toml\n".len();
    let end = readme[start..].find("```").unwrap() + start;
    let from_readme: Config = toml::from_str(&readme[start..end]).unwrap();
    let from_docs = documented_example();
    assert_eq!(from_readme, from_docs);
}

#[test]
fn a_config_with_secrets_must_not_be_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = wow_test_hosts::TempDir::new("cfgmode").unwrap();
    let path = dir.path().join("node.toml");
    let set = |text: &str, mode: u32| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let secret = "[turn]\nserver = \"192.0.2.1:3478\"\npassword = \"s\"\n";
    set(secret, 0o644);
    let e = Config::load_private(&path).unwrap_err();
    assert!(e.to_string().contains("turn.password"), "{e}");
    set(secret, 0o640);
    assert!(Config::load_private(&path).is_ok());
    // A join token is a credential too.
    set("[security]\njoin_token = \"wowjoin1.x\"\n", 0o644);
    let e = Config::load_private(&path).unwrap_err();
    assert!(e.to_string().contains("security.join_token"), "{e}");
    // Without secrets, world-readable is fine; world-writable never is.
    set("", 0o644);
    assert!(Config::load_private(&path).is_ok());
    set("", 0o646);
    assert!(matches!(
        Config::load_private(&path),
        Err(ConfigError::Exposed { .. })
    ));
}

#[test]
fn unknown_keys_are_refused() {
    assert!(toml::from_str::<Config>("[node]\nlisten_port = 1\n").is_err());
}

#[test]
fn ca_groups_are_checked() {
    let c = documented_example();
    let groups = c.ca.policy_groups().unwrap();
    let admin = groups.get(&Ipv4Addr::new(10, 128, 0, 10)).unwrap();
    assert!(admin.contains("admin"));
    let bad: Config = toml::from_str("[ca.groups]\n\"10.128.0.9\" = [\"Not Valid\"]\n").unwrap();
    let e = bad.ca.policy_groups().unwrap_err();
    assert!(e.contains("10.128.0.9"), "{e}");
}

#[test]
fn firewall_rules_are_checked() {
    let c = documented_example();
    let rules = c.firewall.rules().unwrap();
    assert_eq!(rules.inbound.len(), 2);
    assert!(rules.outbound.is_empty());
    assert!(rules.inbound[1].groups.contains("admin"));
    let text = "[[firewall.outbound]]\nproto = \"udp\"\nport = \"53-54\"\n\
                [[firewall.outbound]]\nproto = \"icmp\"\nport = 7\n";
    let bad: Config = toml::from_str(text).unwrap();
    let e = bad.firewall.rules().unwrap_err();
    assert!(e.contains("[[firewall.outbound]] #2"), "{e}");
    assert!(toml::from_str::<Config>("[[firewall.inbound]]\nports = 1\n").is_err());
}
