"""The rank side of a stop request, in a real child process."""

import signal
import subprocess
import sys
import time

from tests.helpers.ranks import REPO

CHILD = """
import sys, time
from koda.distributed import preemption
request = preemption.install()
print("ready", flush=True)
while not request.requested:
    time.sleep(0.01)
print("stop", request.signal, flush=True)
time.sleep(30)
print("survived", flush=True)
"""


def test_a_stop_request_is_recorded_and_sigterm_after_it_ends_the_process():
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGUSR1)
    assert child.stdout.readline().strip() == f"stop {int(signal.SIGUSR1)}"      # recorded, still running
    assert child.poll() is None
    child.send_signal(signal.SIGUSR1)                  # the same request again (sent twice): still running
    time.sleep(0.5)
    assert child.poll() is None
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=10) == -signal.SIGTERM
    assert child.stdout.read() == ""
