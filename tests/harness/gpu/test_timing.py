"""The host clock of a step's host preparation: wall and CPU time over its intervals alone."""
import time

from harness.gpu.timing import HostClock


def test_host_clock_sums_its_intervals_and_tells_cpu_time_from_time_off_the_core():
    clock = HostClock()
    busy_until = time.thread_time() + 0.05
    while time.thread_time() < busy_until:  # on the core
        pass
    clock.stop()
    time.sleep(0.5)  # between intervals: not counted
    clock.start()
    time.sleep(0.05)  # inside one, off the core: wall time only
    clock.stop()
    assert 0.05 <= clock.cpu_s < 0.09
    assert 0.1 <= clock.wall_s < 0.5
