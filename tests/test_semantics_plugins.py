"""Captioners and residual extractors with real (tiny, random) transformers models saved to disk,
and the OpenAI-compatible client against a real HTTP server on 127.0.0.1."""

import base64
import io
import json
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from resulic.config import EndpointConfig, ResidualConfig, SemanticsConfig
from resulic.errors import ConfigError, ModelLoadError
from resulic.models.tokenizer import byte_level_tokenizer
from resulic.semantics.captioners import (
    CaptionCache, CaptionsFile, EndpointCaptioner, TransformersCaptioner, build_captioner, content_hash,
)
from resulic.semantics.endpoint import ChatEndpoint
from resulic.semantics.pipeline import Semantics
from resulic.semantics.residual import LLMResidual, LocalChatModel, build_residual, clean_answer


class ChatServer:
    """A tiny OpenAI-compatible server: records requests, answers with ``self.answer``."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.answer = "a red barn"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if body.get("model") == "missing":
                    self.send_response(404)
                    self.end_headers()
                    self.wfile.write(b'{"error": "no such model"}')
                    return
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": server.answer}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = ChatServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_captioner_folder(tmp_path_factory):
    from transformers import GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig, ViTImageProcessor

    folder = tmp_path_factory.mktemp("captioner")
    tok = byte_level_tokenizer()
    enc = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    dec = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2, add_cross_attention=True,
                     is_decoder=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = tok.bos_token_id, tok.pad_token_id, tok.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        VisionEncoderDecoderModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lm_folder(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("lm")
    tok = byte_level_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=32, n_layer=1, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        GPT2LMHeadModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# -- captioners ----------------------------------------------------------------------------------
def test_local_transformers_captioner_loads_from_a_folder_and_is_deterministic(tiny_captioner_folder, picture):
    captioner = build_captioner(EndpointConfig(kind="transformers", source=str(tiny_captioner_folder), max_tokens=6))
    assert isinstance(captioner, TransformersCaptioner)
    first = captioner.caption([picture, picture.transpose(Image.FLIP_LEFT_RIGHT)])
    assert len(first) == 2 and all(isinstance(c, str) and c for c in first)
    assert captioner.caption([picture]) == first[:1]


def test_a_missing_captioner_model_names_the_key(tmp_path):
    with pytest.raises(ModelLoadError, match="semantics.captioner.source"):
        TransformersCaptioner(str(tmp_path / "nothing-here"))


def test_endpoint_captioner_sends_an_8bit_png_and_the_key(server, picture, monkeypatch):
    monkeypatch.setenv("RESULIC_TEST_KEY", "sk-test")
    config = EndpointConfig(kind="openai", source="vision-model", base_url=server.base_url, api_key_env="RESULIC_TEST_KEY")
    captioner = build_captioner(config)
    assert isinstance(captioner, EndpointCaptioner)
    assert captioner.caption([picture]) == ["a red barn"]
    request = server.requests[-1]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "vision-model" and request["body"]["max_tokens"] == 77
    parts = request["body"]["messages"][-1]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.mode == "RGB" and sent.size == picture.size
    assert np.array_equal(np.asarray(sent), np.asarray(picture))  # 0-255, not [0, 1] floats


def test_endpoint_errors_are_one_line_model_load_errors(server):
    with pytest.raises(ModelLoadError, match="HTTP 404"):
        ChatEndpoint(server.base_url, "missing").complete([{"role": "user", "content": "hi"}], 5)
    with pytest.raises(ModelLoadError, match="cannot reach"):
        ChatEndpoint("http://127.0.0.1:9/v1", "m", timeout_s=2).complete([{"role": "user", "content": "hi"}], 5)


def test_captions_file_and_content_hash_cache(tmp_path, picture, server):
    path = tmp_path / "captions.jsonl"
    path.write_text('{"image": "a.png", "caption": "a cat"}\n\n{"image": "b.png", "caption": "a dog"}\n')
    captions = CaptionsFile(path)
    assert captions.get("a.png") == "a cat" and captions.get("/some/folder/b.png") == "a dog" and captions.get("c.png") is None
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png"}\n')
    with pytest.raises(ConfigError, match="bad.jsonl:1"):
        CaptionsFile(tmp_path / "bad.jsonl")

    config = SemanticsConfig(
        captioner=EndpointConfig(kind="openai", source="vlm", base_url=server.base_url),
        captions_file=str(path), cache_dir=str(tmp_path / "cache"),
    )
    semantics = Semantics(config)
    assert semantics.caption_original(picture, "a.png") == "a cat"  # the file first
    assert semantics.caption_original(picture, "unknown.png") == "a red barn"
    assert len(server.requests) == 1
    png_copy = Image.open(io.BytesIO(_png(picture)))
    assert Semantics(config).caption_original(png_copy, None) == "a red barn"  # from the cache folder
    assert len(server.requests) == 1
    assert content_hash(png_copy) == content_hash(picture)
    assert CaptionCache().get("x", picture) is None


def _png(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_without_a_captioner_the_original_needs_a_caption_and_the_reconstruction_is_empty(picture):
    semantics = Semantics()
    with pytest.raises(ConfigError, match="--text"):
        semantics.caption_original(picture, "x.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert semantics.caption_reconstruction(picture) == ""
    assert any("no captioner" in str(w.message) for w in caught)


# -- residual extractors ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phrase_residual():
    return build_residual(ResidualConfig())


def test_offline_residual_drops_paraphrases_and_keeps_missing_objects(phrase_residual):
    r = phrase_residual.residual
    assert r("A young boy in a green shirt is eating a green apple.", "A little boy wearing a green shirt eats a green apple.") == ""
    assert r("Two dogs play in the snow next to a wooden fence.", "Two dogs are playing in the snow beside a wooden fence.") == ""
    assert r("A cat sleeps on a sofa.", "A cat sleeps on a sofa.") == ""
    kept = r("A man rides a bicycle on a city street with a red bus behind him.", "A man riding a bike on a street.")
    assert "bus" in kept and "bicycle" not in kept
    kept = r("A red barn surrounded by trees, reflected in a pond.", "Red house surrounded by trees.")
    assert "pond" in kept
    assert r("A woman holds an umbrella.", "") == "A woman holds an umbrella"  # nothing known about x'
    assert r("", "anything") == ""


def test_lexical_matcher_is_available_offline():
    r = build_residual(ResidualConfig(matcher="lexical", threshold=0.99)).residual
    assert r("A cat on a sofa, with a red ball.", "A cat on a sofa.") == "with a red ball"


def test_llm_residual_through_the_endpoint_uses_both_captions(server):
    extractor = build_residual(ResidualConfig(kind="openai", source="text-model", base_url=server.base_url))
    server.answer = '"A barn reflected in a pond."'
    assert extractor.residual("A red barn reflected in a pond.", "A red house.") == "A barn reflected in a pond."
    prompt = server.requests[-1]["body"]["messages"][-1]["content"]
    assert "A red barn reflected in a pond." in prompt and "A red house." in prompt
    server.answer = "None."
    assert extractor.residual("A cat.", "A cat.") == ""


def test_llm_residual_with_a_local_causal_lm(tiny_lm_folder):
    extractor = build_residual(ResidualConfig(kind="transformers", source=str(tiny_lm_folder), max_tokens=8))
    assert isinstance(extractor, LLMResidual) and isinstance(extractor.complete, LocalChatModel)
    out = extractor.residual("A red barn reflected in a pond.", "A red house.")
    assert isinstance(out, str) and len(out) <= 8 * 4
    assert extractor.residual("A red barn reflected in a pond.", "A red house.") == out  # greedy


def test_clean_answer():
    assert clean_answer("  'a dog'\nmore text") == "a dog"
    assert clean_answer("Nothing.") == "" and clean_answer("") == ""


def test_phrase_splitting():
    from resulic.semantics.residual import split_phrases

    assert split_phrases("A man with a hat, wearing a coat and holding a cup. A dog sleeps!") == [
        "A man", "with a hat", "wearing a coat", "holding a cup", "A dog sleeps"]
    assert split_phrases("A child is holding a red umbrella.") == ["A child is holding a red umbrella"]
    assert split_phrases(" . , the of ") == []
