"""Clock sync detection: the timesyncd flag, the kernel's adjtimex state, and the cached watch."""

from __future__ import annotations

from agent import clock
from agent.clock import ClockWatch, ntp_synchronized


def test_the_timesyncd_flag_file_means_synchronised(tmp_path):
    flag = tmp_path / "synchronized"
    flag.touch()
    assert ntp_synchronized(flag) is True


def test_without_the_flag_the_kernel_decides(tmp_path):
    # Whatever this machine's clock state, the answer is the kernel's (adjtimex), as a bool.
    kernel = clock._adjtimex_synced()
    assert ntp_synchronized(tmp_path / "missing") is bool(kernel)


def test_adjtimex_reads_the_kernel_state_without_changing_it():
    assert clock._adjtimex_synced() in (True, False, None)


def test_clock_watch_caches_the_probe_for_its_refresh_interval(tmp_path):
    flag = tmp_path / "synchronized"
    calls = []

    def probe() -> bool:
        calls.append(1)
        return flag.exists()

    cached = ClockWatch(refresh=3600, probe=probe)
    assert cached.synced is False
    flag.touch()
    assert cached.synced is False  # still within the refresh interval
    assert len(calls) == 1

    fresh = ClockWatch(refresh=0, probe=probe)
    assert fresh.synced is True
