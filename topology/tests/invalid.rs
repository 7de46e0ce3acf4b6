//! Invalid topology files, one per rule: `tests/invalid/NAME.toml` must be refused with
//! exactly the lines in `tests/invalid/NAME.expected` (file, line, resource, field).
//! After a deliberate change to messages, `NANOVNF_BLESS=1 cargo test -p nanovnf-topology`
//! rewrites the expected files; review the diff.

use std::path::{Path, PathBuf};

use nanovnf_topology::{ResourceKind, parse};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid")
}

/// Refusal of `NAME.toml`, displayed, as the manager would print it.
fn refusal(name: &str) -> (String, nanovnf_topology::Errors) {
    let file = format!("{name}.toml");
    let text = std::fs::read_to_string(dir().join(&file)).unwrap();
    match parse(&text, &file, &dir(), "salt") {
        Ok(t) => panic!("{file} was accepted: {t:#?}"),
        Err(e) => (e.to_string(), e),
    }
}

fn check(name: &str) -> nanovnf_topology::Errors {
    let (shown, errors) = refusal(name);
    let expected_path = dir().join(format!("{name}.expected"));
    if std::env::var_os("NANOVNF_BLESS").is_some() {
        std::fs::write(&expected_path, format!("{shown}\n")).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap();
    assert_eq!(shown, expected.trim_end(), "{name}.toml");
    errors
}

macro_rules! invalid {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*
    };
}

invalid!(
    syntax_error,
    unknown_key,
    unknown_table,
    wrong_type,
    missing_field,
    malformed_mac,
    malformed_ip,
    malformed_cidr,
    duplicate_name,
    unknown_reference,
    gateway_outside_cidr,
    fixed_ip_outside_subnet,
    pool_outside_and_reversed,
    host_route_nexthop_outside,
    router_gateway_ip_outside,
    floating_ip_outside_subnet,
    address_used_twice,
    overlapping_subnets,
    vlan_id_out_of_range,
    vni_out_of_range_and_duplicate,
    mtu_out_of_range,
    tap_name_invalid,
    floating_ip_without_router,
    vxlan_without_underlay,
    vxlan_remote_ports,
    external_gateway_not_external,
    pool_too_small,
    pool_exhausted_by_ports,
    multicast_mac,
    duplicate_mac,
    interface_without_gateway,
    router_interface_conflicts,
    user_data_file_missing,
    segment_keys,
    flat_physnet_twice,
    dns_settings,
    dns_upstream_resolvers,
    dns_malformed_resolver,
    dns_unknown_key,
    duplicate_hostname,
    host_interfaces,
    vteps_and_vlans,
    instance_rules,
    floating_ip_binding,
    table_shapes,
    router_overlaps,
);

#[test]
fn every_expected_file_has_a_test() {
    let listed = include_str!("invalid.rs");
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                listed.contains(&format!("    {stem},")) || stem == "many_problems",
                "{stem} has no test"
            );
        }
    }
}

#[test]
fn the_example_message_of_topology_md() {
    let errors = check("gateway_outside_cidr");
    let p = &errors.problems()[0];
    assert_eq!(p.line, Some(8));
    assert_eq!(p.resource_kind, Some(ResourceKind::Subnet));
    assert_eq!(p.resource_name.as_deref(), Some("demo-subnet"));
    assert_eq!(
        p.message,
        "gateway_ip 10.0.0.1 is outside cidr 192.168.1.0/24"
    );
}

#[test]
fn all_problems_are_reported_not_just_the_first() {
    let errors = check("many_problems");
    // Serde problems (unknown key in subnet "s") do not hide the semantic ones elsewhere.
    let lines: Vec<Option<usize>> = errors.iter().map(|p| p.line).collect();
    assert!(errors.len() >= 7, "{errors}");
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "problems come in line order");
    for needle in [
        "mtu 10",
        "already used by the network",
        "bogus",
        "gateway_ip 10.0.0.1",
        "network \"nope\"",
        "mac_address",
        "tap",
        "not external",
    ] {
        assert!(
            errors.to_string().contains(needle),
            "missing {needle:?} in\n{errors}"
        );
    }
}

#[test]
fn user_data_is_capped_at_64_kib() {
    let big = "x".repeat(64 * 1024 + 1);
    let text = format!(
        "[[network]]\nname = \"n\"\n\n[[port]]\nname = \"p\"\nnetwork = \"n\"\n[port.instance]\nuser_data = \"{big}\"\n"
    );
    let errors = parse(&text, "t.toml", &dir(), "salt").unwrap_err();
    assert_eq!(
        errors.to_string(),
        "t.toml:8: port \"p\": instance.user_data is 65537 bytes, at most 65536 are allowed"
    );
    let fits = text.replace(&big, &big[1..]);
    assert!(parse(&fits, "t.toml", &dir(), "salt").is_ok());
}

#[test]
fn unreadable_file_names_the_file() {
    let e = nanovnf_topology::load(&dir().join("no-such-file.toml"), "salt").unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e.problems()[0].line, None);
    assert!(
        e.to_string()
            .contains("no-such-file.toml: cannot read the topology file")
    );
}
