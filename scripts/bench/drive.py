"""Runs neurodex, onnxruntime and (when present) PyTorch side by side for scripts/bench.sh.

Each runtime is a long-lived process speaking the line protocol of common.py, so all of
them stay warm and the timed runs interleave: round after round, each runtime does one
run in turn (rotating who goes first), and a burst of load from elsewhere on the machine
hits all of them alike instead of one case. A run during which other processes (or the
host, as steal time) took more than 15% of the CPU is retried, up to twice, and left out
of the figures if at least 3 undisturbed runs remain.

usage: drive.py speed RUNS CMD_NEURODEX CMD_ORT CMD_TORCH MODEL:ARCH.json:WEIGHTS ...
       drive.py backward RUNS CMD_NEURODEX CMD_TORCH MODEL:ARCH.json:WEIGHTS NODE UNIT
       drive.py layers BATCH REPS CMD_NEURODEX_LAYERS CMD_ORT_PROFILE
CMD_* are shell-quoted command prefixes; the speed mode appends ARCH.json and WEIGHTS
(or MODEL and WEIGHTS for neurodex); CMD_TORCH may be empty (no PyTorch column).
"""
import os
import shlex
import subprocess
import sys
import time

import numpy as np

BATCHES = (1, 16)
IMAGES_PER_RUN = 16  # a b1 run is 16 forwards, a b16 run one
TICKS = os.sysconf("SC_CLK_TCK")
# The ratios neurodex / onnxruntime aimed for on an AVX2-only machine (the fast-paths
# issue; bench.sh --cpu avx2 stands in for one on a CPU with AVX-512).
TARGETS = {("efficientnet-lite0", 16): 1.1, ("efficientnet-lite0", 1): 0.8,
           ("resnet18", 16): 0.9, ("alexnet", 16): 0.9}


