#!/usr/bin/env python3
"""Large-model memory and time: a synthetic checkpoint shaped like a real one, quantized and run by atq.

Writes `atq synth --like MODEL` (bf16, sharded as published), times one plain sequential read of its shards, then
runs, each under a sampler that reads /proc/PID/status 20 times a second:
  rtn-q4_0     atq quantize --method rtn --format q4_0 --nsamples 0 --gguf q4_0.gguf
  gptq-4-g128  atq quantize --method gptq --bits 4 --group-size 128 --nsamples N --seqlen L  (N=32, L=512 default)
  rtn-ternary  atq quantize --method rtn --ternary --nsamples 0 --gguf tq2_0.gguf
  perplexity and generate of the q4_0 GGUF and of the packed checkpoint
Peak memory is the high-water mark of RssAnon (anonymous resident memory: pages of mapped input files do not
count), sampled, beside the kernel's VmHWM (all resident pages, mapped files included). JSON goes to --out
(default out/large_model/<model>.json); progress lines of atq go to the terminal.

  python3 scripts/bench_large_model.py --like tinyllama-1.1b
  python3 scripts/bench_large_model.py --like mistral-7b --work /big/disk/atq-large
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def status_bytes(pid, keys):
    """The /proc/PID/status fields `keys` in bytes (kB in the file); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in keys:
            out[name] = int(value.split()[0]) * 1024
    return out


def run_sampled(name, command, log):
    """Runs `command`, sampling RssAnon/VmHWM every 50 ms; returns a result dict (raises on failure)."""
    print(f"== {name}: {' '.join(command)}", flush=True)
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {"RssAnon": 0, "VmHWM": 0, "samples": 0}

    def sample():
        while process.poll() is None:
            fields = status_bytes(process.pid, ("RssAnon", "VmHWM"))
            if fields:
                peaks["RssAnon"] = max(peaks["RssAnon"], fields.get("RssAnon", 0))
                peaks["VmHWM"] = max(peaks["VmHWM"], fields.get("VmHWM", 0))
                peaks["samples"] += 1
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines = []
    for line in process.stdout:
        lines.append(line)
        log.write(line)
        if "[" in line or line.startswith(("error", "perplexity", "gguf", "packed")):
            sys.stdout.write("   " + line)
            sys.stdout.flush()
    process.wait()
    sampler.join()
    wall = time.monotonic() - start
    if process.returncode != 0:
        sys.exit(f"{name} failed (exit {process.returncode}):\n" + "".join(lines[-20:]))
    result = {"command": command, "wall_seconds": round(wall, 3), "peak_rss_anon_bytes": peaks["RssAnon"],
              "peak_vm_hwm_bytes": peaks["VmHWM"], "samples": peaks["samples"]}
    print(f"   {wall:.1f} s, peak RssAnon {peaks['RssAnon'] / 1e9:.2f} GB, VmHWM {peaks['VmHWM'] / 1e9:.2f} GB",
          flush=True)
    return result


def folder_bytes(path, suffix=".safetensors"):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(suffix))


