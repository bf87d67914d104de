#!/usr/bin/env python3
"""Load test for `neurodex serve` (127.0.0.1 only): N clients for S seconds, each looping
over the page, the layer list, the image list, an indexed image, a unit report and a
posted frame; then idle sockets beside a normal client.

    scripts/load-serve.py --db DB [--clients 50] [--seconds 60] [--idle 300 --nofile 256]

Starts `target/release/neurodex serve --db DB` itself (under `ulimit -n NOFILE` when
given), samples its VmRSS every 2 s, and prints the count per status, the slowest
request per route and the RSS samples. Every answer must be 200 or 503 busy."""

import argparse, http.client, json, os, random, socket, subprocess, sys, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--db", required=True)
ap.add_argument("--bin", default="target/release/neurodex")
ap.add_argument("--clients", type=int, default=50)
ap.add_argument("--seconds", type=float, default=60)
ap.add_argument("--idle", type=int, default=0, help="idle sockets to hold open meanwhile")
ap.add_argument("--nofile", type=int, default=0, help="open-file limit for the server")
ap.add_argument("--photo", default="datasets/demo/images/objects__coffee.jpg")
a = ap.parse_args()

cmd = f"exec {a.bin} serve --db {a.db} --addr 127.0.0.1:0"
if a.nofile:
    cmd = f"ulimit -n {a.nofile} && " + cmd
srv = subprocess.Popen(["sh", "-c", cmd], stderr=subprocess.PIPE, text=True)
while True:
    line = srv.stderr.readline()
    if not line:
        sys.exit("server exited")
    if line.startswith("listening on http://"):
        host, port = line.strip()[len("listening on http://"):].rstrip("/").split(":")
        port = int(port)
        break
threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()

def request(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t = time.monotonic()
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        data = r.read()
        status = r.status
        if status == 503 and b"busy" not in data:
            status = "503-not-busy"
    except Exception as e:
        status, data = type(e).__name__, b""
    finally:
        c.close()
    return status, time.monotonic() - t, data

layers = json.loads(request("GET", "/api/layers")[2])
ids = [i["id"] for i in json.loads(request("GET", "/api/images?limit=5000")[2])["images"]]
units = [(l["name"], l["c"]) for l in layers["layers"] if l["indexed"]]
photo = open(a.photo, "rb").read()
routes = [
    ("page", lambda: ("GET", "/", None)),
    ("layers", lambda: ("GET", "/api/layers", None)),
    ("images", lambda: ("GET", f"/api/images?offset={random.randrange(len(ids))}&limit=50", None)),
    ("image", lambda: ("GET", f"/api/image/{random.choice(ids)}", None)),
    ("unit", lambda: (lambda l: ("GET", f"/api/unit/{l[0]}/{random.randrange(l[1])}", None))(random.choice(units))),
    ("frame", lambda: ("POST", "/api/frame?layer=" + layers["default"], photo)),
]

def rss():
    try:
        for line in open(f"/proc/{srv.pid}/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    except OSError:
        return None

idle = []
for _ in range(a.idle):
    s = socket.create_connection(("127.0.0.1", port))
    idle.append(s)

lock = threading.Lock()
counts, slowest = {}, {}
stop = time.monotonic() + a.seconds

def client(k):
    rng = random.Random(k)
    while time.monotonic() < stop:
        name, make = rng.choice(routes)
        status, secs, _ = request(*make())
        with lock:
            counts[(name, status)] = counts.get((name, status), 0) + 1
            if secs > slowest.get(name, 0):
                slowest[name] = secs

threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
for t in threads:
    t.start()
samples = []
while time.monotonic() < stop:
    samples.append(rss())
    time.sleep(2)
for t in threads:
    t.join()
# With the idle sockets still open: a fresh client is answered.
fresh = request("GET", "/api/layers")
for s in idle:
    s.close()
srv.terminate()
srv.wait()

total = sum(counts.values())
bad = {k: v for k, v in counts.items() if k[1] not in (200, 503)}
print(f"{a.clients} clients, {a.seconds:.0f} s, {a.idle} idle sockets, nofile {a.nofile or 'default'}: "
      f"{total} requests, {total / a.seconds:.1f}/s")
for (name, status), n in sorted(counts.items(), key=lambda x: (x[0][0], str(x[0][1]))):
    print(f"  {name:7} {status}: {n}")
print("  slowest: " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(slowest.items())))
print(f"  RSS MB every 2 s: {samples}")
print(f"  fresh client after the run, idle sockets open: {fresh[0]} in {fresh[1]:.2f} s")
ok = not bad and max(slowest.values()) <= 2.0 and fresh[0] == 200
print("PASS" if ok else f"FAIL {bad}")
sys.exit(0 if ok else 1)
