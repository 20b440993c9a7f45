"""The commands that send a stack's first chat completion through its gateway: the stack output
`firstRequest`, which `make up` prints at the end. Pure, so tests run exactly what a user pastes."""

from __future__ import annotations

import ipaddress
import json
import shlex

from components.workers.files.healthcheck import QUESTION

# Written where a stack has no generated key: the commands then need one of its `gatewayApiKeys`.
KEY_PLACEHOLDER = "<a key from gatewayApiKeys>"
MAX_TOKENS = 32


def reachable_url(address: str, port: int) -> str:
    """The gateway as a client on its host reaches it: a wildcard bind answers on loopback, and an
    IPv6 address needs brackets in a URL (RFC 3986, section 3.2.2)."""
    if address in ("0.0.0.0", "::"):
        address = "127.0.0.1"
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    return f"http://{host}:{port}"


def _messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": QUESTION}]


def curl_command(url: str, model: str, key: str) -> str:
    """One chat completion with curl; `-w '\\n'` ends the JSON reply (vLLM sends none) with a newline."""
    body = json.dumps({"model": model, "messages": _messages(), "temperature": 0, "max_tokens": MAX_TOKENS})
    return (
        f"curl -sS -w '\\n' {shlex.quote(url + '/v1/chat/completions')} \\\n"
        f"  -H {shlex.quote('Authorization: Bearer ' + key)} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {shlex.quote(body)}"
    )


def python_command(url: str, model: str, key: str) -> str:
    """The same request with the official openai client, as a shell here-document for python3."""
    return "\n".join(
        [
            "python3 - <<'EOF'",
            "from openai import OpenAI",
            "",
            f"client = OpenAI(base_url={json.dumps(url + '/v1')}, api_key={json.dumps(key)})",
            "reply = client.chat.completions.create(",
            f"    model={json.dumps(model)},",
            f"    messages={json.dumps(_messages())},",
            "    temperature=0,",
            f"    max_tokens={MAX_TOKENS},",
            ")",
            "print(reply.choices[0].message.content)",
            "EOF",
        ]
    )


def render(url: str, model: str, key: str | None) -> str:
    """Both commands with what they need to know, as one shell script (comments and two commands)."""
    shown = key if key is not None else KEY_PLACEHOLDER
    lines = [f"# The gateway: {url} (model `{model}`, OpenAI API under /v1)."]
    if key is None:
        lines.append(f"# Replace {KEY_PLACEHOLDER} below with one of the stack's client keys.")
    lines += [
        "# A first chat completion with curl:",
        curl_command(url, model, shown),
        "# The same with the openai Python client (pip install openai):",
        python_command(url, model, shown),
    ]
    return "\n".join(lines) + "\n"
