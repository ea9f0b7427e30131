//! `wow-node appliance …`: the stacked file systems on overlayfs, run as
//! root inside private mount namespaces (`unshare -m`), so nothing stays
//! mounted on the host. Each script runs the real binary; the layers are
//! checked on disk after the namespace is gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use wow_test_hosts::{TempDir, is_root, skip, tool_available};

const BIN: &str = env!("CARGO_BIN_EXE_wow-node");

/// A scratch directory with a base tree and a state directory.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new(test: &str) -> Option<Self> {
        if !is_root() {
            skip(test, "needs root for overlay mounts");
            return None;
        }
        if !tool_available("unshare") {
            skip(test, "`unshare` (util-linux) is not installed");
            return None;
        }
        let dir = TempDir::new("appl").unwrap();
        let f = Fixture { dir };
        f.write("base/etc/hostname", "base\n");
        f.write("base/etc/motd", "base motd\n");
        f.write("base/var/lib/data/a", "a\n");
        f.write("base/usr/bin/tool", "v1\n");
        fs::create_dir_all(f.path("mnt")).unwrap();
        f.ok(&["init", "--base", "base", "--dir", "state"]);
        Some(f)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, contents: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// `wow-node appliance ARGS` in the scratch directory (no namespace).
    fn appliance(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("appliance")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.appliance(args);
        assert!(out.status.success(), "appliance {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `status --json`, parsed.
    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--dir", "state", "--json"])).unwrap()
    }

    /// Runs a bash script in a private mount namespace, `$W` standing for
    /// `wow-node appliance`; panics unless it succeeds; returns its output.
    fn ns(&self, script: &str) -> String {
        let out = Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "bash",
                "-euo",
                "pipefail",
                "-c",
            ])
            .arg(format!("W() {{ {BIN} appliance \"$@\"; }}\n{script}"))
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        let text = text(&out);
        assert!(
            out.status.success(),
            "script failed:\n{script}\n---\n{text}"
        );
        text
    }

    /// A fixture whose module layer was developed ([`Self::develop_module`]).
    fn developed(test: &str) -> Option<Self> {
        let f = Fixture::new(test)?;
        f.develop_module();
        Some(f)
    }

    /// Develops: writes a config file, deletes a base file (whiteout),
    /// replaces a base directory (opaque), then unmounts.
    fn develop_module(&self) {
        self.ns("W develop --dir state --mount mnt
             echo dev > mnt/etc/app.conf
             rm mnt/etc/motd
             rm -r mnt/var/lib/data && mkdir mnt/var/lib/data && echo b > mnt/var/lib/data/b
             mkdir -p mnt/var/log && echo noise > mnt/var/log/app.log
             W umount --dir state");
    }
}