class Peer:
    def __init__(self, label, argv):
        self.label = label
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"{label} did not start ({' '.join(argv)}): {line or 'no answer'}")

    def ask(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        if not line or line.startswith("error"):
            raise RuntimeError(f"{self.label}: {cmd!r} -> {line or 'died'}")
        return line

    def cpu_ticks(self):
        """CPU time of this peer, all threads, in clock ticks."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def timed_run(self, cmd):
        """One timed run, retried (up to twice) when other work took a noticeable share of
        the CPU meanwhile: the machine's busy and stolen time minus this peer's own. Returns
        (images/s, whether the run kept was disturbed)."""
        for attempt in range(3):
            time.sleep(0.02)  # let the previous runtime's idle threads park
            busy0, peer0, t0 = machine_busy(), self.cpu_ticks(), time.perf_counter()
            rate = float(self.ask(cmd))
            wall = (time.perf_counter() - t0) * TICKS * os.cpu_count()
            foreign = (machine_busy() - busy0 - (self.cpu_ticks() - peer0)) / max(wall, 1)
            if foreign < 0.15:
                return rate, False
        return rate, True

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self.proc.wait()


def machine_busy():
    """Clock ticks all CPUs spent busy or stolen by the host since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


def summary(rates):
    rates = sorted(rates)
    return rates[len(rates) // 2], rates[-1], rates[0]


def speed(runs, cmd_nd, cmd_ort, cmd_torch, cases):
    table = []
    busiest = 0.0
    for case in cases:
        model, arch, weights = case.split(":")
        peers = [Peer("neurodex", shlex.split(cmd_nd) + [model, weights]),
                 Peer("onnxruntime", shlex.split(cmd_ort) + [arch, weights])]
        if cmd_torch:
            try:
                peers.append(Peer("pytorch", shlex.split(cmd_torch) + [arch, weights]))
            except RuntimeError as e:
                print(f"note: no PyTorch column: {e}", flush=True)
        try:
            logits = {}
            for p in peers:
                path = os.path.join(os.path.dirname(arch), f"{model}.{p.label}.logits")
                p.ask(f"logits {path}")
                logits[p.label] = np.fromfile(path, dtype="<f4")
            ref = logits["neurodex"]
            scale = float(np.max(np.abs(ref)))
            diffs = {k: float(np.max(np.abs(v - ref))) for k, v in logits.items() if k != "neurodex"}
            print(f"check {model}: max |logits - neurodex's| on the test image: "
                  + ", ".join(f"{k} {d:.2e}" for k, d in diffs.items()) + f" (|logits| up to {scale:.2f})",
                  flush=True)
            bad = {k: d for k, d in diffs.items() if not d <= 1e-3 * max(1.0, scale)}
            if bad:
                raise SystemExit(f"{model}: runtimes disagree with neurodex: {bad}")
            for b in BATCHES:
                k = max(1, IMAGES_PER_RUN // b)
                for p in peers:
                    p.ask(f"time {b} {k} 2")  # warm-up
                rates = {p.label: [] for p in peers}
                disturbed = {p.label: 0 for p in peers}
                for r in range(runs):
                    for p in peers[r % len(peers):] + peers[: r % len(peers)]:
                        rate, bad = p.timed_run(f"time {b} {k} 1")
                        rates[p.label].append((rate, bad))
                        disturbed[p.label] += bad
                print(f"{model} b{b}: images/s, median [best, worst] of {runs} runs of {b * k} images", flush=True)
                med = {}
                for label, rs in rates.items():
                    # Disturbed runs count only when too few others are left.
                    clean = [v for v, bad in rs if not bad]
                    m, best, worst = summary(clean if len(clean) >= 3 else [v for v, _ in rs])
                    med[label] = m
                    note = ""
                    if disturbed[label]:
                        kept = "left out" if len(clean) >= 3 else "kept: too few others"
                        note = f"  ({disturbed[label]} runs disturbed by other work, {kept})"
                    print(f"  {label:<12} {m:8.2f}  [{best:.2f}, {worst:.2f}]{note}", flush=True)
                    busiest = max(busiest, disturbed[label] / runs)
                ratio = med["neurodex"] / med["onnxruntime"]
                print(f"RATIO {model} b{b} neurodex={med['neurodex']:.2f} onnxruntime={med['onnxruntime']:.2f} "
                      f"ratio={ratio:.2f}", flush=True)
                table.append((model, b, med, ratio))
        finally:
            for p in peers:
                p.close()
    if busiest > 0.2:
        print(f"\nwarning: other work took more than 15% of the CPU during {busiest:.0%} of some runtime's runs "
              "(after retries): run again on a quieter machine")
    torch_col = any("pytorch" in m for _, _, m, _ in table)
    print("\n| model | batch | neurodex img/s | onnxruntime img/s |" + (" pytorch img/s |" if torch_col else "")
          + " ratio | target |")
    print("|---|---|---|---|" + ("---|" if torch_col else "") + "---|---|")
    for model, b, med, ratio in table:
        target = TARGETS.get((model, b))
        mark = "" if target is None else f">= {target:.1f} " + ("ok" if ratio >= target else "MISSED")
        pt = (f" {med['pytorch']:.1f} |" if "pytorch" in med else " - |") if torch_col else ""
        print(f"| {model} | {b} | {med['neurodex']:.1f} | {med['onnxruntime']:.1f} |{pt} {ratio:.2f} | {mark} |")


def backward(runs, cmd_nd, cmd_torch, case, node, unit):
    """Forward + backward (the input gradient of a unit's maximum), neurodex against
    PyTorch's autograd, interleaved as in `speed`."""
    model, arch, weights = case.split(":")
    peers = [Peer("neurodex", shlex.split(cmd_nd) + [model, weights]),
             Peer("pytorch", shlex.split(cmd_torch) + [arch, weights])]
    try:
        for b in BATCHES:
            k = max(1, IMAGES_PER_RUN // b)
            cmd = f"grad {b} {k} 1 {node} {unit}"
            for p in peers:
                p.ask(f"grad {b} {k} 2 {node} {unit}")  # warm-up
            rates = {p.label: [] for p in peers}
            for r in range(runs):
                for p in peers[r % 2:] + peers[: r % 2]:
                    rates[p.label].append(p.timed_run(cmd)[0])
            print(f"{model} forward + backward to node {node} unit {unit}, b{b}: images/s, median "
                  f"[best, worst] of {runs} runs of {b * k} images", flush=True)
            med = {}
            for label, rs in rates.items():
                med[label], best, worst = summary(rs)
                print(f"  {label:<12} {med[label]:8.2f}  [{best:.2f}, {worst:.2f}]", flush=True)
            print(f"RATIO backward {model} b{b} neurodex={med['neurodex']:.2f} pytorch={med['pytorch']:.2f} "
                  f"ratio={med['neurodex'] / med['pytorch']:.2f}", flush=True)
    finally:
        for p in peers:
            p.close()


def layers(batch, reps, cmd_nd, cmd_ort):
    nd = subprocess.run(shlex.split(cmd_nd) + [str(batch), str(reps)], check=True, capture_output=True,
                        text=True).stdout
    ort = subprocess.run(shlex.split(cmd_ort) + ["profile", str(batch), str(reps)], check=True,
                         capture_output=True, text=True).stdout
    theirs = {}
    for line in ort.splitlines():
        name, ms = line.rsplit(" ", 1)
        theirs[name] = float(ms)
    rows = []
    whole = None
    for line in nd.splitlines():
        if line.startswith("#whole"):
            whole = [float(v) for v in line.split("\t")[1:]]
            continue
        name, ms, mflop, desc = line.split("\t")
        rows.append((name, float(ms), float(mflop), desc, theirs.pop(name, 0.0)))
    print(f"per layer at batch {batch}, ms per batch, median of {reps} (neurodex: each layer alone on real "
          f"activations, in the chunks its forward pass uses; onnxruntime: its profiler; an activation or "
          f"residual add that onnxruntime fuses into a conv counts there)")
    print(f"{'node':<22} {'op':<34} {'MFLOP':>8} {'neurodex':>9} {'GFLOP/s':>8} {'onnxrt':>8} {'GFLOP/s':>8} {'excess':>8}")
    for name, ms, mflop, desc, o in rows:
        g = lambda t: f"{mflop / t:8.1f}" if mflop and t > 0.01 else f"{'':8}"  # noqa: E731
        print(f"{name:<22} {desc:<34} {mflop:8.1f} {ms:9.3f} {g(ms)} {o:8.3f} {g(o)} {ms - o:8.3f}")
    nd_total, ort_total = sum(r[1] for r in rows), sum(r[4] for r in rows) + sum(theirs.values())
    print(f"{'total':<22} {'':<34} {sum(r[2] for r in rows):8.1f} {nd_total:9.3f} {'':8} {ort_total:8.3f}")
    if whole:
        print(f"neurodex whole forward {whole[0]:.3f} ms vs its layers' sum {whole[1]:.3f} ms "
              f"(chunks of {int(whole[2])} images): {whole[0] - whole[1]:+.3f} ms between layers")
    kinds = {}
    for name, ms, mflop, desc, o in rows:
        kind = ("depthwise " + desc.split("/")[0] if "depthwise" in desc else
                "conv1x1" if desc.startswith("conv1x1") else
                "conv (other)" if desc.startswith("conv") else desc.split()[0].split("->")[0])
        k = kinds.setdefault(kind, [0.0, 0.0, 0.0])
        k[0] += ms
        k[1] += o
        k[2] += mflop
    print("by kind:  " + "; ".join(f"{k} {v[0]:.2f} vs {v[1]:.2f} ms ({v[2]:.0f} MFLOP)"
                                  for k, v in sorted(kinds.items(), key=lambda kv: kv[1][1] - kv[1][0])))
    if theirs:
        print("onnxruntime-only nodes (layout reorders): "
              + ", ".join(f"{k} {v:.3f}" for k, v in theirs.items()))
    print("largest excess (neurodex ms - onnxruntime ms): "
          + ", ".join(f"{r[0]} {r[1] - r[4]:+.2f}" for r in sorted(rows, key=lambda r: r[4] - r[1])[:8]))


def main():
    if sys.argv[1] == "speed":
        speed(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:])
    elif sys.argv[1] == "backward":
        backward(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7])
    elif sys.argv[1] == "layers":
        layers(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
