//! What a machine looks like from the outside, to prove that something left nothing behind:
//! processes, mounts, network namespaces, links, routes, firewall rules, cgroups and kernel
//! tunables, as the host's namespaces see them.

use std::{collections::BTreeSet, path::Path, process::Command};

/// One look at the machine. Two snapshots [`diff`](HostSnapshot::diff) to what appeared and what
/// vanished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    sections: Vec<(&'static str, BTreeSet<String>)>,
}

impl HostSnapshot {
    /// Takes the snapshot. Processes of `ignore_pids` (the test itself) are left out.
    pub fn take(ignore_pids: &[u32]) -> Self {
        let sections = vec![
            ("process", processes(ignore_pids)),
            ("mount", lines_of_file("/proc/self/mountinfo", mount_point)),
            ("network namespace", network_namespaces()),
            ("link", command_lines("ip", &["-o", "link", "show"], |l| link_name(&l))),
            ("route", command_lines("ip", &["route", "show", "table", "all"], Some)),
            (
                "ipv6 route",
                command_lines("ip", &["-6", "route", "show", "table", "all"], |l| {
                    // Kernel-managed multicast and link-local routes come and go with interfaces' state.
                    (!l.starts_with("multicast") && !l.starts_with("fe80")).then_some(l)
                }),
            ),
            ("iptables rule", command_lines("iptables-save", &[], |l| (!l.starts_with('#')).then_some(l))),
            ("nft table", command_lines("nft", &["list", "tables"], Some)),
            ("cgroup", cgroups()),
            ("sysctl", sysctls()),
        ];
        Self { sections }
    }

    /// What `after` has that `self` has not (`+`), and the reverse (`-`), one line each.
    pub fn diff(&self, after: &Self) -> Vec<String> {
        let mut out = Vec::new();
        for ((name, before), (_, now)) in self.sections.iter().zip(&after.sections) {
            out.extend(now.difference(before).map(|l| format!("+ {name}: {l}")));
            out.extend(before.difference(now).map(|l| format!("- {name}: {l}")));
        }
        out
    }
}

/// The programs a cluster runs; a process of one of them, or in one of its cgroups, is a cluster's.
const CLUSTER_PROGRAMS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "coredns",
    "pause",
    "unshare",
    "nsenter",
];

/// The processes that could be a cluster's: in an `ftgo-node-*` cgroup, or running one of its
/// programs. Other processes on the machine come and go for their own reasons (a shell, a build),
/// and are no trace of ours.
fn processes(ignore: &[u32]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if ignore.contains(&pid) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        // Kernel threads have no command line.
        if cmdline.is_empty() {
            continue;
        }
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let program = cmdline.split_whitespace().next().unwrap_or_default().rsplit('/').next().unwrap_or_default();
        let cgroups = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cgroups.contains("ftgo-node-") || CLUSTER_PROGRAMS.contains(&program) {
            out.insert(format!("{pid} {}", cmdline.trim()));
        }
    }
    out
}

fn mount_point(line: &str) -> Option<String> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    Some(format!("{} {}", fields.get(4)?, fields.get(sep + 1)?))
}

fn link_name(line: &str) -> Option<String> {
    // "3: eth0@if4: <...> ..." — the name and flags, not counters.
    let mut parts = line.split_whitespace();
    let _index = parts.next()?;
    Some(parts.next()?.trim_end_matches(':').to_owned())
}

fn network_namespaces() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(target) = std::fs::read_link(entry.path().join("ns/net")) {
            out.insert(target.to_string_lossy().into_owned());
        }
    }
    for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        out.insert(format!("/run/netns/{}", entry.file_name().to_string_lossy()));
    }
    out
}

fn cgroups() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        for group in std::fs::read_dir(hierarchy.path()).into_iter().flatten().flatten() {
            if group.file_type().is_ok_and(|t| t.is_dir()) {
                out.insert(group.path().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Every tunable under `/proc/sys` but those that change by themselves (counters, random
/// values, the next free pid).
fn sysctls() -> BTreeSet<String> {
    const VOLATILE: &[&str] = &[
        "kernel/random/",
        "kernel/ns_last_pid",
        "kernel/pty/nr",
        "fs/dentry-state",
        "fs/file-nr",
        "fs/inode-",
        "fs/quota/",
        "net/netfilter/nf_conntrack_count",
        "kernel/tainted",
        "vm/stat_refresh",
        "kernel/sched_domain/",
        "fs/binfmt_misc/",
        "net/ipv6/conf/",
        "net/ipv4/conf/",
        "net/ipv4/neigh/",
        "net/ipv6/neigh/",
    ];
    let mut out = BTreeSet::new();
    let mut stack = vec![Path::new("/proc/sys").to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let key = path.strip_prefix("/proc/sys").unwrap_or(&path).to_string_lossy().into_owned();
            if VOLATILE.iter().any(|v| key.starts_with(v)) {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) => {
                    if let Ok(value) = std::fs::read_to_string(&path) {
                        out.insert(format!("{key} = {}", value.split_whitespace().collect::<Vec<_>>().join(" ")));
                    }
                }
                Err(_) => {}
            }
        }
    }
    out
}

fn lines_of_file(path: &str, keep: impl Fn(&str) -> Option<String>) -> BTreeSet<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(keep).collect()
}

fn command_lines(program: &str, args: &[&str], keep: impl Fn(String) -> Option<String>) -> BTreeSet<String> {
    let Ok(output) = Command::new(program).args(args).output() else {
        return BTreeSet::from([format!("({program} could not run)")]);
    };
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).filter_map(keep).collect()
}
