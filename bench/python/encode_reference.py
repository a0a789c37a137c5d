#!/usr/bin/python3
"""OpenCLIP's CLIP model (v2.23) written with plain torch.nn, for side-by-side speed.

OpenCLIP cannot be installed here (no PyPI), but Debian's python3-torch can, and
it is the LibTorch 1.13 oclip links. This file rebuilds the modules OpenCLIP's
`CLIP` class is made of, with its state-dict key names and its forward math, so
that the Python side of `bench/run.sh` runs what a Python OpenCLIP user runs:

  * VisionTransformer: patchify conv (no bias), class token, positional
    embedding, ln_pre, sequence-first Transformer of pre-LN residual blocks
    (nn.MultiheadAttention + c_fc/GELU-or-QuickGELU/c_proj MLP), ln_post on all
    tokens, token 0, @ proj.
  * ModifiedResNet (RN50 and friends): 3-conv stem + avgpool, Bottleneck
    stages with anti-aliasing avgpool strides, attention pool whose query row 0
    (the spatial mean token) is projected by c_proj.
  * Text tower flattened at the top level: token + positional embedding,
    Transformer with a causal mask (non-persistent buffer), ln_final,
    argmax (EOT) pooling, @ text_projection.

Two modes (run with /usr/bin/python3, i.e. Debian's python3-torch):

  encode_reference.py --check [--reference-dir DIR]
      loads the tiny fixture models' safetensors (parsed here: 8-byte header
      length, JSON header, raw little-endian data), encodes the reference
      preprocessed images and tokens and compares with OpenCLIP's features
      (max |diff| <= 1e-4 + 1e-4*|expected|), and the bf16 and int8 variants
      the benchmark runs (min cosine >= 0.99); checks that ViT-B-32 and RN50
      have OpenCLIP's config, state-dict keys/shapes and parameter count
      (manifest.json); exits 1 on any mismatch.

  encode_reference.py --encode --config CONFIG.json --checkpoint MODEL.safetensors
      --images IMAGES.npy --tokens TOKENS.npy --output DIR
      builds the model of an OpenCLIP config file, loads a checkpoint written
      by `oclip train` with load_state_dict(strict=True) (every key OpenCLIP's
      model has, no other), and writes the unnormalized features of the
      preprocessed images [N, 3, S, S] and of the token ids [M, context]
      (float32 .npy; ids are whole numbers) as DIR/image_features.npy and
      DIR/text_features.npy: Python reading oclip's training checkpoints
      (tests/training/train_e2e_test.cc compares them with `oclip encode`).

  encode_reference.py --model ViT-B-32|RN50 --precision fp32|bf16|int8
      [--batch-images 32] [--batch-texts 128] [--threads 2] [--seconds 10]
      random weights, random images, captions of 12 tokens (start, 10 ids,
      end) padded with zeros to 77, one warm-up call then a timed loop (at
      least 2 calls) per tower; prints one JSON line. bf16 is what a Python
      user does (`model.to(torch.bfloat16)`, bf16 images), int8 is
      `torch.quantization.quantize_dynamic(model, {nn.Linear}, torch.qint8)`.
"""
import argparse
import copy
import json
import math
import os
import struct
import sys
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------
# Configs: OpenCLIP's model_configs/*.json (the tiny ones are the fixtures').

CONFIGS = {
    "ViT-B-32": {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
                     "layers": 12},
    },
    "RN50": {
        "embed_dim": 1024,
        "vision_cfg": {"image_size": 224, "layers": [3, 4, 6, 3], "width": 64,
                       "patch_size": None},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
                     "layers": 12},
    },
    "tiny-vit": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 16,
                       "head_width": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                     "layers": 2},
    },
    "tiny-vit-quickgelu": {
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 16,
                       "head_width": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                     "layers": 2},
    },
    "tiny-vit-h": {
        "embed_dim": 48,
        "vision_cfg": {"image_size": 56, "layers": 2, "width": 160, "head_width": 80,
                       "mlp_ratio": 4.3637, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 96, "heads": 3,
                     "layers": 1},
    },
    "tiny-rn": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": [1, 2, 1, 1], "width": 16,
                       "patch_size": None},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                     "layers": 2},
    },
}
TINY_MODELS = ["tiny-vit", "tiny-vit-quickgelu", "tiny-vit-h", "tiny-rn"]
SOT, EOT = 49406, 49407

