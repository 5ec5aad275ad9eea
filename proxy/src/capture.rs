//! Pod set-up, before any traffic: `skiff-proxy init` installs the nat rules that send the pod's
//! TCP to the proxy (outbound to 15001, inbound to 15006) in the current network namespace.
//!
//! Decide, then do: [`render`] is a pure function that returns exactly what will be applied (an
//! `iptables-restore --noflush` block per address family plus the jumps into our chains, written
//! as a shell script so `--dry-run` output can be read or pasted), and [`Iptables::install`]
//! carries the same plan out. Our chains are declared with `:CHAIN - [0:0]`, which creates them or
//! flushes them, and a jump is only added when `iptables -C` says it is absent, so running `init`
//! twice leaves exactly the same rules.
//!
//! IPv4 must succeed. IPv6 is applied only when `ip6tables` exists and can use the nat table;
//! otherwise it is skipped with a warning. Once that probe succeeds, an IPv6 failure is an error,
//! because a half-captured pod would let IPv6 traffic bypass the proxy silently.

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::str::FromStr;

/// Port of the proxy's outbound listener (DESIGN §2).
pub const OUTBOUND_PORT: u16 = 15001;
/// Port of the proxy's inbound listener (DESIGN §2).
pub const INBOUND_PORT: u16 = 15006;
/// Ports never captured inbound: `/metrics` (15020) for Prometheus and `/healthz` (15021) for the
/// kubelet's probes, which must reach the proxy directly.
pub const ALWAYS_EXCLUDED_INBOUND_PORTS: [u16; 2] = [15020, 15021];
/// UID the proxy runs as (DESIGN §2); its own traffic is never captured.
pub const PROXY_UID: u32 = 1337;

/// Chain that inbound TCP jumps to from PREROUTING; decides what to redirect.
const INBOUND_CHAIN: &str = "SKIFF_INBOUND";
/// Chain that redirects inbound TCP to the proxy's inbound port.
const INBOUND_REDIRECT_CHAIN: &str = "SKIFF_IN_REDIRECT";
/// Chain that outbound TCP jumps to from OUTPUT; decides what to redirect.
const OUTBOUND_CHAIN: &str = "SKIFF_OUTPUT";
/// Chain that redirects outbound TCP to the proxy's outbound port.
const OUTBOUND_REDIRECT_CHAIN: &str = "SKIFF_REDIRECT";

/// What to capture; built by `skiff-proxy init` from its flags (the pod's annotations, DESIGN §7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// UID the proxy runs as. Its traffic is exempt from outbound capture, otherwise the proxy's
    /// own upstream connections would be redirected back into itself forever.
    pub proxy_uid: u32,
    /// GID the proxy runs as, exempt like the UID when set; for runtimes that pick the UID
    /// arbitrarily (OpenShift) but let the pod fix the group.
    pub proxy_gid: Option<u32>,
    /// Port the outbound listener binds; the REDIRECT target for the app's outgoing TCP.
    pub outbound_port: u16,
    /// Port the inbound listener binds; the REDIRECT target for TCP arriving at the pod.
    pub inbound_port: u16,
    /// Ports the app serves directly to clients outside the mesh (`skiff.dev/exclude-inbound-ports`).
    /// 15020 and 15021 are excluded whatever this holds.
    pub exclude_inbound_ports: Vec<u16>,
    /// Destination ports the app reaches without the proxy (`skiff.dev/exclude-outbound-ports`),
    /// e.g. a database whose protocol the proxy must not touch.
    pub exclude_outbound_ports: Vec<u16>,
    /// Destination networks the app reaches without the proxy (`skiff.dev/exclude-outbound-cidrs`),
    /// e.g. a cloud metadata endpoint. Each goes only into the table of its own address family.
    pub exclude_outbound_cidrs: Vec<Cidr>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            proxy_uid: PROXY_UID,
            proxy_gid: None,
            outbound_port: OUTBOUND_PORT,
            inbound_port: INBOUND_PORT,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
        }
    }
}

