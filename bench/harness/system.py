"""Running commands (in a pod, pinned to a core), the CPU time and memory of processes from
/proc, how busy each core was, and what machine the run is on."""

import contextlib
import datetime
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

WORKSPACE = Path(__file__).resolve().parents[2]

# Where the proxies run, and where everything else (load generators, upstreams, this script).
PROXY_CORE = 1
LOAD_CORE = 0


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(argv, check=True, timeout=300, **kwargs):
    """Runs a command to completion and returns it (text output captured)."""
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(map(str, argv))}` exited {result.returncode}\n"
            f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[:2000]}"
        )
    return result


def in_ns(ns, argv, core=None):
    """The argv that runs `argv` in network namespace `ns`, pinned to `core` when given."""
    pin = ["taskset", "-c", str(core)] if core is not None else []
    return ["ip", "netns", "exec", ns, *pin, *argv]


def stop(proc, timeout=10):
    """SIGTERM, then SIGKILL after `timeout`; waits for the exit."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def wait_for(what, check, proc=None, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{what}: the process exited ({proc.returncode}); see {proc.log_path}"
            )
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}" + (f"; see {proc.log_path}" if proc else ""))


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid):
    """`pid` and every process below it (nginx's worker under its master)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids):
    """utime + stime of `pids` (all their threads), in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rfind(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / CLOCK_TICKS


def rss_kib(pids):
    """Sum of VmRSS of `pids`, in KiB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def core_times():
    """Per CPU: (busy, total) jiffies since boot, from /proc/stat."""
    times = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                values = [
                    int(v) for v in values[:8]
                ]  # user nice system idle iowait irq softirq steal
                times[int(name[3:])] = (sum(values) - values[3] - values[4], sum(values))
    return times


class Usage:
    """The CPU seconds and peak memory of some processes while a block runs, and how busy each
    core was: `with Usage({"nginx": [pid, ...], ...}) as usage: ...`, then `usage.cpu` (all of
    them), `usage.cpu_by_group`, `usage.wall`, `usage.peak_rss_kib` (all of them),
    `usage.core_busy[core]` (0..1, everything that ran there)."""

    def __init__(self, groups):
        self.groups = groups
        self.pids = [pid for pids in groups.values() for pid in pids]
        self.cpu = self.wall = 0.0
        self.cpu_by_group = {}
        self.peak_rss_kib = 0
        self.core_busy = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while True:
            self.peak_rss_kib = max(self.peak_rss_kib, rss_kib(self.pids))
            if self._stop.wait(0.2):
                return

    def _cpu(self):
        return {name: cpu_seconds(pids) for name, pids in self.groups.items()}

    def __enter__(self):
        self._cpu0, self._t0, self._cores0 = self._cpu(), time.monotonic(), core_times()
        if self.pids:
            self._sampler.start()
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self._t0
        cpu1 = self._cpu()
        self.cpu_by_group = {name: cpu1[name] - self._cpu0[name] for name in self.groups}
        self.cpu = sum(self.cpu_by_group.values())
        for core, (busy, total) in core_times().items():
            busy0, total0 = self._cores0.get(core, (0, 0))
            self.core_busy[core] = (busy - busy0) / max(total - total0, 1)
        if self.pids:
            self._stop.set()
            self._sampler.join()
        return False


def first_line(argv):
    """First non-empty line a tool prints about itself (stdout or stderr), or why not."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unavailable ({error})"
    for line in (result.stdout + "\n" + result.stderr).splitlines():
        if line.strip():
            return line.strip()
    return "unknown"


def machine(tools):
    cpu = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    distro = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip('"')
    commit = run(["git", "-C", WORKSPACE, "rev-parse", "--short=12", "HEAD"], check=False)
    dirty = run(["git", "-C", WORKSPACE, "status", "--porcelain"], check=False).stdout.strip()
    import matplotlib

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} CPUs",
        "memory": meminfo_total(),
        "kernel": platform.release(),
        "cpuidle driver / governor": cpuidle(),
        "os": distro,
        "skiff commit": (commit.stdout.strip() or "unknown")
        + (" (work tree modified)" if dirty else ""),
        "rustc": first_line(["rustc", "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "oha": first_line([tools["oha"], "--version"]),
        "h2load": first_line(["h2load", "--version"]),
        "python / matplotlib": f"{platform.python_version()} / {matplotlib.__version__}",
    }


def cpuidle():
    """How idle cores sleep: it decides what waking one for a request costs (on a VM a halted
    vCPU is woken through the hypervisor, which shows in latency at low request rates)."""
    base = Path("/sys/devices/system/cpu/cpuidle")
    parts = []
    for name in ("current_driver", "current_governor"):
        try:
            parts.append((base / name).read_text().strip())
        except OSError:
            parts.append("none")
    return " / ".join(parts)


def meminfo_total():
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"
