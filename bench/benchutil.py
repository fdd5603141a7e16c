"""What the Python benchmarks share: free ports, a process's resident memory, waiting
for a server, and reading one value from its /metrics. Standard library only; the
scripts beside it import it (`python3 bench/X.py` puts bench/ on the path)."""
import http.client
import socket
import time


def free_port():
    """A TCP port of 127.0.0.1 free at the moment of asking."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    """Resident memory of `pid` (VmRSS, KiB); 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_http(port, path, deadline=30):
    """Waits until GET `path` on 127.0.0.1:`port` answers 200, at most `deadline` s."""
    end = time.time() + deadline
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"port {port} is not ready")


def metric(port, name):
    """The value of the sample `name` (with its labels, as exposed) in the server's
    /metrics, or None when it is missing or the server does not answer."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/metrics")
        for line in c.getresponse().read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    except OSError:
        pass
    return None
