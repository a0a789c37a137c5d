#!/usr/bin/env bash
# Writes the fuzz targets' seed corpora into OUT_DIR/<target>/, generated from
# the Python OpenCLIP fixtures in shared/reference ($OCLIP_REFERENCE_DIR, else
# ../shared/reference): images, texts, tokenizer inputs, small safetensors,
# torch.save / TorchScript zips cut down from the fixture checkpoints, tar
# shards and CSV files built from the images, and serialized requests.
# Nothing is copied into the repository.
#
#   scripts/fuzz-seeds.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: $0 OUT_DIR}"
ref="${OCLIP_REFERENCE_DIR:-$(pwd)/../shared/reference}"
[ -d "$ref" ] || { echo "no reference fixtures at $ref" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"
# PIL (python3-pil, a test dependency) shrinks the fixture images; Debian's
# python3 has it where another python3 comes first on PATH.
py=python3
if ! python3 -c 'import PIL' 2>/dev/null && /usr/bin/python3 -c 'import PIL' 2>/dev/null; then
  py=/usr/bin/python3
fi
"$py" - "$ref" "$out" <<'PY'
import gzip, io, json, os, pickle, struct, sys, tarfile, types, zipfile

ref, out = sys.argv[1], sys.argv[2]
counter = {}

def seed(target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    n = counter.get(target, 0)
    counter[target] = n + 1
    with open(os.path.join(d, "seed-%03d" % n), "wb") as f:
        f.write(data)

def read(rel):
    with open(os.path.join(ref, rel), "rb") as f:
        return f.read()

# --- Images: the first byte picks the exact (0) or fast JPEG (1) path. The
# fixtures (up to 2162x762) are shrunk to at most 48 pixels a side in their
# own format and mode, plus the modes PIL treats apart (palette, LA, CMYK
# JPEG, progressive JPEG, GIF): small images keep the fuzzer fast.
images = {name: read("images/" + name) for name in sorted(os.listdir(os.path.join(ref, "images")))}
small_images = {n: b for n, b in images.items() if len(b) <= 20_000}
image_seeds = list(small_images.items())
try:
    from PIL import Image
    def encode(im, fmt, **kw):
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        return buf.getvalue()
    for name, data in images.items():
        im = Image.open(io.BytesIO(data))
        fmt = im.format
        im.thumbnail((48, 48))
        image_seeds.append((name, encode(im, fmt)))
        if name == "CLIP.png":
            image_seeds.append(("palette.png", encode(im.convert("P"), "PNG")))
            image_seeds.append(("palette.gif", encode(im.convert("P"), "GIF")))
        if name == "gray.jpg":
            la = im.convert("LA")
            image_seeds.append(("la.png", encode(la, "PNG")))
        if name == "landscape.jpg":
            image_seeds.append(("cmyk.jpg", encode(im.convert("CMYK"), "JPEG")))
            image_seeds.append(("progressive.jpg", encode(im, "JPEG", progressive=True)))
except ImportError:
    pass
for name, data in image_seeds:
    seed("image_preprocess", b"\x00" + data)
    if name.endswith(".jpg"):
        seed("image_preprocess", b"\x01" + data)

# --- Texts: the tokenizer fixtures' inputs.
texts = json.loads(read("texts.json"))["texts"] + json.loads(read("hf/texts.json"))["texts"]
texts = list(dict.fromkeys(texts))
for t in texts:
    b = t.encode("utf-8")
    for target in ("clip_tokenizer", "hf_bpe_tokenizer", "sentencepiece_tokenizer"):
        seed(target, b)

# --- Safetensors: the small token fixture, and one tensor of every dtype.
seed("safetensors", read("tokens.safetensors"))
def safetensors(tensors, metadata=None):
    header, blobs, offset = {}, b"", 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs += data
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blobs
sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
all_dtypes = safetensors([("t_" + d.lower(), d, [2, 3], bytes(range(6 * s))) for d, s in sizes.items()],
                         {"format": "pt"})
seed("safetensors", all_dtypes)
seed("safetensors", safetensors([("scalar", "F32", [], b"\0\0\x80?"), ("empty", "F32", [0, 4], b"")]))

# --- torch.save archives (zip + pickle). The fixture checkpoints are 15 MB:
# their pickles are kept whole, their storages cut to a few bytes.
def cut_archive(rel, keep_bytes):
    src = zipfile.ZipFile(os.path.join(ref, rel))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if "/data/" in info.filename:
                data = data[:keep_bytes]
            dst.writestr(info.filename, data)
    return buf.getvalue(), src

for rel in ("tiny-vit.bin", "tiny-vit.epoch_7.pt"):
    cut, src = cut_archive(rel, 16)
    seed("torch_archive", cut)
    seed("checkpoint", cut)
    for info in src.infolist():
        if info.filename.endswith("/data.pkl"):
            seed("pickle", src.read(info))

# A small complete torch.save archive written like torch.save does: a dict of
# two tensors over storages, pickled with torch's globals.
torch_mod = types.ModuleType("torch")
utils_mod = types.ModuleType("torch._utils")
coll = types.ModuleType("collections")
sys.modules.update({"torch": torch_mod, "torch._utils": utils_mod})
class FloatStorage: pass
class LongStorage: pass
FloatStorage.__module__ = LongStorage.__module__ = "torch"
torch_mod.FloatStorage, torch_mod.LongStorage = FloatStorage, LongStorage
def _rebuild_tensor_v2(*args): pass
_rebuild_tensor_v2.__module__ = "torch._utils"
utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
torch_mod._utils = utils_mod
from collections import OrderedDict
class StorageRef:
    def __init__(self, kind, key, numel): self.kind, self.key, self.numel = kind, key, numel
class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, OrderedDict())
    def __reduce__(self): return (_rebuild_tensor_v2, self.args)
class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", obj.kind, obj.key, "cpu", obj.numel)
        return None
state = OrderedDict()
state["visual.proj"] = Tensor(StorageRef(FloatStorage, "0", 6), 0, (2, 3), (3, 1))
state["logit_scale"] = Tensor(StorageRef(FloatStorage, "1", 1), 0, (), ())
state["positions"] = Tensor(StorageRef(LongStorage, "2", 4), 1, (3,), (1,))
checkpoint = {"epoch": 7, "name": "tiny", "state_dict": state}
for root in (state, checkpoint):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(root)
    pkl = buf.getvalue()
    seed("pickle", pkl)
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as dst:
        dst.writestr("archive/data.pkl", pkl)
        dst.writestr("archive/byteorder", "little")
        dst.writestr("archive/data/0", struct.pack("<6f", 1, 2, 3, 4, 5, 6))
        dst.writestr("archive/data/1", struct.pack("<f", 4.6))
        dst.writestr("archive/data/2", struct.pack("<4q", 1, 2, 3, 4))
        dst.writestr("archive/version", "3\n")
    seed("torch_archive", z.getvalue())
    seed("checkpoint", z.getvalue())

# The TorchScript fixture, cut down: the checkpoint target checks it up to the
# point where it would go to torch::jit::load.
cut, _ = cut_archive("tiny-vit-quickgelu.torchscript.pt", 16)
seed("checkpoint", cut)
seed("checkpoint", read("tokens.safetensors"))
seed("checkpoint", all_dtypes)
seed("checkpoint", b"\x80\x02}q\x00.")  # A legacy (pre-1.6) torch.save pickle.

# --- Webdataset shards built from the images and texts.
def shard(compress):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:" + compress, format=tarfile.USTAR_FORMAT) as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("__index__", b"x")
        for i, (name, data) in enumerate(sorted(small_images.items())[:3]):
            if len(data) > 20_000:
                continue
            ext = name.rsplit(".", 1)[1]
            add("00000/%06d.%s" % (i, ext), data)
            add("00000/%06d.txt" % i, texts[i % len(texts)].encode())
            add("00000/%06d.json" % i, json.dumps({"key": i}).encode())
        add("00000/000009.TXT", b"caption without an image")
        add("00000/noext", b"skipped")
    return buf.getvalue()
seed("webdataset", shard(""))
seed("webdataset", shard("gz"))

# --- CSV/TSV: the first byte picks the separator (0: tab, 1: comma).
rows = [("filepath", "title")] + [("images/%s" % n, t) for n, t in zip(sorted(images), texts)]
def csv_text(sep):
    def field(v):
        if any(c in v for c in (sep, '"', "\n", "\r")):
            return '"' + v.replace('"', '""') + '"'
        return v
    return "\r\n".join(sep.join(field(v) for v in row) for row in rows).encode()
seed("csv", b"\x00" + csv_text("\t"))
seed("csv", b"\x01" + csv_text(","))
seed("csv", b"\x01\xef\xbb\xbffilepath,title\n\na.jpg,\"quoted, with \"\"quotes\"\"\nand a newline\"\n")

# --- Serialized requests (proto/oclip/v1/clip.proto), hand-encoded; the first
# byte picks the message: 0 EncodeImageRequest, 1 EncodeTextRequest,
# 2 ClassifyRequest.
def varint(n):
    b = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            b += bytes([byte | 0x80])
        else:
            return b + bytes([byte])
def field(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data
def image_data(data): return field(1, data)
def image_uri(uri): return field(2, uri.encode())
model = field(1, b"ViT-B-32")
tiny = images.get("tiny.png", b"\x89PNG")
seed("server_request", b"\x00" + model + field(2, image_data(tiny[:60])) + b"\x18\x01")
seed("server_request", b"\x00" + model + field(2, image_uri("file:///data/a.jpg")) +
     field(2, image_uri("file:///data/../etc/passwd")))
seed("server_request", b"\x01" + model + b"".join(field(2, t.encode()[:40]) for t in texts[:4]))
seed("server_request", b"\x02" + model + field(2, image_data(b"\xff\xd8\xff")) +
     field(3, b"dog") + field(3, b"cat") + field(4, b"a photo of a {}.") + b"\x28\x02")
for target, n in sorted(counter.items()):
    print("%-24s %d seeds" % (target, n))
PY