/// Standard output then standard error.
fn text(out: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

fn is_whiteout(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

#[test]
fn develop_writes_to_module_release_to_home_and_reset_home_keeps_module() {
    let Some(f) = Fixture::developed("develop_release") else {
        return;
    };
    // Develop's writes landed in the module layer, the base is untouched.
    assert_eq!(f.read("state/module/etc/app.conf"), "dev\n");
    assert!(is_whiteout(&f.path("state/module/etc/motd")));
    assert_eq!(f.read("base/etc/motd"), "base motd\n");
    assert!(f.path("base/var/lib/data/a").exists());
    assert!(!f.path("state/home/etc").exists());

    f.ok(&["publish", "--dir", "state", "--out", "web.wowm"]);
    let out = f.ns("W release --dir state --module web.wowm --mount mnt
         cat mnt/etc/app.conf mnt/etc/hostname
         test ! -e mnt/etc/motd && echo motd-gone
         ls mnt/var/lib/data
         echo user > mnt/user-file
         echo changed > mnt/etc/app.conf
         W status --dir state
         W umount --dir state");
    assert!(out.contains("dev\nbase\n"), "{out}");
    // The whiteout and the opaque directory survived publish and release.
    assert!(out.contains("motd-gone"), "{out}");
    assert!(out.contains("\nb\n") && !out.contains("\na\n"), "{out}");
    assert!(out.contains("mode:    release"), "{out}");
    // Release's writes landed in home; the module layer is unchanged.
    assert_eq!(f.read("state/home/user-file"), "user\n");
    assert_eq!(f.read("state/home/etc/app.conf"), "changed\n");
    assert_eq!(f.read("state/module/etc/app.conf"), "dev\n");

    let out = f.ns("W release --dir state --module web.wowm --mount mnt
         cat mnt/user-file
         W reset-home --dir state
         test ! -e mnt/user-file && echo user-file-gone
         cat mnt/etc/app.conf
         W umount --dir state");
    assert!(
        out.contains("user\n"),
        "home survived a second release: {out}"
    );
    assert!(out.contains("user-file-gone\ndev\n"), "{out}");
    assert!(!f.path("state/home/user-file").exists());
    assert_eq!(f.read("state/module/etc/app.conf"), "dev\n");

    let status = f.status();
    assert_eq!(status["mode"], "release");
    assert_eq!(status["module"]["whiteouts"], 1);
    assert_eq!(status["home"]["files"], 0);
    assert_eq!(status["installed_module"]["name"], "web");
}

#[test]
fn update_base_and_replace_module_keep_the_other_layers() {
    let Some(f) = Fixture::developed("update_base") else {
        return;
    };
    f.ok(&["publish", "--dir", "state", "--out", "v1.wowm"]);
    f.ns("W develop --dir state --mount mnt
         echo extra > mnt/etc/extra.conf
         W umount --dir state");
    f.ok(&["publish", "--dir", "state", "--out", "v2.wowm"]);
    // A new base: a new file, a changed one, and the deleted file back.
    f.write("base2/etc/hostname", "base2\n");
    f.write("base2/etc/motd", "motd2\n");
    f.write("base2/etc/new-in-base", "new\n");
    f.write("base2/usr/bin/tool", "v2\n");

    let out = f.ns("W release --dir state --module v1.wowm --mount mnt
         echo user > mnt/user-file
         test ! -e mnt/etc/extra.conf && echo no-extra
         W update-base --dir state base2
         cat mnt/etc/new-in-base mnt/usr/bin/tool mnt/user-file mnt/etc/app.conf
         test ! -e mnt/etc/motd && echo motd-still-gone
         W replace-module --dir state v2.wowm
         cat mnt/etc/extra.conf mnt/user-file mnt/etc/new-in-base
         W umount --dir state");
    assert!(out.contains("no-extra"), "{out}");
    assert!(out.contains("new\nv2\nuser\ndev\n"), "{out}");
    assert!(out.contains("motd-still-gone"), "{out}");
    assert!(out.contains("extra\nuser\nnew\n"), "{out}");
    let status = f.status();
    assert!(status["base"]["path"].as_str().unwrap().ends_with("base2"));
    assert_eq!(status["installed_module"]["name"], "v2");
}

#[test]
fn clean_removes_the_listed_files_and_shows_them() {
    let Some(f) = Fixture::developed("clean") else {
        return;
    };
    for rel in [
        "var/log/apt/history.log",
        "etc/ssh/ssh_host_ed25519_key",
        "etc/machine-id",
        "root/.bash_history",
        "var/lib/dhcp/dhclient.eth0.leases",
        "var/lib/wow-node/node.key",
        "var/cache/apt/pkgcache.bin",
        "etc/ssh/sshd_config",
    ] {
        f.write(&format!("state/module/{rel}"), "x");
    }
    let dry = f.ok(&["clean", "--dir", "state", "--dry-run"]);
    assert!(dry.contains("would remove 8 file(s)"), "{dry}");
    assert!(f.path("state/module/etc/machine-id").exists());

    let out = f.ok(&["clean", "--dir", "state", "--keep", "var/cache/**"]);
    for gone in [
        "var/log/app.log",
        "var/log/apt/history.log",
        "etc/ssh/ssh_host_ed25519_key",
        "etc/machine-id",
        "root/.bash_history",
        "var/lib/dhcp/dhclient.eth0.leases",
        "var/lib/wow-node/node.key",
    ] {
        assert!(out.contains(&format!("removed {gone}\n")), "{gone}: {out}");
        assert!(!f.path(&format!("state/module/{gone}")).exists(), "{gone}");
    }
    assert!(out.contains("removed 7 file(s)"), "{out}");
    for kept in [
        "etc/ssh/sshd_config",
        "etc/app.conf",
        "var/cache/apt/pkgcache.bin",
    ] {
        assert!(f.path(&format!("state/module/{kept}")).exists(), "{kept}");
    }
    // Whiteouts and directories stay.
    assert!(is_whiteout(&f.path("state/module/etc/motd")));
    assert!(f.path("state/module/var/log").is_dir());

    // A list of one's own replaces the default.
    f.write("list", "# only this\netc/app.conf\n");
    let out = f.ok(&["clean", "--dir", "state", "--list", "list"]);
    assert!(
        out.contains("removed etc/app.conf\nremoved 1 file(s)"),
        "{out}"
    );
    assert!(f.path("state/module/var/cache/apt/pkgcache.bin").exists());
}

/// A module signed by a trusted key; returns the fixture and the key's
/// public half.
fn signed_fixture(test: &str) -> Option<(Fixture, String)> {
    let f = Fixture::developed(test)?;
    let public = f.ok(&["keygen", "--out", "module.key"]).trim().to_owned();
    let mode = fs::metadata(f.path("module.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    f.ok(&["trust", "--dir", "state", "module.key.pub"]);
    f.ok(&[
        "publish",
        "--dir",
        "state",
        "--out",
        "web.wowm",
        "--key",
        "module.key",
    ]);
    Some((f, public))
}

/// Runs `release` in a namespace expecting a refusal; returns stderr and
/// checks nothing was mounted or installed.
fn refused_release(f: &Fixture, module: &str) -> String {
    let before = fs::read(f.path("state/appliance.json")).unwrap();
    let out = f.ns(&format!(
        "if W release --dir state --module {module} --mount mnt; then echo ACCEPTED; else echo \"status $?\"; fi
         mountpoint -q mnt && echo MOUNTED || true"
    ));
    assert!(
        !out.contains("ACCEPTED") && !out.contains("MOUNTED"),
        "{out}"
    );
    assert!(out.contains("status 3"), "{out}");
    assert_eq!(fs::read(f.path("state/appliance.json")).unwrap(), before);
    // The develop tree is still the module layer: nothing was swapped in.
    assert!(f.path("state/module/var/log/app.log").exists());
    out
}

#[test]
fn signed_module_is_released_and_trusted() {
    let Some((f, public)) = signed_fixture("signed_release") else {
        return;
    };
    let out = f.ns("W release --dir state --module web.wowm --mount mnt
         cat mnt/etc/app.conf
         W umount --dir state");
    assert!(out.contains("dev\n"), "{out}");
    let status = f.status();
    assert_eq!(status["installed_module"]["signed_by"], public.as_str());
    assert_eq!(status["installed_module"]["trusted"], true);
}

#[test]
fn attack_tampered_module_is_refused() {
    let Some((f, _)) = signed_fixture("attack_tampered") else {
        return;
    };
    let bytes = fs::read(f.path("web.wowm")).unwrap();
    let find = |needle: &[u8]| {
        bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    // A changed file in the payload: the digest no longer matches.
    let mut payload = bytes.clone();
    let at = find(b"dev\n");
    payload[at] = b'x';
    fs::write(f.path("payload.wowm"), &payload).unwrap();
    let out = refused_release(&f, "payload.wowm");
    assert!(out.contains("SHA-256"), "{out}");
    // A changed manifest (its name): the signature no longer verifies.
    let mut manifest = bytes.clone();
    let at = find(b"\"name\": \"web\"");
    manifest[at + 9] = b'W';
    fs::write(f.path("manifest.wowm"), &manifest).unwrap();
    let out = refused_release(&f, "manifest.wowm");
    assert!(out.contains("bad signature"), "{out}");
}

#[test]
fn attack_module_signed_by_unknown_key_is_refused() {
    let Some((f, _)) = signed_fixture("attack_unknown_key") else {
        return;
    };
    f.ok(&["keygen", "--out", "other.key"]);
    f.ok(&[
        "publish",
        "--dir",
        "state",
        "--out",
        "other.wowm",
        "--key",
        "other.key",
    ]);
    let out = refused_release(&f, "other.wowm");
    assert!(out.contains("unknown key"), "{out}");
}

#[test]
fn attack_unsigned_module_is_refused_when_keys_are_configured() {
    let Some((f, _)) = signed_fixture("attack_unsigned") else {
        return;
    };
    f.ok(&["publish", "--dir", "state", "--out", "unsigned.wowm"]);
    let out = refused_release(&f, "unsigned.wowm");
    assert!(out.contains("not signed"), "{out}");
    // replace-module refuses it too, and keeps the installed module.
    let out = f.ns("W release --dir state --module web.wowm --mount mnt
         if W replace-module --dir state unsigned.wowm; then echo ACCEPTED; fi
         cat mnt/etc/app.conf
         W umount --dir state");
    assert!(
        !out.contains("ACCEPTED") && out.contains("not signed"),
        "{out}"
    );
}

#[test]
fn without_root_mounting_says_so() {
    if !is_root() || !tool_available("setpriv") {
        skip("without_root", "needs root (to drop it) and setpriv");
        return;
    }
    let dir = TempDir::new("applnr").unwrap();
    fs::create_dir_all(dir.path().join("base")).unwrap();
    fs::create_dir_all(dir.path().join("mnt")).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let run = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                BIN,
                "appliance",
            ])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let init = run(&["init", "--base", "base", "--dir", "state"]);
    assert!(init.status.success(), "{init:?}");
    let out = run(&["develop", "--dir", "state", "--mount", "mnt"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs root"),
        "{out:?}"
    );
}

#[test]
fn readme_lists_the_default_clean_patterns() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for pattern in wow_node::appliance::manifest::DEFAULT_CLEAN_LIST {
        assert!(
            readme.contains(&format!("`{pattern}`")),
            "README's clean table lacks {pattern}"
        );
    }
}

#[test]
fn image_base_is_loop_mounted_and_can_replace_a_directory_base() {
    if !tool_available("mksquashfs") {
        skip(
            "image_base",
            "`mksquashfs` (squashfs-tools) is not installed",
        );
        return;
    }
    let Some(f) = Fixture::developed("image_base") else {
        return;
    };
    f.write("base2/etc/hostname", "image\n");
    f.write("base2/etc/motd", "motd2\n");
    let out = Command::new("mksquashfs")
        .args(["base2", "base2.sqfs", "-quiet", "-noappend"])
        .current_dir(f.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    f.ok(&["publish", "--dir", "state", "--out", "web.wowm"]);
    let out = f.ns("W release --dir state --module web.wowm --mount mnt
         echo user > mnt/user-file
         W update-base --dir state base2.sqfs
         cat mnt/etc/hostname mnt/etc/app.conf mnt/user-file
         test ! -e mnt/etc/motd && echo motd-still-gone
         mountpoint -q state/base.mnt && echo image-mounted
         W umount --dir state
         mountpoint -q state/base.mnt || echo image-unmounted");
    assert!(out.contains("image\ndev\nuser\n"), "{out}");
    assert!(out.contains("motd-still-gone"), "{out}");
    assert!(
        out.contains("image-mounted") && out.contains("image-unmounted"),
        "{out}"
    );
    assert_eq!(f.status()["base"]["kind"], "image");
}

#[test]
fn attack_publish_refuses_a_key_file_others_can_read() {
    let Some((f, _)) = signed_fixture("key_perms") else {
        return;
    };
    fs::set_permissions(f.path("module.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let out = f.appliance(&[
        "publish",
        "--dir",
        "state",
        "--out",
        "x.wowm",
        "--key",
        "module.key",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("readable by others"), "{}", text(&out));
    assert!(!f.path("x.wowm").exists());
}
