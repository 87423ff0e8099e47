"""``sliminfer run CONFIG [key=value ...] --prompt TEXT | --prompt-file PATH | --chat-file PATH``: generate once.

``--chat-file`` holds chat messages as JSON (``[{"role": "user", "content": "..."}]``), rendered with the
tokenizer's chat template; they are checked before the model loads.

The answer streams to stdout token by token as it is decoded (a transformers ``TextStreamer``);
``--no-stream`` prints it once complete. Either way one statistics line follows. The printed text is
the same, except that a stop string which ends the generation has already been streamed, while
``--no-stream`` prints the text cut before it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sliminfer.cli.format import layer_runs, mib
from sliminfer.core.config import parse_overrides
from sliminfer.core.errors import ConfigError, InputError
from sliminfer.core.pipeline import SlimPipeline, load_config
from sliminfer.core.preflight import check_static_options
from sliminfer.core.prompts import check_messages


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="generate from a prompt with a config")
    parser.add_argument("config", help="YAML path or preset name")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. generation.max_new_tokens=32")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action=_Once, help="prompt text")
    src.add_argument("--prompt-file", action=_Once, help="UTF-8 file holding the prompt text ('-': standard input)")
    src.add_argument("--chat-file", action=_Once,
                     help="UTF-8 JSON file holding chat messages, a list of {\"role\": ..., \"content\": ...} "
                          "objects ('-': standard input)")
    parser.add_argument("--no-chat", action="store_true", help="do not wrap the prompt in the chat template")
    parser.add_argument("--fast", action="store_true",
                        help="the static decode (decode.mode=static): greedy, static buffers replayed as a CUDA graph "
                             "on GPUs, no stop strings")
    parser.add_argument("--no-stream", action="store_true",
                        help="print the answer once it is complete instead of token by token")
    parser.set_defaults(func=_run)


class _Once(argparse.Action):
    """A value option that may be given once: argparse would keep the last of two, silently."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string}: given twice ({getattr(namespace, self.dest)!r} and {values!r}); "
                         "give it once")
        setattr(namespace, self.dest, values)


def read_prompt_file(name: str, flag: str = "--prompt-file") -> str:
    """The text of ``--prompt-file`` (``-`` reads standard input), refused unless it is UTF-8."""
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise InputError(f"{flag}: got {name!r}; cannot be read ({exc.strerror or exc}); give a readable "
                         "text file, or - for standard input") from None
    try:
        return data.decode("utf-8-sig")  # a leading byte-order mark (Windows editors) is not part of the text
    except UnicodeDecodeError as exc:
        raise InputError(f"{flag}: got {name!r}; not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         "save it as UTF-8") from None


def read_chat_file(name: str) -> list[Any]:
    """The chat messages of ``--chat-file``: JSON, a list of message objects, each checked."""
    text = read_prompt_file(name, "--chat-file")
    try:
        messages = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--chat-file: got {name!r}; not valid JSON ({exc.msg} at line {exc.lineno}, column "
                         f"{exc.colno}); write a list of {{\"role\": ..., \"content\": ...}} objects") from None
    if not isinstance(messages, list):
        raise InputError(f"--chat-file: got {name!r}; its JSON is a {type(messages).__name__}, not a list of "
                         "messages")
    try:
        check_messages(messages)
    except InputError as exc:  # the same check as the Python API's, named after the file
        raise InputError(f"--chat-file {name}: {str(exc).removeprefix('prompt: ')}") from None
    return messages


def _read_prompt(args: argparse.Namespace) -> str | list[Any]:
    """The prompt of the command line, checked before the model loads."""
    if args.chat_file is not None:
        if args.no_chat:
            raise InputError("--no-chat: chat messages (--chat-file) are always rendered with the chat template; "
                             "drop --no-chat, or give --prompt text")
        return read_chat_file(args.chat_file)
    prompt = args.prompt if args.prompt is not None else read_prompt_file(args.prompt_file)
    if not prompt:
        source = "--prompt" if args.prompt is not None else f"--prompt-file {args.prompt_file}"
        raise InputError(f"{source}: the prompt is empty; give some text")
    return prompt


def _run(args: argparse.Namespace) -> int:
    prompt = _read_prompt(args)
    if args.fast and "decode.mode" in (given := parse_overrides(args.overrides)):
        raise ConfigError("--fast", True, f"chooses the static decode (decode.mode=static) and "
                          f"decode.mode={given['decode.mode']} is given too; drop one of them")
    overrides = [*args.overrides, "decode.mode=static"] if args.fast else args.overrides
    config = load_config(args.config, overrides)
    if config.decode.mode == "static":
        check_static_options(config.generation)
    pipe = SlimPipeline.from_config(config)
    chat = False if args.no_chat else None
    if args.no_stream:
        out = pipe.generate(prompt, chat_template=chat)
        print(out.text)
    else:  # prints each piece as it is decoded, and a newline at the end, as print(out.text) would
        from transformers import TextStreamer

        out = pipe.generate(prompt, chat_template=chat,
                            streamer=TextStreamer(pipe.tokenizer, skip_prompt=True, skip_special_tokens=True))
    pre = out.prefill
    print(
        f"\n[{out.prompt_tokens} prompt tokens | TTFT {out.ttft_s:.3f} s | {out.decode_s_per_token * 1e3:.1f} ms/token"
        f" | KV {mib(pre.kv_bytes)} ({pre.kv_saved_fraction:.1%} saved) | tokens per layer {layer_runs(pre.tokens_per_layer)}]"
    )
    return 0
