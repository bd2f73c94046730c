"""What machine a run happened on, so that noisy runs show up as noisy."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import subprocess
import sys
from typing import Any, Dict, Optional

from turbomem import procfs


def cpu_model() -> str:
    return procfs.cpuinfo_model() or platform.processor() or platform.machine()


def hypervisor() -> bool:
    return procfs.cpuinfo_has_flag("hypervisor")


def thp_mode() -> Dict[str, Optional[str]]:
    """``{"enabled", "defrag"}``: the bracketed THP settings, ``None`` where unreadable."""
    return procfs.thp_settings()._asdict()


def hugetlb_pages() -> Dict[str, int]:
    """HugePages_Total / HugePages_Free / Hugepagesize (kB) / MemTotal from /proc/meminfo."""
    info = procfs.meminfo()
    return {k: info[k] for k in ("HugePages_Total", "HugePages_Free", "Hugepagesize", "MemTotal") if k in info}


def load_average() -> Optional[list]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def perf_counters(event: str = "dTLB-load-misses") -> Dict[str, Any]:
    """Does `perf stat -e EVENT` count anything here?  Checked, never assumed."""
    perf = shutil.which("perf")
    if not perf:
        return {"available": False, "event": event, "why": "perf is not installed"}
    try:
        r = subprocess.run(
            [perf, "stat", "-x", ",", "-e", event, "true"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return {"available": False, "event": event, "why": "perf stat failed: %s" % e}
    text = r.stderr
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and event in fields[2]:
            value = fields[0].strip()
            if value.startswith("<"):  # <not supported> / <not counted>
                return {"available": False, "event": event, "why": "perf stat says %s" % value}
            return {"available": True, "event": event, "why": None}
    why = text.strip().splitlines()[-1] if text.strip() else "no output (rc %d)" % r.returncode
    return {"available": False, "event": event, "why": "perf stat: %s" % why}


def dpdk_version() -> Optional[str]:
    pc = shutil.which("pkg-config")
    if not pc:
        return None
    try:
        r = subprocess.run([pc, "--modversion", "libdpdk"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def cores() -> Dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"online": os.cpu_count(), "usable": usable}


def describe(check_perf: bool = True) -> Dict[str, Any]:
    """Everything recorded at the start of a run (load_after is added at the end)."""
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "hypervisor": hypervisor(),
        "cores": cores(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "thp": thp_mode(),
        "hugetlb": hugetlb_pages(),
        "perf_counters": perf_counters() if check_perf else None,
        "dpdk": dpdk_version(),
        "load_before": load_average(),
        "load_after": None,
    }


def summary_lines(m: Dict[str, Any]) -> list:
    """Human-readable lines for the report header."""
    perf = m.get("perf_counters") or {}
    perf_s = "yes" if perf.get("available") else "no (%s)" % perf.get("why", "not checked")
    ht = m.get("hugetlb") or {}
    return [
        "date:    %s" % m.get("date"),
        "cpu:     %s (%s cores usable%s)"
        % (m.get("cpu_model"), (m.get("cores") or {}).get("usable"), ", VM" if m.get("hypervisor") else ""),
        "kernel:  %s   python %s" % (m.get("kernel"), m.get("python")),
        "THP:     enabled=%s defrag=%s   hugetlb pages reserved: %s"
        % ((m.get("thp") or {}).get("enabled"), (m.get("thp") or {}).get("defrag"), ht.get("HugePages_Total")),
        "perf:    hardware counters: %s" % perf_s,
        "dpdk:    %s" % (m.get("dpdk") or "not found"),
        "load:    before %s  after %s" % (m.get("load_before"), m.get("load_after")),
    ]
