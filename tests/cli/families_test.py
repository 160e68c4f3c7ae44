#!/usr/bin/env python3
"""Every model family through the command line, on the arch-zoo fixtures (tiny random models made with
transformers, with its logits): `atq logits` matches transformers' logits; `atq quantize` (GPTQ 4-bit, groups of
32) writes a packed checkpoint that `atq perplexity`, `atq generate`, `atq logits` and `atq bench --model` run;
`--gguf` is refused by name before the work where atq does not write that family's GGUF yet. The fixtures have
no tokenizer: a 256-token llama2.c vocabulary of byte tokens is generated here.

Usage: families_test.py ATQ_BINARY   (ATQ_FIXTURES: the fixtures folder, default ../shared/fixtures)
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ATQ = sys.argv[1]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.environ.get("ATQ_FIXTURES", os.path.join(os.path.dirname(ROOT), "shared", "fixtures"))
ZOO = os.path.join(FIXTURES, "arch-zoo")
FAMILIES = ["llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "gpt2", "llama_mqa"]
# atq writes GGUF for llama (without llama3 RoPE scaling), qwen2 and gpt2 (without per-layer attention scaling):
# tests/models/lm_gguf_writer_test.cc tests them; these fixtures have no tokenizer to put into a GGUF.
GGUF_REFUSED = {"llama", "mistral", "gemma", "gemma2", "phi3", "gpt2"}
LOGIT_TOLERANCE = 1e-4         # float32 against transformers' float32 (the fixtures' README: within 2.4e-5 of f64)
TEXT = ("Once upon a time there was a little robot who liked to count the stars. Every night it climbed the hill "
        "behind the house, sat down in the grass and counted: one, two, three... ") * 12

failures = 0


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    size = struct.unpack_from("<Q", blob, 0)[0]
    header = json.loads(blob[8:8 + size])
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        data = blob[8 + size + begin:8 + size + end]
        fmt = {"F32": "f", "I64": "q"}[entry["dtype"]]  # what `atq logits` writes
        out[name] = (entry["shape"], struct.unpack(f"<{len(data) // struct.calcsize(fmt)}{fmt}", data))
    return out


def run(args, what):
    global failures
    result = subprocess.run([ATQ] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    if result.returncode != 0:
        failures += 1
        print(f"FAIL: {what}: exit {result.returncode}\n  {result.stderr.strip()[-600:]}")
        return None
    return result


def check(condition, what):
    global failures
    if not condition:
        failures += 1
        print(f"FAIL: {what}")
    return condition


def main():
    if not os.path.isdir(ZOO):
        print(f"skip: {ZOO} missing (set ATQ_FIXTURES)")
        return 0
    tmp = tempfile.mkdtemp(prefix="atq-families-")
    try:
        tokenizer = os.path.join(tmp, "tok256.bin")
        tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(253)]
        with open(tokenizer, "wb") as f:
            f.write(struct.pack("<i", max(len(t) for t in tokens)))
            for t in tokens:
                f.write(struct.pack("<fi", 0.0, len(t)) + t)
        text = os.path.join(tmp, "text.txt")
        with open(text, "w") as f:
            f.write(TEXT)
        common = ["--tokenizer", tokenizer]
        for family in FAMILIES:
            folder = os.path.join(ZOO, family)
            reference = os.path.join(folder, "reference.safetensors")
            expected = read_safetensors(reference)["logits"][1]
            out = os.path.join(tmp, f"{family}.logits.safetensors")
            if run(["logits", folder, "--ids-from", reference, "--out", out], f"{family}: logits"):
                got = read_safetensors(out)["logits"][1]
                error = max(abs(a - b) for a, b in zip(got, expected))
                check(len(got) == len(expected) and error <= LOGIT_TOLERANCE,
                      f"{family}: max |logit - transformers| {error:.2e} > {LOGIT_TOLERANCE}")
                print(f"{family}: float32 logits within {error:.2e} of transformers")
            packed = os.path.join(tmp, f"{family}-gptq4")
            quantize = ["quantize", folder, "--method", "gptq", "--bits", "4", "--group-size", "32", "--nsamples", "4",
                        "--seqlen", "32", "--calib", text, "--out", packed] + common
            if not run(quantize, f"{family}: quantize"):
                continue
            run(["perplexity", packed, "--text", text, "--ctx", "32"] + common, f"{family}: perplexity (packed)")
            run(["generate", packed, "--prompt", "Once", "--max-tokens", "4"] + common, f"{family}: generate (packed)")
            run(["bench", "--model", packed, "--model-types", "torch,q8_0,t2", "--prompt-tokens", "8"],
                f"{family}: bench --model")
            quantized = os.path.join(tmp, f"{family}.q.safetensors")
            if run(["logits", packed, "--ids-from", reference, "--out", quantized], f"{family}: logits (packed)"):
                got = read_safetensors(quantized)["logits"][1]
                scale = max(abs(v) for v in expected)
                error = max(abs(a - b) for a, b in zip(got, expected)) / scale
                # 4-bit weights and int8 activations: the logits move, but stay the same model's.
                check(error < 0.5, f"{family}: packed 4-bit logits off by {error:.2f} of the largest logit")
                print(f"{family}: packed GPTQ 4-bit logits within {error:.3f} x max|logit| of transformers' float32")
            if family in GGUF_REFUSED:
                refused = ["quantize", folder, "--method", "rtn", "--bits", "4", "--nsamples", "0", "--out",
                           packed + "-g", "--gguf", os.path.join(tmp, f"{family}.gguf")] + common
                result = subprocess.run([ATQ] + refused, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        errors="replace")
                check(result.returncode == 1 and "does not write GGUF files" in result.stderr and
                      "quantize:" not in result.stderr,
                      f"{family}: --gguf should be refused by name before the work, got exit {result.returncode}: "
                      f"{result.stderr.strip()[-300:]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"families: {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
