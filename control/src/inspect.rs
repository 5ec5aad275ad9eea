//! The client side of the control plane's status endpoints: what `skiff proxy-status` and
//! `skiff proxy-config` fetch and print.
//!
//! The CLI talks to the admin port, 15014 (`127.0.0.1:15014` by default; `kubectl
//! port-forward` it in a cluster), not to the proxy API on 15010: the admin port is plain
//! HTTP/1 and stays so, while 15010 becomes mTLS-only and a user holds no workload
//! certificate. Blocking I/O: one request per command needs no runtime.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime};

use skiff_api::config::{ProxyConfig, WorkloadRef};
use skiff_api::stream::{ProxyStatus, SyncState};

/// Where the CLI finds the control plane unless told otherwise.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:15014";

/// A status request that takes longer than this fails.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `skiff proxy-status`.
#[derive(Debug, clap::Args)]
pub struct ProxyStatusArgs {
    /// The control plane's admin address (its port 15014).
    #[arg(long, default_value = DEFAULT_ADMIN_ADDR)]
    pub control_plane: String,
}

/// `skiff proxy-config`.
#[derive(Debug, clap::Args)]
pub struct ProxyConfigArgs {
    /// The workload, as NAMESPACE/NAME.
    pub workload: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
    /// Pick the replica with this pod IP (default: the most recently connected).
    #[arg(long)]
    pub pod_ip: Option<IpAddr>,
    /// The control plane's admin address (its port 15014).
    #[arg(long, default_value = DEFAULT_ADMIN_ADDR)]
    pub control_plane: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Yaml,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot reach the control plane at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from the control plane at {addr}")]
    Read {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the control plane at {addr} sent something other than an HTTP response")]
    NotHttp { addr: String },
    #[error("{path}: the control plane answered {status}: {message}")]
    Status {
        path: String,
        status: u16,
        message: String,
    },
    #[error("the control plane's answer is not what this CLI expects (versions differ?)")]
    Decode(#[source] serde_json::Error),
    #[error("workload must be NAMESPACE/NAME, not {0:?}")]
    Workload(String),
    #[error("cannot render yaml")]
    Yaml(#[source] serde_saphyr::ser::Error),
}

/// The table `skiff proxy-status` prints.
pub fn proxy_status(args: &ProxyStatusArgs) -> Result<String, InspectError> {
    let proxies = fetch_proxies(&args.control_plane)?;
    Ok(render_status(&proxies, SystemTime::now()))
}

/// The configuration `skiff proxy-config` prints.
pub fn proxy_config(args: &ProxyConfigArgs) -> Result<String, InspectError> {
    let workload = match args.workload.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            WorkloadRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }
        }
        _ => return Err(InspectError::Workload(args.workload.clone())),
    };
    let config = fetch_config(&args.control_plane, &workload, args.pod_ip)?;
    match args.output {
        Format::Json => {
            Ok(serde_json::to_string_pretty(&config).map_err(InspectError::Decode)? + "\n")
        }
        Format::Yaml => serde_saphyr::to_string(&config).map_err(InspectError::Yaml),
    }
}

