"""A minimal client for OpenAI-compatible chat endpoints (``POST {base_url}/chat/completions``).

Plain ``urllib``: one JSON request, one JSON answer, greedy decoding (temperature 0). The API
key is read from the environment variable the config names, never from a file or the config.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from ..errors import ModelLoadError


class ChatEndpoint:
    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s

    def complete(self, messages: list[dict], max_tokens: int) -> str:
        body = json.dumps(
            {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        ).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:200]
            raise ModelLoadError(f"{self.url} ({self.model}): HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise ModelLoadError(f"{self.url} ({self.model}): cannot reach the endpoint ({exc})") from None
        except json.JSONDecodeError:
            raise ModelLoadError(f"{self.url} ({self.model}): the answer is not JSON") from None
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ModelLoadError(f"{self.url} ({self.model}): unexpected answer {str(answer)[:200]}") from None
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content or "").strip()
