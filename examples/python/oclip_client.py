#!/usr/bin/env python3
"""A Python client of `oclip serve` (gRPC API oclip.v1.Clip).

Use it as a module:

    from oclip_client import OclipClient
    with OclipClient("localhost:50051", stubs_dir="/tmp/oclip-stubs") as client:
        features = client.encode_images(["cat.jpg", "dog.png"], normalize=True)  # [2, D]
        texts = client.encode_texts(["a cat", "a dog"], normalize=True)          # [2, D]
        similarity = features @ texts.T

or from the command line:

    oclip_client.py --stubs /tmp/oclip-stubs --address localhost:50051 \
        encode-image --image cat.jpg --image dog.png --normalize --output out/
    oclip_client.py ... encode-text --text "a cat" --text "a dog" --output out/
    oclip_client.py ... classify --image cat.jpg --label cat --label dog
    oclip_client.py ... models
    oclip_client.py ... health

`encode-image` / `encode-text` write OUTPUT/image_features.npy /
OUTPUT/text_features.npy (float32 [N, D], rows in argument order), the files
`oclip encode` writes; the other commands print JSON.

The message classes are generated from proto/ by generate_stubs.sh into a
directory given by `stubs_dir` / `--stubs` or the OCLIP_PY_STUBS environment
variable. Needs grpcio, protobuf and numpy (Debian: python3-grpcio,
python3-protobuf, python3-numpy).

Errors of the server arrive as grpc.RpcError (see clip.proto for what each
status code means); the command line prints them as one line and exits 1.
"""

import argparse
import importlib
import json
import os
import sys

import grpc
import numpy as np
from google.protobuf import json_format

STUBS_ENV = "OCLIP_PY_STUBS"
# Image arguments with these prefixes are sent as URIs for the server to read
# (it accepts only the prefixes its operator allows); anything else is a file
# read here and sent as bytes.
URI_PREFIXES = ("file://", "http://", "https://")


def load_stubs(stubs_dir=None):
    """Imports the generated modules; returns (clip_pb2, clip_pb2_grpc, health_pb2,
    health_pb2_grpc). `stubs_dir` (or $OCLIP_PY_STUBS) is put first on sys.path."""
    stubs_dir = stubs_dir or os.environ.get(STUBS_ENV)
    if stubs_dir:
        stubs_dir = os.path.abspath(stubs_dir)
        if stubs_dir not in sys.path:
            sys.path.insert(0, stubs_dir)
    try:
        modules = [
            importlib.import_module(name)
            for name in (
                "oclip.v1.clip_pb2",
                "oclip.v1.clip_pb2_grpc",
                # From grpcio-health-checking if installed, else generated.
                "grpc_health.v1.health_pb2",
                "grpc_health.v1.health_pb2_grpc",
            )
        ]
    except ImportError as error:
        raise ImportError(
            f"cannot import the oclip gRPC stubs ({error}); generate them with "
            f"examples/python/generate_stubs.sh DIR and pass --stubs DIR or set {STUBS_ENV}"
        ) from error
    return tuple(modules)


class OclipClient:
    """A connection to one `oclip serve`. Thread-safe, like the gRPC channel
    under it. Every call takes the client's `timeout` (seconds) as deadline."""

    def __init__(
        self,
        address,
        token=None,
        root_certificates=None,
        private_key=None,
        certificate_chain=None,
        server_name=None,
        timeout=60.0,
        stubs_dir=None,
    ):
        """address: HOST:PORT. token: a bearer token, sent as
        `authorization: Bearer TOKEN` metadata (use TLS so that it is not sent in
        clear over a network). root_certificates: PEM bytes of the CA that signed
        the server's certificate: connect with TLS; private_key and
        certificate_chain (PEM bytes) add a client certificate (mTLS);
        server_name overrides the name checked in the server's certificate."""
        (self._clip_pb2, clip_pb2_grpc, self._health_pb2, health_pb2_grpc) = load_stubs(
            stubs_dir
        )
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=private_key,
                certificate_chain=certificate_chain,
            )
            options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            if private_key is not None or certificate_chain is not None:
                raise ValueError("a client certificate needs root_certificates (TLS)")
            self._channel = grpc.insecure_channel(address)
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self._timeout = timeout
        self._clip = clip_pb2_grpc.ClipStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _call(self, method, request):
        return method(request, timeout=self._timeout, metadata=self._metadata)

    def _image_inputs(self, images):
        """str / os.PathLike: a file read here (or a URI, see URI_PREFIXES);
        bytes: the encoded image itself."""
        if isinstance(images, (str, bytes, os.PathLike)):
            images = [images]  # One image, not a sequence of characters.
        inputs = []
        for image in images:
            if isinstance(image, (bytes, bytearray, memoryview)):
                inputs.append(self._clip_pb2.ImageInput(data=bytes(image)))
            elif isinstance(image, str) and image.startswith(URI_PREFIXES):
                inputs.append(self._clip_pb2.ImageInput(uri=image))
            else:
                with open(image, "rb") as f:
                    inputs.append(self._clip_pb2.ImageInput(data=f.read()))
        return inputs

    @staticmethod
    def _to_array(response):
        """EncodeResponse -> float32 [N, dim]; proto floats are float32, so the
        values are the server's bit for bit."""
        features = np.array([e.values for e in response.embeddings], dtype=np.float32)
        return features.reshape(len(response.embeddings), response.dim)

    def encode_images(self, paths_or_bytes, model="", normalize=False):
        """Features of the images, float32 [N, D], rows in input order. `model`
        empty: the server's default model."""
        request = self._clip_pb2.EncodeImageRequest(
            model=model, images=self._image_inputs(paths_or_bytes), normalize=normalize
        )
        return self._to_array(self._call(self._clip.EncodeImage, request))

    def encode_texts(self, texts, model="", normalize=False):
        """Features of the texts, float32 [N, D], rows in input order."""
        if isinstance(texts, str):
            texts = [texts]
        request = self._clip_pb2.EncodeTextRequest(
            model=model, texts=list(texts), normalize=normalize
        )
        return self._to_array(self._call(self._clip.EncodeText, request))

    def classify(self, images, labels, templates=None, top_k=0, model=""):
        """Zero-shot classification: per image a list of
        {"label", "probability", "index"}, best first. `templates` ("a photo of
        a {}.") default to the server's set; top_k 0 returns every label."""
        request = self._clip_pb2.ClassifyRequest(
            model=model,
            images=self._image_inputs(images),
            labels=list(labels),
            templates=list(templates or []),
            top_k=top_k,
        )
        response = self._call(self._clip.Classify, request)
        return [
            [
                {"label": s.label, "probability": s.probability, "index": s.index}
                for s in classification.labels
            ]
            for classification in response.classifications
        ]

    def list_models(self):
        """The served models: a list of dicts with ModelInfo's fields."""
        response = self._call(self._clip.ListModels, self._clip_pb2.ListModelsRequest())
        return [
            json_format.MessageToDict(
                info, preserving_proto_field_name=True, including_default_value_fields=True
            )
            for info in response.models
        ]

    def health(self, service=""):
        """grpc.health.v1 status of `service` (a model name; "" for the whole
        server): "SERVING", "NOT_SERVING", ... The server answers NOT_FOUND
        (an RpcError) for an unknown service."""
        request = self._health_pb2.HealthCheckRequest(service=service)
        response = self._call(self._health.Check, request)
        return self._health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def _write_features(output, name, features):
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, name)
    np.save(path, features.astype(np.float32, copy=False))
    print(f"wrote {path} [{features.shape[0]}, {features.shape[1]}]")


