from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from neuron_explainer import InvalidInputError  # noqa: E402
from neuron_explainer.models.loading import GPT2_HUB_IDS, hub_id, load_model  # noqa: E402


def test_gpt2_names_map_to_the_hub_repositories() -> None:
    assert hub_id("gpt2") == "openai-community/gpt2"
    assert hub_id("gpt2-xl") == "openai-community/gpt2-xl"
    assert set(GPT2_HUB_IDS) == {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}
    assert hub_id("EleutherAI/pythia-70m") == "EleutherAI/pythia-70m"


def test_loading_by_hub_name_offline_says_what_was_tried() -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"'gpt2' from Hugging Face hub repository "
        r"'openai-community/gpt2'.*pass a local directory",
    ):
        load_model("gpt2", device="cpu")


def test_loads_a_local_directory_in_the_requested_dtype(tmp_path: Path) -> None:
    from gpt2_tokenizer import write_gpt2_tokenizer

    write_gpt2_tokenizer(tmp_path)  # first: its config.json is replaced by the model's
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    loaded = load_model(tmp_path, dtype="float64", device="cpu")
    assert loaded.model.dtype == torch.float64 and not loaded.model.training
    assert loaded.tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert (loaded.name, loaded.dtype, loaded.device) == (str(tmp_path), "float64", "cpu")


def test_model_objects_need_a_tokenizer_and_dtypes_are_checked() -> None:
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=16)
    )
    with pytest.raises(InvalidInputError, match="needs its tokenizer"):
        load_model(model)
    with pytest.raises(InvalidInputError, match="unknown dtype 'float7'"):
        load_model(model, tokenizer=object(), dtype="float7")
    loaded = load_model(model, tokenizer="tok", dtype="bfloat16", device="cpu")
    assert loaded.model.dtype == torch.bfloat16 and loaded.tokenizer == "tok"


# --- GGUF headers -------------------------------------------------------------------------------


