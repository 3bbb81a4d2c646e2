"""The one network probe: does a download of a URL have a chance, within a few seconds?

Hub downloads (keras.applications weights, TFDS data) fail slowly without a network: DNS
retries, then connection timeouts, for minutes. tfft asks first, and says what to do offline
when the answer is no. The probe goes where the download would go first (the proxy, when the
environment names one and the host is not bypassed) and never blocks longer than `timeout`,
even when name resolution hangs (it runs in a daemon thread).
"""

import socket
import threading
import urllib.parse
import urllib.request

PROBE_TIMEOUT = 3.0


def probe_target(url):
    """The `(host, port)` a download of `url` connects to first (proxy aware).

    Example:
    >>> probe_target("https://example.org/file")[1] in (443, 80, 3128, 8080)
    True
    """
    parsed = urllib.parse.urlparse(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
        proxy = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return proxy.hostname, proxy.port or 80
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def can_reach(host, port, timeout=PROBE_TIMEOUT):
    """Whether a TCP connection to `host:port` opens within `timeout` seconds."""
    result = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def reachable(url, timeout=PROBE_TIMEOUT):
    """Whether a download of `url` can connect within `timeout` seconds.

    Example:
    >>> isinstance(reachable("https://storage.googleapis.com/", timeout=0.5), bool)
    True
    """
    host, port = probe_target(url)
    return can_reach(host, port, timeout)