# ----------------------------------------------------------------------------
# Shared transformer pieces.


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm whose output has the input's dtype (OpenCLIP's subclass)."""

    def forward(self, x):
        dtype = x.dtype
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).to(dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); inputs (L, N, D)."""

    def __init__(self, width, heads, mlp_ratio, act_layer):
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, hidden)),
            ("gelu", act_layer()),
            ("c_proj", nn.Linear(hidden, width)),
        ]))

    def forward(self, x, attn_mask=None):
        if attn_mask is not None:
            attn_mask = attn_mask.to(x.dtype)
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, mlp_ratio, act_layer):
        super().__init__()
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio, act_layer) for _ in range(layers)])

    def get_cast_dtype(self):
        # OpenCLIP's rule: the dtype of the first MLP weight, unless the layer
        # says what it was before int8 conversion.
        c_fc = self.resblocks[0].mlp.c_fc
        if hasattr(c_fc, "int8_original_dtype"):
            return c_fc.int8_original_dtype
        return c_fc.weight.dtype

    def forward(self, x, attn_mask=None):
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        return x


# ----------------------------------------------------------------------------
# Image towers.


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, width, layers, heads, mlp_ratio, output_dim,
                 act_layer):
        super().__init__()
        self.image_size = image_size
        grid = image_size // patch_size
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio, act_layer)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x):
        x = self.conv1(x)  # [N, w, g, g]
        n, w = x.shape[0], x.shape[1]
        x = x.reshape(n, w, -1).permute(0, 2, 1)  # [N, g*g, w], row-major patches
        cls = self.class_embedding.to(x.dtype) + torch.zeros(n, 1, w, dtype=x.dtype)
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)
        x = self.ln_post(x)
        return x[:, 0] @ self.proj


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            # Child names "-1", "0", "1": the checkpoints' keys are downsample.0/1.
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x):
        identity = x
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.act3(out + identity)


