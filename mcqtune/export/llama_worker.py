"""The child process of llama_child.py: one llama.cpp request from standard input (JSON), its answer as the last
line of standard output. A native crash ends this process only. Not a command for users."""

from __future__ import annotations

import json
import sys


def evaluate(request: dict) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=request["model"], n_ctx=request.get("n_ctx", 1024), logits_all=True,
                          verbose=False)
    try:
        if request["task"] == "tokenize":
            return {"ids": llm.tokenize(request["text"].encode("utf-8"), add_bos=False)}
        logits = []
        for prompt in request["prompts"]:
            llm.reset()
            llm.eval(prompt)
            last = llm.scores[llm.n_tokens - 1]
            logits.append([float(last[i]) for i in request["letters"]])
        return {"logits": logits}
    finally:
        llm.close()


def quantize(request: dict) -> dict:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, request["ftype"])
    status = llama_cpp.llama_model_quantize(request["source"].encode(), request["out"].encode(), params)
    if status != 0:
        raise SystemExit(f"llama_model_quantize returned status {status}")
    return {"status": status}


def main() -> int:
    request = json.loads(sys.stdin.read())
    if request["task"] == "system_info":
        import llama_cpp

        answer = {"system_info": llama_cpp.llama_print_system_info().decode()}
    elif request["task"] == "quantize":
        answer = quantize(request)
    else:
        answer = evaluate(request)
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
