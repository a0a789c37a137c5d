#!/usr/bin/python3
"""CLIP's BPE tokenizer written the way OpenCLIP's Python SimpleTokenizer
works (same regex module, same merge loop, same per-word cache), for
side-by-side timing. ftfy is not installed here, so its fix_text step is
skipped: the Python figure is, if anything, faster than OpenCLIP's.

Usage: tokenize_reference.py BPE_GZ SECONDS [TEXTS_FILE]. Prints one JSON line.
"""
import gzip
import html
import json
import random
import sys
import time

import numpy as np
import regex


def byte_table():
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars)))


class Tokenizer:
    def __init__(self, bpe_path, context_length=77):
        merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
        merges = [tuple(m.split()) for m in merges]
        self.byte_encoder = byte_table()
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
        vocab += ["<start_of_text>", "<end_of_text>"]
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {"<start_of_text>": "<start_of_text>", "<end_of_text>": "<end_of_text>"}
        self.pattern = regex.compile(
            r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE)
        self.sot, self.eot = self.encoder["<start_of_text>"], self.encoder["<end_of_text>"]
        self.context_length = context_length

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        self.cache[token] = " ".join(word)
        return self.cache[token]

    def encode(self, text):
        text = html.unescape(html.unescape(text)).strip()
        text = regex.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for token in regex.findall(self.pattern, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(token).split(" "))
        return ids

    def __call__(self, texts):
        result = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for i, text in enumerate(texts):
            tokens = [self.sot] + self.encode(text) + [self.eot]
            if len(tokens) > self.context_length:
                tokens = tokens[:self.context_length]
                tokens[-1] = self.eot
            result[i, :len(tokens)] = tokens
        return result


def synthetic_captions(count):
    words = ["dog", "cat", "beach", "red", "running", "old", "city", "street", "night",
             "mountain", "lake", "happy", "family", "wooden", "table", "with", "two", "people",
             "sunset", "vintage", "poster", "blue", "car", "garden"]
    rng = random.Random(12345)
    return ["A photo of " + " ".join(rng.choice(words) for _ in range(3 + i % 6)) + "."
            for i in range(count)]


def main():
    tokenizer = Tokenizer(sys.argv[1])
    seconds = float(sys.argv[2])
    texts = open(sys.argv[3]).read().split("\n") if len(sys.argv) > 3 else synthetic_captions(10000)
    tokenizer(texts)
    count, start = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - start < seconds:
        tokenizer(texts)
        count += 1
    rate = count * len(texts) / (time.perf_counter() - start)
    print(json.dumps({"benchmark": "tokenize", "implementation": "python-openclip-algorithm",
                      "texts": len(texts), "threads": 1, "texts_per_second": rate}))


if __name__ == "__main__":
    main()