/// A network: an address and a prefix length, such as `10.0.0.0/8` or `fd00::/8`.
///
/// Host bits are cleared when parsing (`10.1.2.3/8` becomes `10.0.0.0/8`), as iptables itself does,
/// so what [`render`] prints is what `iptables-save` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address, host bits cleared.
    addr: IpAddr,
    /// Number of leading bits that name the network: at most 32 for IPv4, 128 for IPv6.
    prefix_len: u8,
}

impl Cidr {
    /// The network `addr/prefix_len`, with the host bits of `addr` cleared.
    pub fn try_new(addr: IpAddr, prefix_len: u8) -> Result<Cidr, CidrError> {
        let addr = match addr {
            IpAddr::V4(a) if prefix_len <= 32 => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if prefix_len <= 128 => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                return Err(CidrError::PrefixTooLong { prefix_len, max });
            }
        };
        Ok(Cidr { addr, prefix_len })
    }

    fn family(&self) -> Family {
        if self.addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let invalid = |problem| CidrError::Invalid {
            input: s.to_owned(),
            problem,
        };
        let (addr, len) = s
            .trim()
            .split_once('/')
            .ok_or(invalid("the /PREFIX is missing"))?;
        let addr = addr
            .parse::<IpAddr>()
            .map_err(|_| invalid("the address is not IPv4 or IPv6"))?;
        let len = len
            .parse::<u8>()
            .map_err(|_| invalid("the prefix length is not a number"))?;
        Cidr::try_new(addr, len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a string is not a [`Cidr`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{input}` is not a network: {problem} (expected ADDRESS/PREFIX such as 10.0.0.0/8 or fd00::/8)")]
    Invalid {
        input: String,
        problem: &'static str,
    },
    #[error("prefix length /{prefix_len} is longer than the {max} bits of the address")]
    PrefixTooLong { prefix_len: u8, max: u8 },
}

/// Why the capture rules could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The program could not be found; the image lacks iptables.
    #[error("{program} not found in PATH; install the iptables package")]
    NotFound { program: String },
    /// The kernel refused: the init container runs without CAP_NET_ADMIN (or not as root).
    #[error("`{command}` was denied: the init container needs the NET_ADMIN capability: {stderr}")]
    PermissionDenied { command: String, stderr: String },
    /// The program ran and failed for another reason.
    #[error("`{command}` failed with {status}: {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// The program could not be started or fed its input.
    #[error("could not run `{command}`")]
    Io {
        command: String,
        #[source]
        source: io::Error,
    },
}

/// What [`Iptables::install`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallReport {
    /// Jumps into our chains that were absent and have been added, as command lines; empty when
    /// the rules were already in place (a second `init` in the same namespace).
    pub jumps_added: Vec<String>,
    /// Whether the IPv6 rules were installed.
    pub ipv6: Ipv6Outcome,
}

/// Whether the IPv6 rules were installed, and if not why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipv6Outcome {
    Installed,
    /// `ip6tables` is missing or cannot use the nat table (no IPv6 in the kernel); the reason is
    /// the tool's own message, also logged as a warning.
    Skipped {
        reason: String,
    },
}

/// Address family; selects the programs, the loopback address and which CIDRs apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// Jumps from the built-in chains into ours, as the arguments after `iptables -t nat -A|-C`.
const JUMPS: [[&str; 5]; 2] = [
    ["PREROUTING", "-p", "tcp", "-j", INBOUND_CHAIN],
    ["OUTPUT", "-p", "tcp", "-j", OUTBOUND_CHAIN],
];

/// The `iptables-restore --noflush` input for one family: declares (creates or flushes) our four
/// chains and fills them. Built-in chains are not touched here; see [`JUMPS`].
fn restore_input(cfg: &CaptureConfig, family: Family) -> String {
    let mut rules = vec!["*nat".to_owned()];
    for chain in [
        INBOUND_CHAIN,
        INBOUND_REDIRECT_CHAIN,
        OUTBOUND_CHAIN,
        OUTBOUND_REDIRECT_CHAIN,
    ] {
        rules.push(format!(":{chain} - [0:0]"));
    }

    let inbound_excluded = ALWAYS_EXCLUDED_INBOUND_PORTS
        .iter()
        .chain(&cfg.exclude_inbound_ports);
    for port in unique(inbound_excluded) {
        rules.push(format!(
            "-A {INBOUND_CHAIN} -p tcp --dport {port} -j RETURN"
        ));
    }
    rules.push(format!(
        "-A {INBOUND_CHAIN} -p tcp -j {INBOUND_REDIRECT_CHAIN}"
    ));
    rules.push(format!(
        "-A {INBOUND_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        cfg.inbound_port
    ));

    // The proxy's own connections first: nothing below may capture them.
    rules.push(format!(
        "-A {OUTBOUND_CHAIN} -m owner --uid-owner {} -j RETURN",
        cfg.proxy_uid
    ));
    if let Some(gid) = cfg.proxy_gid {
        rules.push(format!(
            "-A {OUTBOUND_CHAIN} -m owner --gid-owner {gid} -j RETURN"
        ));
    }
    rules.push(format!(
        "-A {OUTBOUND_CHAIN} -d {} -j RETURN",
        family.loopback()
    ));
    rules.push(format!("-A {OUTBOUND_CHAIN} -o lo -j RETURN"));
    for port in unique(&cfg.exclude_outbound_ports) {
        rules.push(format!(
            "-A {OUTBOUND_CHAIN} -p tcp --dport {port} -j RETURN"
        ));
    }
    let cidrs = cfg
        .exclude_outbound_cidrs
        .iter()
        .filter(|c| c.family() == family);
    for cidr in unique(cidrs) {
        rules.push(format!("-A {OUTBOUND_CHAIN} -d {cidr} -j RETURN"));
    }
    rules.push(format!("-A {OUTBOUND_CHAIN} -j {OUTBOUND_REDIRECT_CHAIN}"));
    rules.push(format!(
        "-A {OUTBOUND_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        cfg.outbound_port
    ));

    rules.push("COMMIT".to_owned());
    rules.join("\n") + "\n"
}

/// The items in first-seen order, without repeats, so a port listed twice gives one rule.
fn unique<'a, T: PartialEq + 'a>(items: impl IntoIterator<Item = &'a T>) -> Vec<&'a T> {
    let mut seen: Vec<&T> = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// Everything `init` would apply, as a shell script (what `--dry-run` prints). Pure.
pub fn render(cfg: &CaptureConfig) -> String {
    let mut script = String::new();
    for family in [Family::V4, Family::V6] {
        let tool = family.iptables();
        if family == Family::V6 {
            script
                .push_str("# IPv6: skipped with a warning if ip6tables cannot use the nat table\n");
        }
        script.push_str(&format!("{tool}-restore --noflush <<'EOF'\n"));
        script.push_str(&restore_input(cfg, family));
        script.push_str("EOF\n");
        for jump in JUMPS {
            let rule = jump.join(" ");
            script.push_str(&format!(
                "{tool} -t nat -C {rule} 2>/dev/null || {tool} -t nat -A {rule}\n"
            ));
        }
    }
    script
}

/// The iptables programs of one address family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyTools {
    /// `iptables` or `ip6tables`: checks for and adds the jumps from the built-in chains.
    pub iptables: PathBuf,
    /// `iptables-restore` or `ip6tables-restore`: applies our chains in one transaction.
    pub restore: PathBuf,
}

/// The programs [`Iptables::install`] runs; a value rather than a fixed PATH lookup so tests can
/// point it at a directory where they do not exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iptables {
    /// Programs for IPv4, which must succeed.
    pub v4: FamilyTools,
    /// Programs for IPv6, used when they exist and work.
    pub v6: FamilyTools,
}

impl Iptables {
    /// The programs by bare name, found through PATH.
    pub fn system() -> Iptables {
        Iptables::in_dir(Path::new(""))
    }

    /// The programs inside `dir`.
    pub fn in_dir(dir: &Path) -> Iptables {
        let tools = |family: Family| FamilyTools {
            iptables: dir.join(family.iptables()),
            restore: dir.join(format!("{}-restore", family.iptables())),
        };
        Iptables {
            v4: tools(Family::V4),
            v6: tools(Family::V6),
        }
    }

    /// Installs the rules [`render`] describes in the current network namespace.
    pub fn install(&self, cfg: &CaptureConfig) -> Result<InstallReport, CaptureError> {
        let mut jumps_added = self.apply(&self.v4, cfg, Family::V4)?;
        let ipv6 = match self.ipv6_unavailable() {
            Some(reason) => {
                tracing::warn!(%reason, "IPv6 capture skipped");
                Ipv6Outcome::Skipped { reason }
            }
            None => {
                jumps_added.extend(self.apply(&self.v6, cfg, Family::V6)?);
                Ipv6Outcome::Installed
            }
        };
        tracing::info!(
            jumps_added = jumps_added.len(),
            ?ipv6,
            "capture rules installed"
        );
        Ok(InstallReport { jumps_added, ipv6 })
    }

    /// Why IPv6 rules cannot be installed, if they cannot: a missing program or a nat table the
    /// kernel does not offer.
    fn ipv6_unavailable(&self) -> Option<String> {
        let tools = &self.v6;
        for program in [&tools.iptables, &tools.restore] {
            if let Err(CaptureError::NotFound { program }) = run(program, &["--version"], None) {
                return Some(format!("{program} not found"));
            }
        }
        match run(&tools.iptables, &["-t", "nat", "-S", "OUTPUT"], None) {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(stderr_of(&out)),
            Err(e) => Some(e.to_string()),
        }
    }

    /// Applies our chains for one family, then adds the missing jumps; returns the jumps added.
    fn apply(
        &self,
        tools: &FamilyTools,
        cfg: &CaptureConfig,
        family: Family,
    ) -> Result<Vec<String>, CaptureError> {
        let input = restore_input(cfg, family);
        let out = run(&tools.restore, &["--noflush"], Some(&input))?;
        succeeded(&tools.restore, &["--noflush"], &out)?;

        let mut added = Vec::new();
        for jump in JUMPS {
            let check = [&["-t", "nat", "-C"][..], &jump].concat();
            let out = run(&tools.iptables, &check, None)?;
            // 0: present. 1: no such rule. Anything else (4 for EPERM) is a failure.
            if out.status.code() == Some(1) && !denied(&out) {
                let add = [&["-t", "nat", "-A"][..], &jump].concat();
                let out = run(&tools.iptables, &add, None)?;
                succeeded(&tools.iptables, &add, &out)?;
                added.push(command_line(&tools.iptables, &add));
            } else {
                succeeded(&tools.iptables, &check, &out)?;
            }
        }
        Ok(added)
    }
}

/// Installs the capture rules with the system's iptables; see [`Iptables::install`].
pub fn install(cfg: &CaptureConfig) -> Result<InstallReport, CaptureError> {
    Iptables::system().install(cfg)
}

/// Runs `program args`, feeding `stdin` if given, and collects its output.
fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<Output, CaptureError> {
    let io_error = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            CaptureError::NotFound {
                program: program.display().to_string(),
            }
        } else {
            CaptureError::Io {
                command: command_line(program, args),
                source,
            }
        }
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_error)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A program that exits early closes the pipe; its exit status then says why.
        if let Err(e) = pipe.write_all(input.as_bytes()) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                return Err(io_error(e));
            }
        }
    }
    child.wait_with_output().map_err(io_error)
}

/// Turns a failed exit into the error that says how to fix it.
fn succeeded(program: &Path, args: &[&str], out: &Output) -> Result<(), CaptureError> {
    if out.status.success() {
        return Ok(());
    }
    let command = command_line(program, args);
    let stderr = stderr_of(out);
    if denied(out) {
        return Err(CaptureError::PermissionDenied { command, stderr });
    }
    Err(CaptureError::CommandFailed {
        command,
        status: out.status.to_string(),
        stderr,
    })
}

/// Whether a failed run was refused for lack of privilege.
fn denied(out: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&out.stderr);
    !out.status.success()
        && (stderr.contains("Permission denied") || stderr.contains("you must be root"))
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

fn command_line(program: &Path, args: &[&str]) -> String {
    let mut line = program.display().to_string();
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// The rules of one chain in the restore block of `family`, in order.
    fn chain(cfg: &CaptureConfig, family: Family, name: &str) -> Vec<String> {
        let prefix = format!("-A {name} ");
        restore_input(cfg, family)
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    #[test]
    fn parses_cidrs() {
        let cases = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("169.254.169.254/32", "169.254.169.254/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            (" 192.168.0.0/16 ", "192.168.0.0/16"),
            ("fd00::/8", "fd00::/8"),
            ("fd12:3456::1/64", "fd12:3456::/64"),
            ("::/0", "::/0"),
            ("::1/128", "::1/128"),
        ];
        for (input, want) in cases {
            let cidr: Cidr = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(cidr.to_string(), want, "{input}");
        }
    }

    #[test]
    fn rejects_bad_cidrs() {
        let cases = [
            ("10.0.0.0", "the /PREFIX is missing"),
            ("10.0.0/8", "not IPv4 or IPv6"),
            ("example.com/8", "not IPv4 or IPv6"),
            ("10.0.0.0/", "not a number"),
            ("10.0.0.0/-1", "not a number"),
            ("10.0.0.0/33", "/33 is longer than the 32 bits"),
            ("fd00::/129", "/129 is longer than the 128 bits"),
            ("", "the /PREFIX is missing"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Cidr>().unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
        }
        let err = "10.0.0.0".parse::<Cidr>().unwrap_err().to_string();
        assert!(
            err.contains("`10.0.0.0`") && err.contains("10.0.0.0/8 or fd00::/8"),
            "{err}"
        );
    }

    #[test]
    fn default_config_renders_the_documented_rules() {
        let want = "\
*nat
:SKIFF_INBOUND - [0:0]
:SKIFF_IN_REDIRECT - [0:0]
:SKIFF_OUTPUT - [0:0]
:SKIFF_REDIRECT - [0:0]
-A SKIFF_INBOUND -p tcp --dport 15020 -j RETURN
-A SKIFF_INBOUND -p tcp --dport 15021 -j RETURN
-A SKIFF_INBOUND -p tcp -j SKIFF_IN_REDIRECT
-A SKIFF_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A SKIFF_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A SKIFF_OUTPUT -d 127.0.0.1/32 -j RETURN
-A SKIFF_OUTPUT -o lo -j RETURN
-A SKIFF_OUTPUT -j SKIFF_REDIRECT
-A SKIFF_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
";
        assert_eq!(restore_input(&CaptureConfig::default(), Family::V4), want);
        let v6 = restore_input(&CaptureConfig::default(), Family::V6);
        assert_eq!(v6, want.replace("127.0.0.1/32", "::1/128"));
    }

    #[test]
    fn outbound_chain_in_order() {
        let cfg = CaptureConfig {
            proxy_uid: 2000,
            proxy_gid: Some(3000),
            exclude_outbound_ports: vec![5432, 6379, 5432],
            exclude_outbound_cidrs: cidrs(&["169.254.169.254/32", "fd00::/8", "10.0.0.0/8"]),
            ..CaptureConfig::default()
        };
        let cases: [(Family, &[&str]); 2] = [
            (
                Family::V4,
                &[
                    "-m owner --uid-owner 2000 -j RETURN",
                    "-m owner --gid-owner 3000 -j RETURN",
                    "-d 127.0.0.1/32 -j RETURN",
                    "-o lo -j RETURN",
                    "-p tcp --dport 5432 -j RETURN",
                    "-p tcp --dport 6379 -j RETURN",
                    "-d 169.254.169.254/32 -j RETURN",
                    "-d 10.0.0.0/8 -j RETURN",
                    "-j SKIFF_REDIRECT",
                ],
            ),
            (
                Family::V6,
                &[
                    "-m owner --uid-owner 2000 -j RETURN",
                    "-m owner --gid-owner 3000 -j RETURN",
                    "-d ::1/128 -j RETURN",
                    "-o lo -j RETURN",
                    "-p tcp --dport 5432 -j RETURN",
                    "-p tcp --dport 6379 -j RETURN",
                    "-d fd00::/8 -j RETURN",
                    "-j SKIFF_REDIRECT",
                ],
            ),
        ];
        for (family, want) in cases {
            assert_eq!(chain(&cfg, family, OUTBOUND_CHAIN), want, "{family:?}");
        }
    }

    #[test]
    fn inbound_chain_always_excludes_metrics_and_health() {
        let cases: [(&[u16], &[u16]); 3] = [
            (&[], &[15020, 15021]),
            (&[22, 8080], &[15020, 15021, 22, 8080]),
            (&[15021, 22, 22], &[15020, 15021, 22]),
        ];
        for (excluded, want_ports) in cases {
            let cfg = CaptureConfig {
                exclude_inbound_ports: excluded.to_vec(),
                ..Default::default()
            };
            let mut want: Vec<String> = want_ports
                .iter()
                .map(|p| format!("-p tcp --dport {p} -j RETURN"))
                .collect();
            want.push("-p tcp -j SKIFF_IN_REDIRECT".to_owned());
            for family in [Family::V4, Family::V6] {
                assert_eq!(
                    chain(&cfg, family, INBOUND_CHAIN),
                    want,
                    "{excluded:?} {family:?}"
                );
            }
        }
    }

    #[test]
    fn redirect_targets_follow_the_configured_ports() {
        let cfg = CaptureConfig {
            outbound_port: 16001,
            inbound_port: 16006,
            ..Default::default()
        };
        assert_eq!(
            chain(&cfg, Family::V4, OUTBOUND_REDIRECT_CHAIN),
            ["-p tcp -j REDIRECT --to-ports 16001"]
        );
        assert_eq!(
            chain(&cfg, Family::V6, INBOUND_REDIRECT_CHAIN),
            ["-p tcp -j REDIRECT --to-ports 16006"]
        );
    }

    #[test]
    fn cidrs_only_reach_their_own_family() {
        let cfg = CaptureConfig {
            exclude_outbound_cidrs: cidrs(&["10.0.0.0/8", "fd00::/8"]),
            ..Default::default()
        };
        let script = render(&cfg);
        let (v4, v6) = script.split_once("ip6tables-restore").unwrap();
        assert!(
            v4.contains("-d 10.0.0.0/8 -j RETURN") && !v4.contains("fd00::/8"),
            "{v4}"
        );
        assert!(
            v6.contains("-d fd00::/8 -j RETURN") && !v6.contains("10.0.0.0/8"),
            "{v6}"
        );
    }

    #[test]
    fn render_applies_chains_before_jumping_to_them() {
        let script = render(&CaptureConfig::default());
        let v4_restore = script.find("iptables-restore --noflush").unwrap();
        let v4_jump = script.find("iptables -t nat -A PREROUTING").unwrap();
        let v6_restore = script.find("ip6tables-restore --noflush").unwrap();
        let v6_jump = script.find("ip6tables -t nat -A OUTPUT").unwrap();
        assert!(
            v4_restore < v4_jump && v4_jump < v6_restore && v6_restore < v6_jump,
            "{script}"
        );
        for rule in [
            "PREROUTING -p tcp -j SKIFF_INBOUND",
            "OUTPUT -p tcp -j SKIFF_OUTPUT",
        ] {
            let want =
                format!("iptables -t nat -C {rule} 2>/dev/null || iptables -t nat -A {rule}");
            assert!(
                script.lines().any(|l| l == want),
                "missing {want:?} in\n{script}"
            );
        }
        // Nothing outside our chains is declared, so built-in chains keep their rules.
        assert_eq!(script.matches(":SKIFF_").count(), 8, "{script}");
        assert!(
            !script.contains(":PREROUTING") && !script.contains(":OUTPUT"),
            "{script}"
        );
    }

    #[test]
    fn missing_iptables_is_reported_as_not_found() {
        let tools = Iptables::in_dir(Path::new("/nonexistent/skiff-capture-test"));
        let err = tools.install(&CaptureConfig::default()).unwrap_err();
        assert!(matches!(err, CaptureError::NotFound { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "/nonexistent/skiff-capture-test/iptables-restore not found in PATH; \
             install the iptables package"
        );
    }

    #[test]
    fn system_programs_are_looked_up_in_path() {
        let tools = Iptables::system();
        assert_eq!(tools.v4.restore, Path::new("iptables-restore"));
        assert_eq!(tools.v6.iptables, Path::new("ip6tables"));
    }
    // Installing in a real namespace (twice, with identical results) is tested end to end in
    // tests/tests/init.rs, which runs `skiff-proxy init` inside namespaces made by the test.
}