def _print_json(value):
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Client of `oclip serve` (gRPC oclip.v1.Clip).",
        epilog="Values that start with '-' can be given as --text=VALUE.",
    )
    parser.add_argument("--address", required=True, help="HOST:PORT of the server")
    parser.add_argument("--stubs", help=f"directory of the generated stubs (default ${STUBS_ENV})")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="bearer token")
    token.add_argument("--token-env", help="environment variable holding the bearer token")
    parser.add_argument("--tls-ca", help="PEM file of the server's CA: connect with TLS")
    parser.add_argument("--tls-cert", help="PEM client certificate chain (mTLS)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--tls-server-name", help="name to check in the server's certificate")
    parser.add_argument("--timeout", type=float, default=60.0, help="call deadline in seconds")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_encode_flags(command):
        command.add_argument("--model", default="", help="model name (default: the server's)")
        command.add_argument("--normalize", action="store_true", help="L2-normalize the features")
        command.add_argument("--output", help="directory for the .npy file (default: print JSON)")

    encode_image = commands.add_parser("encode-image", help="image features")
    encode_image.add_argument("--image", action="extend", nargs="+", required=True,
                              metavar="FILE", help="image file or allowed URI (repeatable)")
    add_encode_flags(encode_image)

    encode_text = commands.add_parser("encode-text", help="text features")
    encode_text.add_argument("--text", action="extend", nargs="+", required=True,
                             help="text (repeatable)")
    add_encode_flags(encode_text)

    classify = commands.add_parser("classify", help="zero-shot classification (JSON)")
    classify.add_argument("--image", action="extend", nargs="+", required=True, metavar="FILE")
    classify.add_argument("--label", action="extend", nargs="+", required=True)
    classify.add_argument("--template", action="extend", nargs="+", default=[],
                          help='prompt template with "{}" (default: the server\'s)')
    classify.add_argument("--top-k", type=int, default=0, help="labels per image (0: all)")
    classify.add_argument("--model", default="")

    commands.add_parser("models", help="served models (JSON)")

    health = commands.add_parser("health", help="grpc.health.v1 status")
    health.add_argument("--service", default="", help='a model name; "" for the server')
    return parser.parse_args(argv)


def _read_file(path):
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def main(argv=None):
    args = _parse_args(argv)
    token = args.token
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            print(f"oclip_client: ${args.token_env} is empty or unset", file=sys.stderr)
            return 2
    try:
        client = OclipClient(
            args.address,
            token=token,
            root_certificates=_read_file(args.tls_ca),
            private_key=_read_file(args.tls_key),
            certificate_chain=_read_file(args.tls_cert),
            server_name=args.tls_server_name,
            timeout=args.timeout,
            stubs_dir=args.stubs,
        )
    except (ImportError, OSError, ValueError) as error:
        print(f"oclip_client: {error}", file=sys.stderr)
        return 2

    try:
        with client:
            if args.command in ("encode-image", "encode-text"):
                if args.command == "encode-image":
                    features = client.encode_images(args.image, args.model, args.normalize)
                    name = "image_features.npy"
                else:
                    features = client.encode_texts(args.text, args.model, args.normalize)
                    name = "text_features.npy"
                if args.output:
                    _write_features(args.output, name, features)
                else:  # One row per line.
                    rows = (json.dumps(row) for row in features.tolist())
                    print("[\n" + ",\n".join(rows) + "\n]")
            elif args.command == "classify":
                _print_json(client.classify(args.image, args.label, args.template, args.top_k,
                                            args.model))
            elif args.command == "models":
                _print_json(client.list_models())
            elif args.command == "health":
                status = client.health(args.service)
                print(status)
                return 0 if status == "SERVING" else 1
    except grpc.RpcError as error:
        print(f"oclip_client: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"oclip_client: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
