#!/usr/bin/env python3
"""Writes the seed corpus of server_request_fuzz: request bodies, some followed by a model reply.

Run: python3 fuzz/corpus/make_server_request_corpus.py. A seed is one route byte (even: chat
completions, odd: completions; the upper bits seed the reply's piece sizes), the JSON body, and
optionally a NUL byte and the text the model writes.
"""
import json
import pathlib

DSML = "｜DSML｜"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
]
USER = [{"role": "user", "content": "Weather in Paris?"}]


def call(name, params):
    body = "".join(
        f'<{DSML}parameter name="{k}" string="{str(isinstance(v, str)).lower()}">'
        f"{v if isinstance(v, str) else json.dumps(v)}</{DSML}parameter>\n"
        for k, v in params.items()
    )
    return f'<{DSML}invoke name="{name}">\n{body}</{DSML}invoke>\n'


def calls(*invokes):
    return f"\n\n<{DSML}function_calls>\n" + "".join(invokes) + f"</{DSML}function_calls>"


def seed(body, reply=None, route=0):
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    out = bytes([route]) + raw
    if reply is not None:
        out += b"\0" + reply.encode()
    return out


SEEDS = {
    "chat_plain": seed({"messages": USER, "max_tokens": 8}, "It is sunny."),
    "chat_stream_usage": seed(
        {"messages": USER, "stream": True, "stream_options": {"include_usage": True}}, "Hi!", 6
    ),
    "chat_thinking_tool": seed(
        {"messages": USER, "tools": TOOLS, "chat_template_kwargs": {"thinking": True}},
        "Let me check.</think>" + calls(call("get_weather", {"city": "Paris", "days": 2})),
        2,
    ),
    "chat_parallel_calls": seed(
        {"messages": USER, "tools": TOOLS, "parallel_tool_calls": True},
        calls(call("get_weather", {"city": "Paris"}), call("now", {})),
        4,
    ),
    "chat_required": seed(
        {"messages": USER, "tools": TOOLS, "tool_choice": "required"},
        'get_weather">\n' + f'<{DSML}parameter name="city" string="true">Rome</{DSML}parameter>\n'
        + f"</{DSML}invoke>\n</{DSML}function_calls>",
    ),
    "chat_named": seed(
        {
            "messages": USER,
            "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "now"}},
        },
        f"</{DSML}invoke>\n</{DSML}function_calls>",
    ),
    "chat_malformed_call": seed(
        {"messages": USER, "tools": TOOLS}, calls(f'<{DSML}invoke name="get_weather">\n<{DSML}par')
    ),
    "chat_none_choice": seed(
        {"messages": USER, "tools": TOOLS, "tool_choice": "none"}, calls(call("now", {}))
    ),
    "chat_tool_loop": seed(
        {
            "messages": USER
            + [
                {
                    "role": "assistant",
                    "reasoning_content": "need weather",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
            ],
            "tools": TOOLS,
            "reasoning_effort": "high",
        },
        "It is sunny.</think>Sunny and 21 C.",
    ),
    "chat_json_format": seed(
        {"messages": USER, "response_format": {"type": "json_object"}}, '{"a": [1, 2]}'
    ),
    "chat_sampling": seed(
        {
            "messages": USER,
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": 40,
            "min_p": 0.05,
            "seed": 7,
            "stop": ["\n\n", "END"],
            "max_completion_tokens": 16,
        },
        "a\n\nb",
    ),
    "chat_bad_type": seed({"messages": "hi"}),
    "chat_unsupported_n": seed({"messages": USER, "n": 2}),
    "chat_invalid_utf8": seed(b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}'),
    "chat_control_bytes": seed({"messages": [{"role": "us\u001ber\u0007", "content": "x"}]}),
    "chat_deep_nesting": seed(b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    "chat_wide_parameters": seed(
        {
            "messages": USER,
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "wide",
                        "parameters": {
                            "type": "object",
                            "properties": {f"p{i}": {"type": "number"} for i in range(2000)},
                        },
                    },
                }
            ],
        }
    ),
    "chat_long_reply": seed({"messages": USER}, "word " * 4000, 8),
    "chat_trailing_garbage": seed(b'{"messages": []} x'),
    "chat_duplicate_key": seed(b'{"messages": [], "messages": []}'),
    "completion_plain": seed({"prompt": "Once upon a time", "max_tokens": 4}, " there", 1),
    "completion_stream": seed(
        {"prompt": "1, 2, 3", "stream": True, "stop": ","}, ", 4, 5", 3
    ),
    "completion_prompt_array": seed({"prompt": ["a", "b"]}, None, 1),
    "completion_huge_number": seed(b'{"prompt": "x", "max_tokens": 1e400}', None, 1),
}

if __name__ == "__main__":
    out = pathlib.Path(__file__).parent / "server_request_fuzz"
    out.mkdir(exist_ok=True)
    for name, data in SEEDS.items():
        (out / name).write_bytes(data)
    print(f"wrote {len(SEEDS)} seeds to {out}")