/// Prints a command's output, or its error with every cause, and says how to exit.
pub fn print(result: Result<String, InspectError>) -> std::process::ExitCode {
    match result {
        Ok(output) => {
            print!("{output}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message += &format!(": {cause}");
                source = cause.source();
            }
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Every proxy connected to the control plane at `addr`.
pub fn fetch_proxies(addr: &str) -> Result<Vec<ProxyStatus>, InspectError> {
    serde_json::from_slice(&get(addr, "/v1/proxies")?).map_err(InspectError::Decode)
}

/// The configuration last sent to a proxy of `workload`.
pub fn fetch_config(
    addr: &str,
    workload: &WorkloadRef,
    pod_ip: Option<IpAddr>,
) -> Result<ProxyConfig, InspectError> {
    let mut path = format!(
        "/v1/proxies/{}/{}/config",
        workload.namespace, workload.name
    );
    if let Some(ip) = pod_ip {
        path += &format!("?pod_ip={}", ip.to_string().replace(':', "%3A"));
    }
    serde_json::from_slice(&get(addr, &path)?).map_err(InspectError::Decode)
}

/// One table row per proxy: workload, pod IPs, the version it runs, when it last spoke,
/// its build, and whether it runs what it was sent (with the NACK reason if not).
pub fn render_status(proxies: &[ProxyStatus], now: SystemTime) -> String {
    let mut rows = vec![[
        "WORKLOAD".to_string(),
        "POD IPS".to_string(),
        "VERSION".to_string(),
        "LAST SEEN".to_string(),
        "PROXY".to_string(),
        "STATUS".to_string(),
    ]];
    for proxy in proxies {
        let status = match proxy.sync_state() {
            SyncState::Waiting => "WAITING (no valid policy)".to_string(),
            SyncState::Pending => {
                format!("PENDING {}", proxy.sent_version.as_deref().unwrap_or(""))
            }
            SyncState::Synced => "ACK".to_string(),
            SyncState::Refused => {
                let nack = proxy.last_nack.as_ref().expect("refused means nacked");
                format!("NACK {}: {}", nack.version, nack.reason.replace('\n', " "))
            }
        };
        let ips: Vec<String> = proxy.pod_ips.iter().map(ToString::to_string).collect();
        rows.push([
            proxy.workload.to_string(),
            ips.join(","),
            proxy
                .acked_version
                .clone()
                .unwrap_or_else(|| "-".to_string()),
            ago(now.duration_since(proxy.last_seen).unwrap_or_default()),
            proxy.proxy_version.clone(),
            status,
        ]);
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index + 1 == row.len() {
                line += cell;
            } else {
                line += &format!("{cell:<width$}   ", width = widths[index]);
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// `4s ago`, `12m ago`, `3h ago`.
fn ago(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        _ => format!("{}h ago", seconds / 3600),
    }
}

/// A plain HTTP/1.1 GET; the body of a 200 answer.
fn get(addr: &str, path: &str) -> Result<Vec<u8>, InspectError> {
    let connect = |source| InspectError::Connect {
        addr: addr.to_string(),
        source,
    };
    let read = |source| InspectError::Read {
        addr: addr.to_string(),
        source,
    };
    let socket = addr
        .to_socket_addrs()
        .map_err(connect)?
        .next()
        .ok_or_else(|| connect(std::io::ErrorKind::NotFound.into()))?;
    let mut stream = TcpStream::connect_timeout(&socket, TIMEOUT).map_err(connect)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(read)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(read)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(read)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(read)?;
    let not_http = || InspectError::NotHttp {
        addr: addr.to_string(),
    };
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(not_http)?;
    let head = std::str::from_utf8(&response[..head_end]).map_err(|_| not_http())?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(not_http)?;
    let body = response.split_off(head_end + 4);
    if status != 200 {
        return Err(InspectError::Status {
            path: path.to_string(),
            status,
            message: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::stream::Nack;

    fn status(name: &str, acked: Option<&str>, sent: Option<&str>) -> ProxyStatus {
        ProxyStatus {
            workload: WorkloadRef {
                namespace: "shop".into(),
                name: name.into(),
            },
            pod_ips: vec!["10.0.0.5".parse().unwrap()],
            proxy_version: "0.1.0".into(),
            connected_since: SystemTime::UNIX_EPOCH,
            last_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            sent_version: sent.map(Into::into),
            acked_version: acked.map(Into::into),
            last_nack: None,
        }
    }

    #[test]
    fn the_table_shows_ack_nack_and_pending() {
        let mut refused = status("api", Some("aaaa"), Some("bbbb"));
        refused.last_nack = Some(Nack {
            version: "bbbb".into(),
            reason: "unknown backend\nshop/x".into(),
        });
        let table = render_status(
            &[
                status("web", Some("aaaa"), Some("aaaa")),
                refused,
                status("db", None, Some("cccc")),
            ],
            SystemTime::UNIX_EPOCH + Duration::from_secs(103),
        );
        let expected = "\
WORKLOAD   POD IPS    VERSION   LAST SEEN   PROXY   STATUS
shop/web   10.0.0.5   aaaa      3s ago      0.1.0   ACK
shop/api   10.0.0.5   aaaa      3s ago      0.1.0   NACK bbbb: unknown backend shop/x
shop/db    10.0.0.5   -         3s ago      0.1.0   PENDING cccc
";
        assert_eq!(table, expected);
    }

    #[test]
    fn elapsed_time_reads_naturally() {
        assert_eq!(ago(Duration::from_secs(59)), "59s ago");
        assert_eq!(ago(Duration::from_secs(120)), "2m ago");
        assert_eq!(ago(Duration::from_secs(7200)), "2h ago");
    }

    #[test]
    fn workloads_need_a_namespace() {
        let args = ProxyConfigArgs {
            workload: "web".into(),
            output: Format::Yaml,
            pod_ip: None,
            control_plane: DEFAULT_ADMIN_ADDR.into(),
        };
        assert!(matches!(
            proxy_config(&args),
            Err(InspectError::Workload(_))
        ));
    }
}