def _write_gguf(path: Path, arch: str, **values: int) -> Path:
    import gguf  # a dependency of the package

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.name", "tiny")
    writer.add_token_list(["a", "b", "c"])
    if "block_count" in values:
        writer.add_block_count(values["block_count"])
    if "feed_forward_length" in values:
        writer.add_feed_forward_length(values["feed_forward_length"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


def test_gguf_metadata_reads_scalars_and_strings_but_not_arrays(tmp_path: Path) -> None:
    from neuron_explainer.models.gguf import gguf_metadata, gguf_shape

    path = _write_gguf(tmp_path / "m.gguf", "qwen2", block_count=24, feed_forward_length=4864)
    meta = gguf_metadata(path)
    assert meta["general.architecture"] == "qwen2"
    assert meta["general.name"] == "tiny"
    assert meta["qwen2.block_count"] == 24 and type(meta["qwen2.block_count"]) is int
    assert "tokenizer.ggml.tokens" not in meta
    assert not any(key.startswith("GGUF.") for key in meta)
    assert gguf_shape(path) == ("qwen2", 24, 4864)


def test_gguf_shape_stops_reading_at_the_fields_it_needs(tmp_path: Path) -> None:
    """The vocabulary that follows the shape is never parsed (seconds for a real one): a file
    cut off inside it still gives its shape, while reading every field fails."""
    import gguf

    from neuron_explainer.models.gguf import gguf_metadata, gguf_shape

    path = tmp_path / "cut.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(3)
    writer.add_feed_forward_length(96)
    writer.add_token_list([f"token{i}" for i in range(5000)])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut inside the token list
    assert gguf_shape(path) == ("llama", 3, 96)
    with pytest.raises(InvalidInputError, match="cannot read the GGUF header"):
        gguf_metadata(path)


def test_gguf_errors_name_the_file_and_say_why(tmp_path: Path) -> None:
    from neuron_explainer.models.gguf import gguf_shape
    from neuron_explainer.models.loading import model_shape

    bert = _write_gguf(tmp_path / "bert.gguf", "bert", block_count=2, feed_forward_length=8)
    with pytest.raises(InvalidInputError, match=r"'.*bert\.gguf': GGUF architecture 'bert' is not"):
        model_shape(bert)
    partial = _write_gguf(tmp_path / "partial.gguf", "llama", block_count=2)
    with pytest.raises(InvalidInputError, match="'my-model': GGUF architecture 'llama' is not"):
        gguf_shape(partial, name="my-model")
    (tmp_path / "text.gguf").write_text("not a gguf file at all", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"cannot read the GGUF header of '.*text\.gguf'"):
        model_shape(tmp_path / "text.gguf")
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="cannot read the GGUF header"):
        model_shape(tmp_path / "empty.gguf")
    (tmp_path / "cut.gguf").write_bytes(bert.read_bytes()[:40])
    with pytest.raises(InvalidInputError, match="cannot read the GGUF header"):
        model_shape(tmp_path / "cut.gguf")


# --- hub names: fail fast without the hub, and suggest close names ----------------------------

HUB_SCRIPT = """
import json, sys
from neuron_explainer.errors import InvalidInputError
from neuron_explainer.models.loading import model_shape
found = []
for name in sys.argv[1:]:
    try:
        found.append(["shape", list(model_shape(name))])
    except InvalidInputError as error:
        found.append(["error", str(error)])
print(json.dumps(found))
"""


class StandInHub:
    """A stand-in for the hub on 127.0.0.1 that answers every request with ``status`` (and
    ``headers``) and keeps the paths asked for in `paths` (but ``/api/agent-harnesses``,
    which huggingface_hub asks for on its own once a day, when it first builds headers)."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        import http.server
        import threading

        self.paths: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/api/agent-harnesses":
                    hub.paths.append(self.path)
                body = b'{"error": "stand-in"}'
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def model_shapes(names: list[str], hf_home: Path, **env: str) -> list[list[Any]]:
    """``model_shape`` of each name in a fresh Python (huggingface_hub reads ``HF_ENDPOINT``,
    ``HF_HUB_OFFLINE`` and ``HF_HOME`` at import), with ``env`` and no offline setting of the
    test session: ``["shape", [...]]`` or ``["error", message]`` for each."""
    import json
    import os
    import subprocess
    import sys

    unset = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_HUB_CACHE", "HF_TOKEN")
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    environ.update(HF_HOME=str(hf_home), HF_HUB_DISABLE_IMPLICIT_TOKEN="1", **env)
    run = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, *names],
        capture_output=True, text=True, env=environ, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    found: list[list[Any]] = json.loads(run.stdout.splitlines()[-1])
    return found


def cache_repo(hf_home: Path, repo: str, config: dict[str, Any]) -> None:
    """Put ``repo`` with a ``config.json`` into the hub cache under ``hf_home``, laid out as
    huggingface_hub lays it out (a blob, a snapshot linking to it, refs/main)."""
    import json

    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / "e7a9c1").write_text(json.dumps(config), encoding="utf-8")
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / "config.json").symlink_to(Path("../../blobs/e7a9c1"))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit, encoding="utf-8")


NOT_FOUND_ANYWHERE = (
    "could not load model 'gemma-3-270': it is not a local file or folder, a known model or a "
    "model in the local Hugging Face cache, and "
)


def test_a_mistyped_name_with_the_hub_offline_fails_at_once_with_a_suggestion(
    tmp_path: Path,
) -> None:
    hub = StandInHub(200)
    try:
        found = model_shapes(
            ["gemma-3-270", "gpt2", "openai-comunity/gpt2-larg", "qqqqqqqq"],
            tmp_path / "hf",
            HF_HUB_OFFLINE="1",
            HF_ENDPOINT=hub.url,
        )
    finally:
        hub.close()
    assert hub.paths == []  # not one request
    (kind, typo), (_, gpt2), (_, hub_typo), (_, nothing) = found
    assert kind == "error"
    assert typo == (
        NOT_FOUND_ANYWHERE + "the hub cannot be reached (HF_HUB_OFFLINE is set). Did you mean "
        "'gemma-3-270m'? Without hub access, pass a local directory (save_pretrained) or a "
        ".gguf file"
    )
    assert gpt2.startswith(
        "could not load model 'gpt2' from Hugging Face hub repository 'openai-community/gpt2': "
        "it is not in the local Hugging Face cache and the hub cannot be reached"
    )
    assert "Did you mean" not in gpt2
    assert "Did you mean 'gpt2-large', 'gpt2-xl' or 'gpt2'?" in hub_typo
    assert "Known models: gpt2, gpt2-medium, gpt2-large, gpt2-xl, gemma-3-270m." in nothing


def test_an_unreachable_hub_costs_one_request_and_no_retries(tmp_path: Path) -> None:
    """A hub that answers 503 (huggingface_hub retries it 5 times over ~25 s), or none."""
    hub = StandInHub(503)
    try:
        found = model_shapes(["gemma-3-270", "gpt2"], tmp_path / "hf", HF_ENDPOINT=hub.url)
    finally:
        hub.close()
    assert hub.paths == ["/api/models/gemma-3-270", "/api/models/openai-community/gpt2"]
    assert found[0] == [
        "error",
        NOT_FOUND_ANYWHERE + f"the hub cannot be reached at {hub.url} (it answered HTTP 503). "
        "Did you mean 'gemma-3-270m'? Without hub access, pass a local directory "
        "(save_pretrained) or a .gguf file",
    ]
    assert found[1][1].startswith("could not load model 'gpt2' from Hugging Face hub repository")
    import socket

    with socket.socket() as probe:  # a port nobody listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    ((kind, message),) = model_shapes(["gemma-3-270"], tmp_path / "hf", HF_ENDPOINT=closed)
    assert kind == "error" and message.startswith(
        NOT_FOUND_ANYWHERE + f"the hub cannot be reached at {closed} (ConnectError: "
    )
    assert "Did you mean 'gemma-3-270m'?" in message


def test_a_name_the_hub_does_not_have_fails_after_one_request(tmp_path: Path) -> None:
    hub = StandInHub(404, {"X-Error-Code": "RepoNotFound"})
    try:
        ((kind, message),) = model_shapes(["gemma-3-270"], tmp_path / "hf", HF_ENDPOINT=hub.url)
    finally:
        hub.close()
    assert hub.paths == ["/api/models/gemma-3-270"]
    assert kind == "error"
    assert message.startswith(
        NOT_FOUND_ANYWHERE + f"the hub at {hub.url} has no repository 'gemma-3-270' (or it is "
        "private and you are not logged in). Did you mean 'gemma-3-270m'?"
    )


def test_a_cached_repository_loads_without_the_hub_and_is_suggested(tmp_path: Path) -> None:
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2).to_dict()
    cache_repo(tmp_path / "hf", "acme/tiny-gpt2", config)
    offline = model_shapes(
        ["acme/tiny-gpt2", "acme/tiny-gtp2", "Acme/Tiny-GPT"], tmp_path / "hf", HF_HUB_OFFLINE="1"
    )
    assert offline[0] == ["shape", ["gpt2", 2, 128]]
    assert "Did you mean 'acme/tiny-gpt2'?" in offline[1][1]
    assert "Did you mean 'acme/tiny-gpt2'?" in offline[2][1]
    hub = StandInHub(503)
    try:
        found = model_shapes(["acme/tiny-gpt2"], tmp_path / "hf", HF_ENDPOINT=hub.url)
    finally:
        hub.close()
    assert found == [["shape", ["gpt2", 2, 128]]]  # from the cache, after one request
    assert hub.paths == ["/api/models/acme/tiny-gpt2"]


def test_a_path_that_does_not_exist_never_reaches_the_hub(tmp_path: Path) -> None:
    hub = StandInHub(200)
    try:
        found = model_shapes(
            [str(tmp_path / "nowhere.gguf"), "./gemma-3-270m.gguf", "a/b/c"],
            tmp_path / "hf",
            HF_ENDPOINT=hub.url,
        )
    finally:
        hub.close()
    assert hub.paths == []
    for kind, message in found:
        assert kind == "error" and message.endswith(
            "no such file or folder (a model is a local folder written by save_pretrained, a "
            ".gguf file, or a Hugging Face hub id)"
        )
