"""A tiny HTTP client for run.sh: `python client.py METHOD URL [JSON]` prints the JSON reply;
`python client.py WAIT URL` waits (up to 30 s) until the server at URL answers at all."""

import json
import sys
import time
import urllib.error
import urllib.request


def wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"no answer from {url}")
            time.sleep(0.1)


method, url = sys.argv[1], sys.argv[2]
if method == "WAIT":
    wait(url)
else:
    data = sys.argv[3].encode() if len(sys.argv) > 3 else None
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        print(json.dumps(json.load(response)))