def sequential_read(folder):
    """Seconds to read every shard once, in 16 MB pieces (whatever of it the page cache holds is read from there)."""
    start = time.monotonic()
    total = 0
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(folder, name), "rb", buffering=0) as f:
            while True:
                chunk = f.read(16 << 20)
                if not chunk:
                    break
                total += len(chunk)
    return time.monotonic() - start, total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--like", default="tinyllama-1.1b", help="atq synth preset (default tinyllama-1.1b)")
    parser.add_argument("--layers", type=int, default=0, help="keep only the first N blocks (0: all)")
    parser.add_argument("--atq", default=os.path.join(ROOT, "build", "atq"))
    parser.add_argument("--work", default=os.path.join(ROOT, "out", "large_model", "work"),
                        help="folder for the checkpoint and outputs (needs about 2.5x the bf16 model's size)")
    parser.add_argument("--out", default="", help="JSON report (default out/large_model/<like>.json)")
    parser.add_argument("--gptq-samples", type=int, default=32)
    parser.add_argument("--gptq-seqlen", type=int, default=512)
    parser.add_argument("--skip", default="",
                        help="comma-separated runs to leave out: rtn-q4_0, gptq-4-g128, rtn-ternary, run-q4_0 "
                             "(perplexity and generate of rtn-q4_0's outputs)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--reuse", action="store_true",
                        help="keep a checkpoint an earlier run synthesized in --work instead of writing it again")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    tag = args.like + (f"-{args.layers}l" if args.layers else "")
    out = args.out or os.path.join(ROOT, "out", "large_model", tag + ".json")
    work = os.path.join(args.work, tag)
    os.makedirs(work, exist_ok=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    calib = os.path.join(ROOT, "data", "corpus", "train.txt")
    text = os.path.join(ROOT, "data", "corpus", "test.txt")
    for path in (args.atq, calib, text):
        if not os.path.exists(path):
            sys.exit(f"{path}: missing (build atq and run scripts/setup.sh first)")
    threads = ["--threads", str(args.threads)] if args.threads else []
    report = {"model": args.like, "layers": args.layers or "all", "runs": {}}
    if args.reuse and os.path.exists(out):
        # Keep the runs an earlier invocation measured; the ones run now replace theirs (each run says its commit).
        with open(out) as f:
            report["runs"] = json.load(f).get("runs", {})
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    log = open(os.path.join(work, "log.txt"), "w")

    model = os.path.join(work, "model")
    synth = [args.atq, "synth", "--like", args.like, "--out", model, "--dtype", "bf16"]
    if args.layers:
        synth += ["--layers", str(args.layers)]
    if args.reuse and os.path.exists(os.path.join(model, "config.json")):
        print(f"== synth: reusing {model}", flush=True)
    else:
        report["runs"]["synth"] = run_sampled("synth", synth, log)
    report["input_bytes"] = folder_bytes(model)
    seconds, total = sequential_read(model)
    report["sequential_read"] = {"seconds": round(seconds, 3), "bytes": total,
                                 "gb_per_s": round(total / seconds / 1e9, 3)}
    print(f"== sequential read: {total / 1e9:.2f} GB in {seconds:.1f} s", flush=True)
    # Memory read bandwidth by atq bench's STREAM-style loop (threads 1 and 2): what bounds batch-1 decode.
    bandwidth_json = os.path.join(work, "bandwidth.json")
    subprocess.run([args.atq, "bench", "--shapes", "256x256", "--types", "q8_0", "--json", bandwidth_json],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(bandwidth_json) as f:
        bandwidth = json.load(f)["read_bandwidth_gbps"]
    report["memory_read_gb_per_s"] = max(bandwidth.values())
    print(f"== memory read bandwidth: {report['memory_read_gb_per_s']:.1f} GB/s", flush=True)

    runs = {
        "rtn-q4_0": ["quantize", model, "--method", "rtn", "--format", "q4_0", "--nsamples", "0",
                     "--out", os.path.join(work, "rtn-q4_0"), "--gguf", os.path.join(work, "q4_0.gguf")],
        "gptq-4-g128": ["quantize", model, "--method", "gptq", "--bits", "4", "--group-size", "128",
                        "--nsamples", str(args.gptq_samples), "--seqlen", str(args.gptq_seqlen), "--calib", calib,
                        "--out", os.path.join(work, "gptq-4-g128")],
        "rtn-ternary": ["quantize", model, "--method", "rtn", "--ternary", "--nsamples", "0",
                        "--out", os.path.join(work, "rtn-ternary"), "--gguf", os.path.join(work, "tq2_0.gguf"),
                        "--gguf-type", "tq2_0"],
    }
    for name, command in runs.items():
        if name in skip:
            continue
        report["runs"][name] = run_sampled(name, [args.atq] + command + threads, log)
        report["runs"][name]["commit"] = commit
        report["runs"][name]["output_bytes"] = folder_bytes(os.path.join(work, name))
        with open(os.path.join(work, name, "quantize_report.json")) as f:
            quantized = json.load(f)
        report["runs"][name]["quantize_seconds"] = quantized["total_seconds"]
        report["runs"][name]["calibration_seconds"] = quantized["calibration_seconds"]
        report["runs"][name]["bits_per_weight"] = quantized["bits_per_weight"]
        with open(os.path.join(model, "config.json")) as f:
            blocks = json.load(f)["num_hidden_layers"]
        report["runs"][name]["blocks"] = blocks
        # Block by block: the calibration forward passes and the quantization of one block's layers.
        report["runs"][name]["seconds_per_block"] = round(quantized["total_seconds"] / blocks, 3)
        if "gguf" in quantized:
            report["runs"][name]["gguf_bytes"] = quantized["gguf"]["file_bytes"]

    if "run-q4_0" not in skip:
        for label, path in (("gguf-q4_0", os.path.join(work, "q4_0.gguf")),
                            ("packed-q4_0", os.path.join(work, "rtn-q4_0"))):
            file_bytes = folder_bytes(path)
            ppl_json = os.path.join(work, label + "-perplexity.json")
            run = run_sampled(label + " perplexity", [args.atq, "perplexity", path, "--text", text, "--ctx", "256",
                                                      "--max-windows", "2", "--batch", "1", "--json", ppl_json]
                              + threads, log)
            with open(ppl_json) as f:
                run["result"] = json.load(f)
            run["file_bytes"] = file_bytes
            run["commit"] = commit
            # Mapped file pages are not anonymous: peak RssAnon is what the run holds beyond the file; VmHWM minus
            # the file size is the same bound counting every page (a mapped page is resident at most once).
            run["resident_beyond_file_bytes"] = run["peak_vm_hwm_bytes"] - file_bytes
            report["runs"][label + " perplexity"] = run
            gen_json = os.path.join(work, label + "-generate.json")
            run = run_sampled(label + " generate", [args.atq, "generate", path, "--prompt", "The history of",
                                                    "--max-tokens", "32", "--json", gen_json] + threads, log)
            with open(gen_json) as f:
                run["result"] = json.load(f)
            run["file_bytes"] = file_bytes
            run["commit"] = commit
            run["resident_beyond_file_bytes"] = run["peak_vm_hwm_bytes"] - file_bytes
            # Batch-1 decode reads every weight once per token: the memory read bandwidth measured above over the
            # bytes per token bounds tokens/s from above.
            run["memory_bound_tokens_per_s"] = round(report["memory_read_gb_per_s"] * 1e9 / file_bytes, 3)
            report["runs"][label + " generate"] = run

    with open(out + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(out + ".tmp", out)
    print(f"report: {out}")


if __name__ == "__main__":
    main()