class AttentionPool2d(nn.Module):
    """One multi-head attention over [mean token; HW tokens], output row 0."""

    def __init__(self, spatial, embed_dim, num_heads, output_dim):
        super().__init__()
        self.positional_embedding = nn.Parameter(
            torch.randn(spatial * spatial + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x):
        n, c, h, w = x.shape
        x = x.reshape(n, c, h * w).permute(2, 0, 1)  # (HW, N, C)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x, key=x, value=x, embed_dim_to_check=c, num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight, in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False)
        return x[0]


class ModifiedResNet(nn.Module):
    def __init__(self, layers, output_dim, heads, image_size, width):
        super().__init__()
        self.image_size = image_size
        half = width // 2
        self.conv1 = nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(half, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.act3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        embed = width * 32
        self.attnpool = AttentionPool2d(image_size // 32, embed, heads, output_dim)

    def _make_layer(self, planes, blocks, stride=1):
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.act3(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


# ----------------------------------------------------------------------------
# CLIP: image tower under visual.*, text tower flattened at the top level.


class CLIP(nn.Module):
    def __init__(self, config):
        super().__init__()
        embed_dim = config["embed_dim"]
        act_layer = QuickGELU if config.get("quick_gelu", False) else nn.GELU
        v = config["vision_cfg"]
        if isinstance(v["layers"], (list, tuple)):
            heads = v["width"] * 32 // v.get("head_width", 64)
            self.visual = ModifiedResNet(v["layers"], embed_dim, heads, v["image_size"],
                                         v["width"])
        else:
            heads = v["width"] // v.get("head_width", 64)
            self.visual = VisionTransformer(v["image_size"], v["patch_size"], v["width"],
                                            v["layers"], heads, v.get("mlp_ratio", 4.0),
                                            embed_dim, act_layer)
        t = config["text_cfg"]
        width, context = t["width"], t["context_length"]
        self.transformer = Transformer(width, t["layers"], t["heads"], t.get("mlp_ratio", 4.0),
                                       act_layer)
        self.token_embedding = nn.Embedding(t["vocab_size"], width)
        self.positional_embedding = nn.Parameter(torch.empty(context, width))
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        mask = torch.full((context, context), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def encode_image(self, image):
        return self.visual(image)

    def encode_text(self, text):
        cast_dtype = self.transformer.get_cast_dtype()
        x = self.token_embedding(text).to(cast_dtype)
        x = x + self.positional_embedding.to(cast_dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = x.permute(1, 0, 2)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0]), text.argmax(dim=-1)]  # EOT has the highest id
        return x @ self.text_projection


# ----------------------------------------------------------------------------
# safetensors, parsed by hand.

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


def load_safetensors(path):
    """Every tensor of a .safetensors file, as a dict of (copied) torch tensors."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if 8 + header_len > len(data):
        raise ValueError(f"{path}: header length {header_len} past the end of the file")
    header = json.loads(data[8:8 + header_len])
    body = memoryview(data)[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: {name}: unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = info["shape"]
        count = math.prod(shape)
        if end - begin != count * torch.empty((), dtype=dtype).element_size() or end > len(body):
            raise ValueError(f"{path}: {name}: data offsets {begin}..{end} do not fit {shape}")
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        raw = bytearray(body[begin:end])  # writable copy; safetensors data is little-endian
        tensors[name] = torch.frombuffer(raw, dtype=dtype).reshape(shape)
    return tensors


# ----------------------------------------------------------------------------
# --check: parity with OpenCLIP's outputs on the tiny fixtures.

ATOL = 1e-4
RTOL = 1e-4


def compare(what, actual, expected):
    if actual.shape != expected.shape:
        print(f"FAIL {what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
        return False
    diff = (actual.double() - expected.double()).abs()
    bound = ATOL + RTOL * expected.double().abs()
    ok = bool((diff <= bound).all())
    print(f"{'ok  ' if ok else 'FAIL'} {what}: max |diff| {diff.max().item():.3g} "
          f"(max |expected| {expected.abs().max().item():.3g})")
    return ok


MIN_COSINE = 0.99


def check_reduced_precision(name, model, images, tokens, expected):
    """The benchmark's bf16 and int8 variants still compute this model.

    Their features are compared by cosine similarity (min over rows) with
    OpenCLIP's fp32 features; measured >= 0.9989 on the tiny models.
    """
    ok = True
    for precision in ("bf16", "int8"):
        variant, inputs = copy.deepcopy(model), images
        if precision == "bf16":
            variant, inputs = variant.to(torch.bfloat16), images.to(torch.bfloat16)
        else:
            variant = quantize_int8(variant)
        with torch.inference_mode():
            features = {"image_features": variant.encode_image(inputs).float(),
                        "text_features": variant.encode_text(tokens).float()}
        for key, actual in features.items():
            cosine = F.cosine_similarity(actual, expected[key], dim=-1).min().item()
            passed = cosine >= MIN_COSINE
            ok &= passed
            print(f"{'ok  ' if passed else 'FAIL'} {name} {precision} {key}: min cosine "
                  f"{cosine:.5f} with OpenCLIP's fp32 (floor {MIN_COSINE})")
    return ok


def check_real_size(name, reference_dir, manifest):
    """The benchmark's model has OpenCLIP's config, keys, shapes and parameter count."""
    entry = manifest[name]
    with open(os.path.join(reference_dir, "configs", name + ".json")) as f:
        config = json.load(f)
    ok = config == CONFIGS[name] == entry["config"]
    model = CLIP(CONFIGS[name])
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    params = sum(p.numel() for p in model.parameters())
    ok &= shapes == entry["state_dict"] and params == entry["params"]
    missing = sorted(set(entry["state_dict"]) - set(shapes))
    extra = sorted(set(shapes) - set(entry["state_dict"]))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {len(shapes)} state-dict keys and shapes, "
          f"{params:,} parameters (OpenCLIP: {len(entry['state_dict'])}, {entry['params']:,})"
          + (f"; missing {missing[:3]}, extra {extra[:3]}" if missing or extra else ""))
    return ok


def check(reference_dir):
    tokens = load_safetensors(os.path.join(reference_dir, "tokens.safetensors"))["tokens"]
    all_ok = True
    with open(os.path.join(reference_dir, "manifest.json")) as f:
        manifest = json.load(f)
    for name in ("ViT-B-32", "RN50"):
        all_ok &= check_real_size(name, reference_dir, manifest)
    for name in TINY_MODELS:
        with open(os.path.join(reference_dir, name + ".json")) as f:
            fixture_config = json.load(f)
        if fixture_config != CONFIGS[name]:
            print(f"FAIL {name}: built-in config differs from {name}.json: {fixture_config}")
            all_ok = False
            continue
        model = CLIP(CONFIGS[name]).eval()
        state = load_safetensors(os.path.join(reference_dir, name + ".safetensors"))
        # Strict: every key of the checkpoint is one of ours and vice versa.
        model.load_state_dict(state, strict=True)
        expected = load_safetensors(os.path.join(reference_dir, name + ".expected.safetensors"))
        with torch.inference_mode():
            image_features = model.encode_image(expected["images"])
            text_features = model.encode_text(tokens)
        all_ok &= compare(f"{name} image_features {tuple(expected['images'].shape)}",
                          image_features, expected["image_features"])
        all_ok &= compare(f"{name} text_features {tuple(tokens.shape)}", text_features,
                          expected["text_features"])
        all_ok &= compare(f"{name} logit_scale", model.logit_scale.detach().reshape(
            expected["logit_scale"].shape), expected["logit_scale"])
        all_ok &= check_reduced_precision(name, model, expected["images"], tokens, expected)
    print(f"tolerance: fp32 |actual - expected| <= {ATOL} + {RTOL} * |expected|, elementwise; "
          f"bf16/int8 min cosine >= {MIN_COSINE}")
    if not all_ok:
        print("MISMATCH: the reference model does not compute what OpenCLIP computes")
        return 1
    print(f"all {len(TINY_MODELS)} tiny models match OpenCLIP's features; ViT-B-32 and RN50 "
          "have OpenCLIP's state-dict layout")
    return 0


# ----------------------------------------------------------------------------
# --encode: a checkpoint written by `oclip train`, in OpenCLIP's model.


def encode(args):
    import numpy as np

    with open(args.config) as f:
        config = json.load(f)
    model = CLIP(config).eval()
    model.load_state_dict(load_safetensors(args.checkpoint), strict=True)
    images = torch.from_numpy(np.load(args.images)).float()
    tokens = torch.from_numpy(np.load(args.tokens)).round().long()
    with torch.inference_mode():
        image_features = model.encode_image(images)
        text_features = model.encode_text(tokens)
    os.makedirs(args.output, exist_ok=True)
    np.save(os.path.join(args.output, "image_features.npy"),
            image_features.float().numpy().astype("<f4"))
    np.save(os.path.join(args.output, "text_features.npy"),
            text_features.float().numpy().astype("<f4"))
    print(json.dumps({"images": list(images.shape), "texts": list(tokens.shape),
                      "keys": len(model.state_dict())}))
    return 0


# ----------------------------------------------------------------------------
# Benchmark.


def benchmark_tokens(batch, context, generator):
    """Captions of 12 tokens: start, 10 ids in [1, 1000), end, zero padding."""
    tokens = torch.zeros(batch, context, dtype=torch.long)
    tokens[:, 1:11] = torch.randint(1, 1000, (batch, 10), generator=generator)
    tokens[:, 0] = SOT
    tokens[:, 11] = EOT
    return tokens


def measure(seconds, items_per_call, call):
    """One warm-up call, then calls until `seconds` have passed (at least 2)."""
    call()
    calls, start = 0, time.perf_counter()
    elapsed = 0.0
    while calls < 2 or elapsed < seconds:
        call()
        calls += 1
        elapsed = time.perf_counter() - start
    return calls * items_per_call / elapsed


def quantize_int8(model):
    """torch.quantization.quantize_dynamic(model, {nn.Linear}, torch.qint8), as a user writes it.

    Two places of OpenCLIP v2.23 read a Linear's `.weight` as a tensor, which a
    dynamically quantized Linear no longer has (it is a method there):
    Transformer.get_cast_dtype (text tower) and ModifiedResNet's attention pool.
    OpenCLIP's own escape hatch for the first is `int8_original_dtype` on c_fc;
    for the second the attention pool's Linear layers stay fp32, so that an RN
    image tower has nothing left to quantize (its convolutions are not Linear):
    RN int8 image rates are fp32 rates. nn.MultiheadAttention's in-projection
    is a bare parameter and its out_proj a NonDynamicallyQuantizableLinear, so
    in every tower only the MLPs (c_fc, c_proj) become int8.
    """
    spec = {nn.Linear}
    if isinstance(model.visual, ModifiedResNet):
        qconfig = torch.quantization.default_dynamic_qconfig
        spec = {nn.Linear: qconfig}
        for child in ("q_proj", "k_proj", "v_proj", "c_proj"):
            spec[f"visual.attnpool.{child}"] = None
    model = torch.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
    model.transformer.resblocks[0].mlp.c_fc.int8_original_dtype = torch.float32
    return model


def bench(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = CONFIGS[args.model]
    model = CLIP(config).eval()
    image_dtype = torch.float32
    if args.precision == "bf16":
        model = model.to(torch.bfloat16)
        image_dtype = torch.bfloat16
    elif args.precision == "int8":
        model = quantize_int8(model)
    size = config["vision_cfg"]["image_size"]
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch_images, 3, size, size, generator=generator).to(image_dtype)
    tokens = benchmark_tokens(args.batch_texts, config["text_cfg"]["context_length"], generator)
    with torch.inference_mode():
        image_rate = measure(args.seconds, args.batch_images, lambda: model.encode_image(images))
        text_rate = measure(args.seconds, args.batch_texts, lambda: model.encode_text(tokens))
    print(json.dumps({
        "implementation": "python", "model": args.model, "precision": args.precision,
        "batch_images": args.batch_images, "batch_texts": args.batch_texts,
        "images_per_second": image_rate, "texts_per_second": text_rate,
        "threads": torch.get_num_threads(), "torch_version": torch.__version__,
    }))
    return 0


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_reference = os.path.normpath(os.path.join(here, "..", "..", "..", "shared",
                                                      "reference"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with OpenCLIP's outputs on the tiny fixture models")
    parser.add_argument("--reference-dir",
                        default=os.environ.get("OCLIP_REFERENCE_DIR", default_reference))
    parser.add_argument("--encode", action="store_true",
                        help="encode with a checkpoint of `oclip train` (see the usage above)")
    for flag in ("config", "checkpoint", "images", "tokens", "output"):
        parser.add_argument("--" + flag, help="for --encode")
    parser.add_argument("--model", choices=["ViT-B-32", "RN50"] + TINY_MODELS)
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32")
    parser.add_argument("--batch-images", type=int, default=32)
    parser.add_argument("--batch-texts", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.check:
        try:
            return check(args.reference_dir)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            # A missing or malformed fixture, or a state dict that does not fit.
            print(f"encode_reference.py: --check failed: {type(error).__name__}: {error}",
                  file=sys.stderr)
            return 1
    if args.encode:
        missing = [flag for flag in ("config", "checkpoint", "images", "tokens", "output")
                   if getattr(args, flag) is None]
        if missing:
            parser.error("--encode needs " + ", ".join("--" + flag for flag in missing))
        try:
            return encode(args)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            # A missing file, or a checkpoint whose keys/shapes are not the model's.
            print(f"encode_reference.py: --encode failed: {type(error).__name__}: {error}",
                  file=sys.stderr)
            return 1
    if args.model is None:
        parser.error("--model is required unless --check is given")
    for flag in ("batch_images", "batch_texts", "threads"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.seconds < 0:
        parser.error("--seconds must not be negative")
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
