//! Shared by the namespace tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// Writes a minimal udhcpc hook script into `dir`; its path.
///
/// udhcpc logs "lease of A obtained" before it runs the hook, so a test
/// that sees that line (or the address on the interface) may look while
/// the hook is still applying the MTU and route. The hook prints
/// `udhcpc hook: EVENT A applied` (on udhcpc's output) once it has done
/// everything: wait for that line, see [`hook_applied`].
pub fn udhcpc_script(dir: &Path) -> String {
    let path = dir.join("udhcpc.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         # Minimal udhcpc hook: apply the address, router and MTU with ip.\n\
         case \"$1\" in\n\
         deconfig) ip -4 addr flush dev \"$interface\"; ip link set \"$interface\" up ;;\n\
         bound|renew)\n\
           # Flush only when the address changes: a flush also empties the\n\
           # ARP cache, and a RELEASE sent later would race the next flush.\n\
           ip -4 addr show dev \"$interface\" | grep -q \" $ip/\" ||\n\
             ip -4 addr flush dev \"$interface\"\n\
           ip addr replace \"$ip/${mask:-24}\" dev \"$interface\"\n\
           [ -n \"$mtu\" ] && ip link set dev \"$interface\" mtu \"$mtu\"\n\
           [ -n \"$router\" ] && ip route replace default via \"${router%% *}\" dev \"$interface\"\n\
           ;;\n\
         esac\n\
         echo \"udhcpc hook: $1 ${ip:-} applied\"\n\
         exit 0\n",
    )
    .unwrap();
    let _ = std::process::Command::new("chmod")
        .args(["755", path.to_str().unwrap()])
        .status();
    path.to_str().unwrap().to_string()
}

/// The line the hook of [`udhcpc_script`] prints once it has applied
/// `event` (`bound`, `renew`, `deconfig`) for `addr` (empty for
/// `deconfig`).
pub fn hook_applied(event: &str, addr: &str) -> String {
    format!("udhcpc hook: {event} {addr} applied")
}
