#!/usr/bin/env python3
"""Every model family through the command line, on the arch-zoo fixtures (tiny random models made with
transformers, with its logits): `atq logits` matches transformers' logits; `atq quantize` (GPTQ 4-bit, groups of
32, with a GGUF beside it) writes a packed checkpoint that `atq perplexity`, `atq generate`, `atq logits` and
`atq bench --model` run, as do ATQ ternary and RTN mixed-precision checkpoints; `atq convert --gguf` writes an f32 GGUF whose logits are transformers' again and which
every command runs, and `atq convert --hf` writes the folder back. The fixtures have no tokenizer: a copy of each
gets a 256-token byte-level tokenizer.json. The arch-zoo GPT-2 scales attention by the inverse layer index, which
llama.cpp's gpt2 cannot run: its GGUF is refused by name.

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
GGUF_REFUSED = {"gpt2"}  # scale_attn_by_inverse_layer_idx
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


def gpt2_byte_alphabet():
    """GPT-2's bytes_to_unicode(): the printable character each byte is spelled with, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    spelled, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            spelled[byte] = chr(byte)
        else:
            spelled[byte] = chr(256 + extra)
            extra += 1
    return [spelled[b] for b in range(256)]


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
        byte_alphabet = gpt2_byte_alphabet()
        tokenizer_json = {
            "version": "1.0", "added_tokens": [], "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "vocab": {c: i for i, c in enumerate(byte_alphabet)}, "merges": []}}
        text = os.path.join(tmp, "text.txt")
        with open(text, "w") as f:
            f.write(TEXT)
        for family in FAMILIES:
            fixture = os.path.join(ZOO, family)
            folder = os.path.join(tmp, family)
            os.makedirs(folder)
            for name in ("config.json", "model.safetensors"):
                shutil.copy(os.path.join(fixture, name), folder)
            with open(os.path.join(folder, "tokenizer.json"), "w") as f:
                json.dump(tokenizer_json, f)
            reference = os.path.join(fixture, "reference.safetensors")
            expected = read_safetensors(reference)["logits"][1]

            def logits_error(model, what):
                out = os.path.join(tmp, f"{family}.logits.safetensors")
                if not run(["logits", model, "--ids-from", reference, "--out", out], f"{family}: logits ({what})"):
                    return None
                got = read_safetensors(out)["logits"][1]
                check(len(got) == len(expected), f"{family}: {what}: {len(got)} logits, expected {len(expected)}")
                return max(abs(a - b) for a, b in zip(got, expected))

            error = logits_error(folder, "Hugging Face folder")
            if error is not None:
                check(error <= LOGIT_TOLERANCE, f"{family}: max |logit - transformers| {error:.2e} > {LOGIT_TOLERANCE}")
                print(f"{family}: float32 logits within {error:.2e} of transformers")
            packed = os.path.join(tmp, f"{family}-gptq4")
            gguf_q = os.path.join(tmp, f"{family}-gptq4.gguf")
            quantize = ["quantize", folder, "--method", "gptq", "--bits", "4", "--group-size", "32", "--nsamples", "4",
                        "--seqlen", "32", "--calib", text, "--out", packed]
            if family not in GGUF_REFUSED:
                quantize += ["--gguf", gguf_q]
            if not run(quantize, f"{family}: quantize"):
                continue
            models = [(packed, "packed")] + ([(gguf_q, "quantized GGUF")] if family not in GGUF_REFUSED else [])
            for model, what in models:
                run(["perplexity", model, "--text", text, "--ctx", "32"], f"{family}: perplexity ({what})")
                run(["generate", model, "--prompt", "Once", "--max-tokens", "4"], f"{family}: generate ({what})")
                run(["bench", "--model", model, "--model-types", "torch,q8_0,t2", "--prompt-tokens", "8"],
                    f"{family}: bench --model ({what})")
                error = logits_error(model, what)
                if error is not None:
                    scale = max(abs(v) for v in expected)
                    # 4-bit weights and int8 activations: the logits move, but stay the same model's (the GGUF
                    # holds llama.cpp's q4_0/q4_1 grid, re-rounded from GPTQ's, so it moves a little more).
                    check(error / scale < 0.75, f"{family}: {what} 4-bit logits off by {error / scale:.2f} of the largest")
                    print(f"{family}: {what} GPTQ 4-bit logits within {error / scale:.3f} x max|logit| of transformers'")
            # The other methods and mixed precision: ATQ ternary, and RTN choosing per layer among ternary, 4 and 8
            # bits under a 5-bit budget; each checkpoint scored.
            for method, flags in (("atq", ["--ternary"]),
                                  ("rtn", ["--mixed-candidates", "ternary,4,8", "--mixed-budget", "5"])):
                other = os.path.join(tmp, f"{family}-{method}")
                if run(["quantize", folder, "--method", method, "--nsamples", "4", "--seqlen", "32", "--calib", text,
                        "--out", other] + flags, f"{family}: quantize --method {method} {' '.join(flags)}"):
                    run(["perplexity", other, "--text", text, "--ctx", "32"], f"{family}: perplexity ({method})")
            gguf = os.path.join(tmp, f"{family}-f32.gguf")
            convert = ["convert", folder, "--gguf", gguf, "--type", "f32"]
            if family in GGUF_REFUSED:
                result = subprocess.run([ATQ] + convert, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        errors="replace")
                check(result.returncode == 1 and "scale_attn_by_inverse_layer_idx" in result.stderr and
                      not os.path.exists(gguf),
                      f"{family}: GGUF should be refused by name, got exit {result.returncode}: "
                      f"{result.stderr.strip()[-300:]}")
                continue
            if not run(convert, f"{family}: convert --gguf f32"):
                continue
            error = logits_error(gguf, "f32 GGUF")
            if error is not None:
                check(error <= LOGIT_TOLERANCE, f"{family}: f32 GGUF max |logit - transformers| {error:.2e}")
                print(f"{family}: f32 GGUF logits within {error:.2e} of transformers")
            run(["perplexity", gguf, "--text", text, "--ctx", "32"], f"{family}: perplexity (f32 GGUF)")
            back = os.path.join(tmp, f"{family}-back")
            if run(["convert", gguf, "--hf", back], f"{family}: convert GGUF --hf"):
                error = logits_error(back, "GGUF written back as a Hugging Face folder")
                if error is not None:
                    check(error <= LOGIT_TOLERANCE, f"{family}: folder from GGUF max |logit - transformers| {error:.2e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"families: {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
